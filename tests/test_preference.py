"""The preference task: hh turns, rendering through the chat template, prompt budgets, DPO and SimPO runs on
tiny-gpt2 (llmkit's documented template: it has none of its own), bad input, and a slow SmolLM2 + LoRA run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.models.resolve import resolve_model
from llmkit.recipe.loader import load_recipe
from llmkit.tasks.causal_lm import DEFAULT_CHAT_TEMPLATE, render_chat
from llmkit.tasks.preference import (
    DROPPED,
    TRUNCATED,
    WHOLE,
    PreferenceTask,
    encode_pair,
    hh_messages,
    weighted_means,
)
from tests.lookalikes import write_preference_pairs

# tiny-gpt2 has a 512-token vocabulary (34 tokens for a one-line prompt) and 256 positions
LLMKIT_TEMPLATE = [
    "model=tiny-gpt2",
    "data.use_chat_template=false",
    "data.max_length=128",
    "data.max_prompt_length=64",
]


@pytest.fixture(scope="module")
def tokenizer():
    from llmkit.models.resolve import load_tokenizer

    return load_tokenizer(resolve_model("tiny-gpt2"))


def task(options: dict | None = None, **data) -> PreferenceTask:
    settings = {**COMMON_DATA_DEFAULTS, **PreferenceTask.data_defaults, "use_chat_template": False, **data}
    return PreferenceTask(settings, options)


def pairs(count: int = 12) -> list[dict]:
    """Pairs a tiny model can learn: the chosen reply is the colour asked for, the rejected one is not."""
    colours = ["red", "blue", "green", "yellow"]
    rows = []
    for index in range(count):
        colour, other = colours[index % 4], colours[(index + 1) % 4]
        rows.append(
            {"prompt": f"Name the colour {colour}.", "chosen": f"{colour}", "rejected": f"{other} {other}"}
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# -- data shapes and encoding ---------------------------------------------------------------------------
def test_hh_turns_become_alternating_chat_messages() -> None:
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    assert hh_messages(text, "row") == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n\nHuman: a\n\nHuman: b\n\nAssistant:", "hh turns do not alternate: turn 2 is Human after Human"),
        ("\n\nAssistant: a\n\nHuman: b\n\nAssistant:", "turn 1 is Assistant after Assistant (the dialogue"),
        ("Hi\n\nHuman: a\n\nAssistant:", "text before the first"),
        ("\n\nHuman: a\n\nAssistant: b", "ends with an empty '\\n\\nAssistant:' turn"),
        ("just text", "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns"),
    ],
)
def test_hh_turns_that_do_not_alternate_are_refused(text: str, expected: str) -> None:
    with pytest.raises(LlmkitError, match=None) as error:
        hh_messages(text, "f.jsonl line 3: column 'prompt' (data.prompt)")
    assert expected in str(error.value) and str(error.value).startswith("f.jsonl line 3: column 'prompt'")


def test_a_pair_renders_as_generation_and_generate_chat_render_it(tokenizer) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    pair = encode_pair(tokenizer, DEFAULT_CHAT_TEMPLATE, messages, ["red", "blue"], task().data)
    prompt = render_chat(tokenizer, messages, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    assert (
        tokenizer.decode(pair["prompt_ids"])
        == prompt
        == "### Instruction:\nName a colour.\n\n### Response:\n"
    )
    # the reply is what the template renders after the prompt: the EOS that stops generation is learned
    assert tokenizer.decode(pair["chosen_ids"]) == "red" + tokenizer.eos_token + "\n\n"
    assert tokenizer.decode(pair["rejected_ids"]) == "blue" + tokenizer.eos_token + "\n\n"
    assert pair["truncation"] == WHOLE


def test_earlier_replies_in_a_prompt_stay_in_the_prompt(tokenizer) -> None:
    """Repro: every assistant turn of a multi-turn prompt was split off as a reply (an error on HH-RLHF)."""
    messages = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour."},
    ]
    pair = encode_pair(tokenizer, DEFAULT_CHAT_TEMPLATE, messages, ["red", "blue"], task().data)
    prompt = render_chat(tokenizer, messages, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    assert tokenizer.decode(pair["prompt_ids"]) == prompt and "Hello.<|endoftext|>" in prompt
    assert tokenizer.decode(pair["chosen_ids"]) == "red" + tokenizer.eos_token + "\n\n"


def test_long_prompts_keep_their_last_turns_and_long_replies_are_cut(tokenizer) -> None:
    turns = []
    for number in range(6):
        turns += [
            {"role": "user", "content": f"question {number} " + "word " * 10},
            {"role": "assistant", "content": f"answer {number}"},
        ]
    messages = [
        {"role": "system", "content": "Be brief."},
        *turns,
        {"role": "user", "content": "last question"},
    ]
    data = task(max_prompt_length=60, max_length=80).data
    pair = encode_pair(tokenizer, DEFAULT_CHAT_TEMPLATE, messages, ["ok", "no " * 40], data)
    assert pair["truncation"] == TRUNCATED and len(pair["prompt_ids"]) <= 60
    kept = pair["messages"]
    assert kept[0]["content"] == "Be brief." and kept[-1]["content"] == "last question"
    assert kept[1]["role"] == "user" and "question 0" not in tokenizer.decode(pair["prompt_ids"])
    assert len(pair["prompt_ids"]) + len(pair["rejected_ids"]) == 80  # cut to fit max_length
    assert tokenizer.decode(pair["chosen_ids"]).startswith("ok")

    alone = [{"role": "user", "content": "word " * 100}]
    assert encode_pair(tokenizer, DEFAULT_CHAT_TEMPLATE, alone, ["a", "b"], data)["truncation"] == DROPPED


def test_encoding_counts_truncated_and_dropped_pairs_and_drops_those_that_do_not_fit(tokenizer) -> None:
    from datasets import Dataset

    from llmkit.data.files import Split

    rows = [*pairs(3), {"prompt": "word " * 100, "chosen": "a", "rejected": "b"}]
    rows[1]["rejected"] = "no " * 60
    preference = task(max_prompt_length=40, max_length=60)
    encoded = preference.encode(Dataset.from_list(rows), tokenizer)
    assert preference.encoding_metrics("train", encoded) == {
        "train_truncated_pairs": 1,
        "train_dropped_pairs": 1,
    }
    split = Split("train", Dataset.from_list(rows), Path("pairs.jsonl"))
    kept = preference.prepare_evaluation("train", split, encoded)
    assert len(kept) == 3 and kept.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]


def test_transcripts_without_a_prompt_column_are_split_at_the_last_assistant_turn() -> None:
    from datasets import Dataset

    from llmkit.data.files import Split

    start = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help?\n\nAssistant:"
    rows = [{"chosen": start + " Sure.", "rejected": start + " No."}]
    split = Split("train", Dataset.from_list(rows), Path("hh.jsonl"))
    preference = task(format="hh")
    preference.check_data({"train": split})
    assert split.dataset[0] == {"prompt": start, "chosen": " Sure.", "rejected": " No."}


def hh_transcripts(count: int) -> list[dict]:
    """Hub-shaped HH pairs (whole transcripts, no prompt column) that differ in their last reply only."""
    rows = []
    for row in pairs(count):
        start = f"\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: {row['prompt']}\n\nAssistant:"
        rows.append({"chosen": f"{start} {row['chosen']}", "rejected": f"{start} {row['rejected']}"})
    return rows


def test_hh_pairs_that_differ_before_their_last_turn_are_skipped_and_counted(tmp_path: Path, run_cli) -> None:
    """Transcripts that part at an earlier assistant turn would make replies holding later Human turns
    (trained as one assistant message): such pairs are left out, counted by validate and at training start;
    a prompt column whose replies hold later turns is the same pair, split beforehand."""
    rows = hh_transcripts(10)
    early = "\n\nHuman: Hi\n\nAssistant:"
    rows[3] = {
        "chosen": f"{early} Hello\n\nHuman: Name the colour red.\n\nAssistant: red",
        "rejected": f"{early} Go away\n\nHuman: Why?\n\nAssistant: blue blue",
    }
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    presplit = {
        "prompt": f"{early}",
        "chosen": " Hello\n\nHuman: Thanks\n\nAssistant: red",
        "rejected": " No",
    }
    split_rows = [{**row, "prompt": f"\n\nHuman: {row['prompt']}\n\nAssistant:"} for row in pairs(4)]
    validation = write_jsonl(tmp_path / "validation.jsonl", [*split_rows, presplit])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: preference\ndata: {{train: {train}, validation: {validation}, format: hh}}\n")

    result = run_cli("validate", recipe, *LLMKIT_TEMPLATE)
    assert result.exit_code == 0, result.stderr
    assert (
        "2 pair(s) differ before their last assistant turn: skipped (1 in train, 1 in validation)"
        in result.stdout
    )
    assert f"{train}: skipped 1 of 10 pair(s) that differ before their last assistant turn" in result.stderr
    assert "the first at line 4" in result.stderr and "the first at line 5" in result.stderr

    out = tmp_path / "out"
    run = run_cli("finetune", recipe, *LLMKIT_TEMPLATE, f"output_dir={out}", "training.max_steps=1")
    assert run.exit_code == 0, run.stderr
    assert f"{train}: skipped 1 of 10 pair(s) that differ before their last assistant turn" in run.stderr
    assert json.loads((out / "manifest.json").read_text())["rows"]["train"] == 9


def test_hh_transcripts_that_all_differ_early_are_one_line(tmp_path: Path) -> None:
    from datasets import Dataset

    from llmkit.data.files import Split

    rows = [
        {
            "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
            "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: y\n\nAssistant: z",
        }
    ]
    split = Split("train", Dataset.from_list(rows), tmp_path / "hh.jsonl", key="data.train")
    with pytest.raises(
        LlmkitError, match=r"every pair's transcripts differ before their last assistant turn"
    ):
        task(format="hh").check_data({"train": split})


def test_batch_means_are_weighted_by_pairs() -> None:
    # two batches of 8 pairs all right, one of 4 all wrong: 16 of 20, not the mean of means 2/3
    means = weighted_means({"rewards/accuracies": [1.0, 1.0, 0.0]}, [8, 8, 4])
    assert means == {"rewards/accuracies": pytest.approx(0.8)}


def test_the_preference_section_is_checked_and_saved_with_the_recipe(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "pairs.jsonl", pairs())
    recipe = load_recipe(
        {
            "task": "preference",
            "data": {"train": str(train)},
            "preference": {"method": "simpo", "simpo": {"beta": 2.5}},
        }
    )
    saved = recipe.to_dict()["preference"]
    assert recipe.options["method"] == "simpo" and saved["simpo"] == {"beta": 2.5, "gamma": 0.5}
    assert saved["dpo"]["loss_type"] == "sigmoid"  # the other method's section keeps its defaults
    assert load_recipe(recipe.to_dict()).options == recipe.options  # recipe.yaml reruns the same training
    with pytest.raises(LlmkitError, match=r"unknown key 'preference.metod' \(did you mean 'method'"):
        load_recipe({"task": "preference", "data": {"train": str(train)}, "preference": {"metod": "dpo"}})
    with pytest.raises(
        LlmkitError, match=r"unknown key 'preference.dpo.los_type' \(did you mean 'loss_type'"
    ):
        load_recipe(
            {"task": "preference", "data": {"train": str(train)}, "preference": {"dpo": {"los_type": 1}}}
        )
    with pytest.raises(LlmkitError, match=r"unknown key 'preference'"):
        load_recipe({"task": "generation", "data": {"train": str(train)}, "preference": {}})


# -- runs -------------------------------------------------------------------------------------------------
def run_pairs(tmp_path: Path, *overrides: str, rows: int = 16):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(rows))
    validation = write_jsonl(tmp_path / "validation.jsonl", pairs(8))
    return llmkit.finetune(
        {"task": "preference", "output_dir": str(tmp_path / "out")},
        [
            *LLMKIT_TEMPLATE,
            f"data.train={train}",
            f"data.validation={validation}",
            "training.max_steps=6",
            "training.logging_steps=2",
            "training.learning_rate=5e-3",
            "training.per_device_eval_batch_size=3",  # batches of 3, 3, 2 pairs
            *overrides,
        ],
    )


def test_dpo_full_fine_tuning_reports_reward_metrics_before_and_after_and_generates(tmp_path: Path, run_cli):
    result = run_pairs(tmp_path, "preference.dpo.beta=0.5")
    metrics = result.metrics
    for name in ("reward_accuracy", "reward_margin", "logp_chosen", "logp_rejected", "loss"):
        assert f"eval_{name}" in metrics and f"eval_before_{name}" in metrics, name
    # the reference is the model before training: every reward is 0 before, so no pair is "right" yet
    assert metrics["eval_before_reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["eval_reward_margin"] > metrics["eval_before_reward_margin"]
    assert metrics["eval_reward_accuracy"] > 0.5
    assert metrics["train_truncated_pairs"] == 0 and metrics["train_dropped_pairs"] == 0
    history = json.loads((result.output_dir / "log_history.json").read_text())
    assert any("reward_accuracy" in entry for entry in history if "loss" in entry)  # training logs renamed
    assert not any("rewards/accuracies" in key for entry in history for key in entry)
    assert (result.output_dir / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE

    from transformers import pipeline

    generator = pipeline("text-generation", model=str(result.output_dir))
    messages = [{"role": "user", "content": "Name the colour red."}]
    assert isinstance(generator(messages, max_new_tokens=3)[0]["generated_text"], list)
    chat = run_cli("generate", "Name the colour red.", "--model", result.output_dir, "--chat", "--json")
    assert chat.exit_code == 0, chat.stderr
    assert json.loads(chat.stdout)["new_tokens"] >= 1


def test_dpo_with_lora_uses_the_base_as_reference_and_saves_one_adapter(tmp_path: Path) -> None:
    test = write_jsonl(tmp_path / "test.jsonl", pairs(5))
    result = run_pairs(
        tmp_path,
        "peft.r=4",
        "preference.dpo.precompute_reference=true",
        f"data.test={test}",
        "training.per_device_train_batch_size=2",
    )
    out = result.output_dir
    assert (out / "adapter_config.json").exists() and not (out / "ref").exists()  # no second adapter
    assert "test_reward_accuracy" in result.metrics and "eval_before_reward_accuracy" in result.metrics
    assert result.metrics["eval_before_reward_margin"] == pytest.approx(0.0, abs=1e-5)  # adapter off = ref
    assert result.metrics["eval_reward_margin"] > 0


def test_dpo_sft_weight_adds_the_chosen_replies_nll_to_the_first_step_loss(tmp_path: Path) -> None:
    """With LoRA the policy starts as its reference, so plain DPO's first loss is ln 2 exactly; the SFT term
    adds sft_weight x the chosen replies' mean token NLL on top (TRL's "sft" loss beside "sigmoid")."""
    from llmkit.tasks.preference import method_settings

    first_losses = {}
    for weight in ("0", "2"):
        (tmp_path / weight).mkdir()
        result = run_pairs(
            tmp_path / weight,
            "peft.r=4",
            f"preference.dpo.sft_weight={weight}",
            "training.logging_steps=1",
            "training.max_steps=1",
            "training.eval_on_start=false",
        )
        history = json.loads((result.output_dir / "log_history.json").read_text())
        first_losses[weight] = next(entry["loss"] for entry in history if "loss" in entry)
    assert first_losses["0"] == pytest.approx(math.log(2), abs=1e-3)
    added = first_losses["2"] - math.log(2)
    assert added > 2 * 1.0, first_losses  # 2 x an NLL per token well above 1 nat for a barely trained model
    settings = method_settings(
        {
            "method": "dpo",
            "dpo": {"loss_type": "ipo", "beta": 0.1, "precompute_reference": False, "sft_weight": 0.5},
        },
        64,
    )
    assert settings["loss_type"] == ["ipo", "sft"] and settings["loss_weights"] == [1.0, 0.5]


def test_the_dpo_recipe_switches_to_simpo_with_one_override() -> None:
    # `llmkit finetune recipes/dpo-hh.yaml preference.method=simpo` (docs/tasks/preference.md): the recipe's
    # DPO settings (loss_type, precompute_reference, beta 0.1) rest in their section; SimPO's own apply
    from llmkit.tasks import build_task
    from llmkit.tasks.preference import method_settings

    recipe = load_recipe("dpo-hh", ["preference.method=simpo"])
    simpo = build_task(recipe.task, recipe.data, recipe.options)
    settings = method_settings(simpo.options, 384)
    assert settings["loss_type"] == "simpo" and settings["beta"] == 2.0 and settings["simpo_gamma"] == 0.5
    assert "precompute_ref_log_probs" not in settings
    assert simpo.arguments_class().__name__ == "CPOConfig"
    dpo = load_recipe("dpo-hh")
    dpo_settings = method_settings(build_task(dpo.task, dpo.data, dpo.options).options, 384)
    assert dpo_settings["loss_type"] == ["sigmoid", "sft"] and dpo_settings["loss_weights"] == [1.0, 1.0]
    assert dpo_settings["precompute_ref_log_probs"] is True


def test_simpo_needs_no_reference_and_reports_the_same_metrics(tmp_path: Path) -> None:
    result = run_pairs(tmp_path, "preference.method=simpo")
    metrics = result.metrics
    for name in ("reward_accuracy", "reward_margin", "logp_chosen", "logp_rejected"):
        assert f"eval_{name}" in metrics and f"eval_before_{name}" in metrics, name
    assert metrics["eval_reward_margin"] > metrics["eval_before_reward_margin"]


def test_orpo_needs_no_reference_and_reports_the_same_metrics_and_its_own(tmp_path: Path) -> None:
    result = run_pairs(tmp_path, "preference.method=orpo", "preference.orpo.beta=0.5")
    metrics = result.metrics
    for name in (
        "reward_accuracy",
        "reward_margin",
        "logp_chosen",
        "logp_rejected",
        "nll_loss",
        "log_odds_ratio",
    ):
        assert f"eval_{name}" in metrics and f"eval_before_{name}" in metrics, name
    assert metrics["eval_nll_loss"] < metrics["eval_before_nll_loss"]  # ORPO also learns the chosen replies
    assert metrics["eval_log_odds_ratio"] > metrics["eval_before_log_odds_ratio"]


def unpaired_rows(count: int) -> list[dict]:
    """KTO's rows: each pair's chosen reply as a desirable completion, the next one's rejected as not."""
    rows = []
    for index, row in enumerate(pairs(count)):
        desirable = index % 2 == 0
        reply = row["chosen" if desirable else "rejected"]
        rows.append({"prompt": row["prompt"], "completion": reply, "label": desirable})
    return rows


