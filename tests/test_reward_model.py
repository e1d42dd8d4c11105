"""The reward-model task: pairs scored as whole sequences (an encoder framed as in pre-training, a decoder as
rendered), per-pair metrics, runs on tiny-bert (full) and tiny-gpt2 (LoRA), `llmkit predict`, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import EvalPrediction

import llmkit
from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.models.resolve import load_tokenizer, resolve_model
from llmkit.tasks.causal_lm import DEFAULT_CHAT_TEMPLATE, render_chat
from llmkit.tasks.preference import DROPPED, TRUNCATED, WHOLE
from llmkit.tasks.reward_model import RewardModelTask

# tiny-gpt2 has 256 positions and renders a one-line prompt in 34 tokens
SHORT = ["data.max_length=128", "data.max_prompt_length=64"]


def task(**data) -> RewardModelTask:
    return RewardModelTask({**COMMON_DATA_DEFAULTS, **RewardModelTask.data_defaults, **data})


def pairs(count: int, offset: int = 0) -> list[dict]:
    """Pairs a tiny model can learn: the chosen reply is the colour asked for, the rejected one is not."""
    colours = ["red", "blue", "green", "yellow"]
    rows = []
    for index in range(offset, offset + count):
        colour, other = colours[index % 4], colours[(index + 1) % 4]
        rows.append(
            {"prompt": f"Name the colour {colour}.", "chosen": colour, "rejected": f"{other} {other}"}
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def prepared(model: str):
    tokenizer = load_tokenizer(resolve_model(model))
    reward = task()
    reward.prepare_tokenizer(tokenizer)
    return reward, tokenizer


# -- encoding -------------------------------------------------------------------------------------------
def test_an_encoder_scores_prompt_and_reply_framed_as_in_pre_training() -> None:
    reward, tokenizer = prepared("tiny-bert")
    messages = [{"role": "user", "content": "Name a colour."}]
    (chosen, rejected), truncation = reward.scored_sequences(
        tokenizer, DEFAULT_CHAT_TEMPLATE, messages, ["red", "blue"]
    )
    assert truncation == WHOLE
    assert chosen[0] == tokenizer.cls_token_id and chosen[-1] == tokenizer.sep_token_id
    # the encoder has no end-of-sequence token: its separator ends the reply's turn in llmkit's template
    assert tokenizer.eos_token == tokenizer.sep_token
    prompt = render_chat(tokenizer, messages, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    text = tokenizer.decode(chosen[1:-1])
    assert text == tokenizer.decode(tokenizer(prompt + "red[SEP]\n\n", add_special_tokens=False).input_ids)
    assert tokenizer.decode(rejected[1:-1]).endswith("blue [SEP]")


def test_a_decoder_scores_the_sequence_as_rendered_and_pairs_keep_the_prompt_budget() -> None:
    reward, tokenizer = prepared("tiny-gpt2")
    messages = [{"role": "user", "content": "Name a colour."}]
    (chosen,), _ = reward.scored_sequences(tokenizer, DEFAULT_CHAT_TEMPLATE, messages, ["red"])
    prompt = render_chat(tokenizer, messages, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    assert tokenizer.decode(chosen) == prompt + "red" + tokenizer.eos_token + "\n\n"

    from datasets import Dataset

    rows = [*pairs(2), {"prompt": "word " * 100, "chosen": "a", "rejected": "b"}]
    rows[1]["rejected"] = "no " * 80
    short = task(max_length=60, max_prompt_length=40)
    encoded = short.encode(Dataset.from_list(rows), tokenizer)
    assert encoded["truncation"] == [WHOLE, TRUNCATED, DROPPED]
    assert len(encoded["rejected_ids"][1]) == 60
    assert short.encoding_metrics("train", encoded) == {"train_truncated_pairs": 1, "train_dropped_pairs": 1}


def test_metrics_are_per_pair_accuracy_and_mean_margin() -> None:
    compute = task().compute_metrics()
    scores = np.array([[2.0, 1.0], [0.5, 1.5], [3.0, -1.0], [1.0, 1.0]], dtype=np.float32)
    metrics = compute(EvalPrediction(predictions=scores, label_ids=np.zeros(4)))
    assert metrics["reward_accuracy"] == pytest.approx(0.5)  # a tie is not "chosen above"
    assert metrics["reward_margin"] == pytest.approx((1.0 - 1.0 + 4.0 + 0.0) / 4)
    assert metrics["reward_chosen"] == pytest.approx(1.625) and metrics["reward_rejected"] == pytest.approx(
        0.625
    )


# -- runs -----------------------------------------------------------------------------------------------
def train(tmp_path: Path, *overrides: str):
    train_file = write_jsonl(tmp_path / "train.jsonl", pairs(16))
    validation = write_jsonl(tmp_path / "validation.jsonl", pairs(6, offset=2))
    return llmkit.finetune(
        {"task": "reward-model", "output_dir": str(tmp_path / "out")},
        [
            *SHORT,
            f"data.train={train_file}",
            f"data.validation={validation}",
            "training.max_steps=8",
            "training.logging_steps=2",
            "training.learning_rate=1e-2",
            "training.eval_strategy=no",
            "training.per_device_eval_batch_size=4",
            *overrides,
        ],
    )


def test_an_encoder_reward_model_learns_the_pairs_and_predict_scores_replies(tmp_path: Path, run_cli) -> None:
    result = train(tmp_path, "model=tiny-bert")
    metrics, out = result.metrics, result.output_dir
    for name in ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "loss"):
        assert f"eval_{name}" in metrics and f"eval_before_{name}" in metrics, name
    assert metrics["eval_reward_margin"] > metrics["eval_before_reward_margin"]
    assert metrics["eval_reward_accuracy"] > 0.5
    assert len(json.loads((out / "config.json").read_text())["id2label"]) == 1  # one score a sequence
    history = json.loads((out / "log_history.json").read_text())
    trained = [entry for entry in history if "loss" in entry]
    assert trained and all("reward_accuracy" in entry and "accuracy" not in entry for entry in trained)

    replies = write_jsonl(
        tmp_path / "replies.jsonl",
        [
            {"prompt": "Name the colour red.", "completion": "red"},
            {"prompt": "Name the colour red.", "completion": "blue blue"},
        ],
    )
    scored = run_cli("predict", "-m", out, "-i", replies)
    assert scored.exit_code == 0, scored.stderr
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    assert [set(row) for row in rows] == [{"prompt", "completion", "score"}] * 2
    assert rows[0]["score"] > rows[1]["score"]  # the learned preference, on new rows
    both = run_cli("predict", "-m", out, "-i", tmp_path / "validation.jsonl")
    first = json.loads(both.stdout.splitlines()[0])
    assert both.exit_code == 0 and {"chosen_score", "rejected_score"} <= set(first)


def test_a_causal_lm_reward_model_trains_a_lora_adapter_with_its_score_head(tmp_path: Path) -> None:
    result = train(tmp_path, "model=tiny-gpt2", "peft.r=4")
    out = result.output_dir
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    assert result.metrics["eval_reward_margin"] > result.metrics["eval_before_reward_margin"]
    from llmkit.inference.predict import predict_file

    predicted = predict_file(str(out), tmp_path / "validation.jsonl")
    wins = np.mean([row["chosen_score"] > row["rejected_score"] for row in predicted])
    assert wins == pytest.approx(result.metrics["eval_reward_accuracy"])  # predict scores as evaluation does


# -- bad input ----------------------------------------------------------------------------------------------
BAD = [
    (
        "a missing column",
        {"rows": [{"prompt": "a", "chosen": "b"}] * 3},
        [],
        "no column 'rejected' (set by data.rejected)",
    ),
    (
        "chosen identical to rejected",
        {"rows": [*pairs(2), {"prompt": "a", "chosen": "b", "rejected": "b"}]},
        [],
        "line 3: columns 'chosen' and 'rejected' hold the same reply",
    ),
    (
        "a longer max_length than the model's context",
        {"rows": pairs(4)},
        ["data.max_length=400"],
        "longer than the model's context (256",
    ),
    (
        "a model with no sequence-classification head",
        {"rows": pairs(4), "config": {"model_type": "marian"}},
        ["model={model}"],
        "model type 'marian' has no sequence-classification head",
    ),
]


@pytest.mark.parametrize(("name", "given", "args", "expected"), BAD, ids=[case[0] for case in BAD])
def test_bad_reward_model_input_is_one_line_exit_2(run_cli, tmp_path, name, given, args, expected) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", given["rows"])
    model = tmp_path / "model"
    if "config" in given:  # a model folder whose architecture has no such head
        model.mkdir()
        (model / "config.json").write_text(json.dumps(given["config"]))
    out = tmp_path / "out"
    result = run_cli(
        "finetune", "task=reward-model", "model=tiny-gpt2", f"data.train={data}", "data.validation_split=0",
        f"output_dir={out}", *(arg.format(model=model) for arg in args),
    )  # fmt: skip
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_predict_without_a_reply_to_score_is_one_line(run_cli, tmp_path: Path) -> None:
    out = train(
        tmp_path, "model=tiny-bert", "training.max_steps=1", "training.eval_on_start=false"
    ).output_dir
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Name the colour red."}])
    result = run_cli("predict", "-m", out, "-i", prompts)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert (
        "no reply to score: give a column 'completion' (data.completion)"
        in result.stderr.strip().splitlines()[-1]
    )