def test_kto_unpairs_a_paired_file_into_desirable_and_undesirable_rows(tokenizer) -> None:
    from datasets import Dataset

    kto = task({"method": "kto"})
    encoded = kto.encode(Dataset.from_list(pairs(6)), tokenizer)
    assert encoded.column_names == ["prompt_ids", "completion_ids", "label", "truncation"]
    assert len(encoded) == 12 and sum(encoded["label"]) == 6
    columns = zip(encoded["prompt_ids"], encoded["completion_ids"], encoded["label"], strict=True)
    decoded = {(tokenizer.decode(p), tokenizer.decode(c), label) for p, c, label in columns}
    prompt = render_chat(
        tokenizer, [{"role": "user", "content": "Name the colour red."}], DEFAULT_CHAT_TEMPLATE, True
    )
    end = tokenizer.eos_token + "\n\n"
    assert (prompt, "red" + end, True) in decoded and (prompt, "blue blue" + end, False) in decoded
    assert encoded["label"][:6] != [True] * 6  # shuffled once: batches mix both kinds
    assert (
        kto.encode(Dataset.from_list(pairs(6)), tokenizer)["label"] == encoded["label"]
    )  # the same every time
    unpaired = kto.encode(Dataset.from_list(unpaired_rows(4)), tokenizer)
    assert unpaired["label"] == [True, False, True, False]  # an unpaired file keeps its order


def test_kto_from_a_paired_file_learns_against_a_frozen_reference(tmp_path: Path) -> None:
    result = run_pairs(tmp_path, "preference.method=kto", "training.per_device_train_batch_size=4")
    metrics = result.metrics
    for name in ("reward_margin", "reward_chosen", "reward_rejected", "logp_chosen", "logp_rejected", "kl"):
        assert f"eval_{name}" in metrics and f"eval_before_{name}" in metrics, name
    assert metrics["eval_before_reward_margin"] == pytest.approx(0.0, abs=1e-6)  # the policy is the reference
    assert metrics["eval_reward_margin"] > 0
    assert metrics["train_dropped_pairs"] == 0


def test_kto_on_unpaired_rows_with_lora_uses_the_base_as_reference(tmp_path: Path, run_cli) -> None:
    train = write_jsonl(tmp_path / "unpaired.jsonl", unpaired_rows(16))
    validation = write_jsonl(tmp_path / "validation.jsonl", unpaired_rows(8))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: preference\ndata: {{train: {train}, validation: {validation}}}\n")
    settings = [*LLMKIT_TEMPLATE, "preference.method=kto"]
    checked = run_cli("validate", recipe, *settings)
    assert checked.exit_code == 0, checked.stderr
    assert "stop token '<|endoftext|>' inside the loss: 16 of 16" in checked.stdout  # DPO's chat checks
    result = llmkit.finetune(
        str(recipe),
        [
            *settings,
            "peft.r=4",
            "training.max_steps=6",
            "training.learning_rate=5e-3",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    out = result.output_dir
    assert (out / "adapter_config.json").exists() and not (out / "ref").exists()  # no second adapter
    assert result.metrics["eval_before_reward_margin"] == pytest.approx(0.0, abs=1e-5)  # adapter off = ref
    assert result.metrics["eval_reward_margin"] > 0


# -- bad input ----------------------------------------------------------------------------------------
@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = pairs(4)
    unpaired = unpaired_rows(4)
    return {
        "good": write_jsonl(tmp_path / "good.jsonl", good),
        "unpaired": write_jsonl(tmp_path / "unpaired.jsonl", unpaired),
        "text_label": write_jsonl(
            tmp_path / "text_label.jsonl",
            [{**row, "label": "yes" if row["label"] else "no"} for row in unpaired],
        ),
        "all_desirable": write_jsonl(tmp_path / "all.jsonl", [{**row, "label": True} for row in unpaired]),
        "no_rejected": write_jsonl(tmp_path / "no_rejected.jsonl", [{"prompt": "a", "chosen": "b"}] * 3),
        "identical": write_jsonl(
            tmp_path / "identical.jsonl", [*good[:2], {**good[2], "rejected": good[2]["chosen"]}]
        ),
        "empty_reply": write_jsonl(tmp_path / "empty_reply.jsonl", [*good[:3], {**good[3], "chosen": "  "}]),
        "bad_hh": write_jsonl(
            tmp_path / "bad_hh.jsonl",
            [
                {"prompt": "\n\nHuman: a\n\nAssistant:", "chosen": " b", "rejected": " c"},
                {"prompt": "\n\nHuman: a\n\nHuman: b\n\nAssistant:", "chosen": " b", "rejected": " c"},
            ],
        ),
    }


BAD_FINETUNE = [
    ("a missing column", ["data.train={no_rejected}"], "no column 'rejected' (set by data.rejected)"),
    (
        "chosen identical to rejected",
        ["data.train={identical}"],
        "identical.jsonl line 3: columns 'chosen' and 'rejected' hold the same reply",
    ),
    (
        "an empty reply",
        ["data.train={empty_reply}"],
        "empty_reply.jsonl line 4: column 'chosen' (data.chosen)",
    ),
    (
        "hh turns that do not alternate",
        ["data.train={bad_hh}", "data.format=hh"],
        "bad_hh.jsonl line 2: column 'prompt' (data.prompt): hh turns do not alternate",
    ),
    ("a model without a chat template", ["data.use_chat_template=true"], "the model has no chat template"),
    (
        "a method setting outside its method's section",
        ["preference.loss_type=ipo"],
        "unknown key 'preference.loss_type' (did you mean 'preference.dpo.loss_type'?)",
    ),
    ("an unknown DPO loss", ["preference.dpo.loss_type=sigmoidd"], "did you mean 'sigmoid'"),
    (
        "a repetition penalty of 0",
        ["data.repetition_penalty=0"],
        "data.repetition_penalty must be a number above 0 (1: no penalty, 1.2: a common choice), got 0",
    ),
    (
        "a negative SFT weight",
        ["preference.dpo.sft_weight=-0.5"],
        "preference.dpo.sft_weight must be 0 (off) or a positive number, got -0.5",
    ),
    (
        "unpaired rows for a paired method",
        ["data.train={unpaired}"],
        "unpaired.jsonl: rows of column 'completion' (data.completion) without 'chosen' / 'rejected' pairs",
    ),
    (
        "a KTO label that is not true or false",
        ["data.train={text_label}", "preference.method=kto"],
        "text_label.jsonl line 1: column 'label' (data.label) is 'yes'; a KTO label is true",
    ),
    (
        "KTO rows that are all desirable",
        ["data.train={all_desirable}", "preference.method=kto"],
        "every row's 'label' (data.label) is True; KTO learns from desirable and undesirable",
    ),
    (
        "a negative KTO weight",
        ["preference.method=kto", "preference.kto.undesirable_weight=-1"],
        "preference.kto.undesirable_weight must be a positive number",
    ),
    (
        "an ORPO beta of 0",
        ["preference.method=orpo", "preference.orpo.beta=0"],
        "preference.orpo.beta must be",
    ),
    (
        "a SimPO beta of 0",
        ["preference.method=simpo", "preference.simpo.beta=0"],
        "preference.simpo.beta must be a positive number",
    ),
]


@pytest.mark.parametrize(("name", "args", "expected"), BAD_FINETUNE, ids=[c[0] for c in BAD_FINETUNE])
def test_bad_preference_input_is_one_line_exit_2(run_cli, bad_files, tmp_path, name, args, expected) -> None:
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: preference\ndata: {{train: {bad_files['good']}, validation_split: 0}}\n")
    arguments = [a.format(**bad_files) for a in args]
    result = run_cli("finetune", recipe, *LLMKIT_TEMPLATE, f"output_dir={out}", *arguments)
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_hh_rows_whose_turns_do_not_alternate_can_be_skipped_and_counted(bad_files, capsys) -> None:
    from datasets import Dataset

    from llmkit.data.files import Split

    rows = [json.loads(line) for line in bad_files["bad_hh"].read_text().splitlines()]
    split = Split("train", Dataset.from_list(rows), bad_files["bad_hh"], key="data.train")
    task(format="hh", skip_bad_turns=True).check_data({"train": split})
    assert len(split.dataset) == 1 and split.where(0) == "line 1"
    assert (
        "skipped 1 row(s) whose hh turns do not alternate (data.skip_bad_turns=true), the first at line 2"
        in (capsys.readouterr().err)
    )


def test_identical_pairs_can_be_skipped_and_counted(tmp_path: Path, capsys) -> None:
    rows = [*pairs(8), {**pairs(1)[0], "rejected": pairs(1)[0]["chosen"]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    result = llmkit.finetune(
        {"task": "preference", "output_dir": str(tmp_path / "out")},
        [*LLMKIT_TEMPLATE, f"data.train={train}", "data.skip_identical_pairs=true", "training.max_steps=1"],
    )
    assert (
        "skipped 1 pair(s) with identical replies (data.skip_identical_pairs=true), the first at line 9"
        in (capsys.readouterr().err)
    )
    assert result.metrics["train_dropped_pairs"] == 0


# -- the real model --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dpo_hh_recipe_with_lora_on_smollm2_runs_and_generates(tmp_path: Path, monkeypatch, run_cli) -> None:
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    result = llmkit.finetune(
        "dpo-hh",
        [
            f"data.train={write_preference_pairs(tmp_path / 'train.jsonl', 16)}",
            f"data.validation={write_preference_pairs(tmp_path / 'test.jsonl', 8)}",
            "data.max_train_samples=16",
            "data.max_eval_samples=8",
            "data.max_length=256",
            "data.max_prompt_length=128",
            "training.max_steps=4",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    metrics = result.metrics
    assert 0 <= metrics["eval_before_reward_accuracy"] <= 1 and "eval_reward_accuracy" in metrics
    assert metrics["eval_before_reward_margin"] == pytest.approx(0.0, abs=1e-4)  # adapter off = reference
    assert (result.output_dir / "adapter_config.json").exists()
    chat = run_cli(
        "generate", "Hi!", "--model", result.output_dir, "--chat", "--json", "--max-new-tokens", "8"
    )
    assert chat.exit_code == 0, chat.stderr
