"""data.streaming: a training file read lazily, checked and encoded chunk by chunk, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.files import (
    STREAM_CHUNK_ROWS,
    TextStream,
    load_splits,
    read_split,
    sample_texts,
    stream_texts,
)
from llmkit.recipe.loader import load_recipe
from tests.conftest import NEGATIVE, POSITIVE

SENTENCES = [s + "." for s in POSITIVE + NEGATIVE]


def write_lines(path: Path, count: int) -> Path:
    """``count`` sentences, one a line, each numbered (line N holds sentence N)."""
    path.write_text("".join(f"{SENTENCES[i % len(SENTENCES)]} number {i + 1}\n" for i in range(count)))
    return path


def recipe(train: Path, output_dir: Path, task: str = "fill-mask", **data) -> dict:
    model = "tiny-bert" if task == "fill-mask" else "tiny-gpt2"
    return {
        "task": task,
        "model": model,
        "data": {"train": str(train), "streaming": True, "max_length": 32, "max_eval_samples": 16, **data},
        "training": {"max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
        "output_dir": str(output_dir),
    }


def stream_splits(train: Path, **data):
    resolved = load_recipe(recipe(train, train.parent / "out", **data))
    return load_splits(resolved.data, seed=42)


def yaml_recipe(tmp_path: Path, config: dict) -> Path:
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def tokenized_entries() -> set[str]:
    from llmkit.models.resolve import cache_dir

    folder = cache_dir() / "tokenized"
    return {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()


# -- reading ------------------------------------------------------------------------------------------
STREAMABLE = {
    "lines.txt": ("line", "first\n\n  \nsecond line\r\nthird\x0cfourth\n\n\nlast"),
    "paragraphs.txt": (
        "paragraph",
        "\n\nROMEO:\nHello.\n \t\nJULIET:\nHi.\nThere.\n\n\n\nNURSE:\n  Anon!\n   \n",
    ),
    "rows.jsonl": ("line", '{"text": "a"}\n\n{"text": "b", "extra": 1}\n{"text": null}\n'),
    "rows.csv": ("line", 'text,label\n"two\nlines",1\nplain,0\n\n"a ""quote""",1\n'),
    "rows.tsv": ("line", 'text\tlabel\n"tab\there"\t1\nplain\t0\n'),
}


@pytest.mark.parametrize("name", list(STREAMABLE))
def test_a_stream_reads_the_rows_and_lines_a_whole_read_does(tmp_path: Path, name: str) -> None:
    """Rows and the lines messages name are the same, streamed or read whole (blank lines, paragraphs
    separated by lines of spaces, quoted CSV line breaks, JSON lines with extra keys)."""
    unit, content = STREAMABLE[name]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    whole = read_split("train", path, "data.train", unit)
    streamed = TextStream(path, "data.train", unit).head(100)
    assert streamed.dataset.to_list() == whole.dataset.to_list()
    assert streamed.lines == whole.lines


def test_validation_is_the_head_of_the_stream_and_training_skips_it(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "corpus.txt", 50)
    splits = stream_splits(train, max_eval_samples=10)
    validation, head = splits["validation"], splits["train"]
    assert validation.dataset["text"][:] == [f"{SENTENCES[i]} number {i + 1}" for i in range(10)]
    assert validation.carved and validation.stream is None
    assert head.stream.skip == 10 and head.dataset[0]["text"].endswith("number 11")
    assert head.where(0) == "line 11"
    assert len(head.dataset) == 40 and head.size == "streamed"


def test_a_validation_file_is_read_whole_and_the_stream_starts_at_its_first_row(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "corpus.txt", 30)
    dev = write_lines(tmp_path / "dev.txt", 40)
    splits = stream_splits(train, validation=str(dev), max_eval_samples=None)
    assert len(splits["validation"].dataset) == 40 and not splits["validation"].carved
    assert splits["train"].stream.skip == 0 and splits["train"].dataset[0]["text"].endswith("number 1")
    assert "validation" not in stream_splits(train, validation_split=0.0)


def test_max_train_samples_caps_the_stream(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "corpus.txt", 50)
    stream = stream_splits(train, max_eval_samples=10, max_train_samples=15)["train"].stream
    assert [line for _, line in stream.records()] == list(range(11, 26))


def test_a_stream_is_read_lazily_and_a_bad_row_deep_in_it_names_its_line(tmp_path: Path) -> None:
    """Only the head is read before training: a broken line past it is found when training reaches it,
    as the same one-line error a whole read gives."""
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks import build_task
    from llmkit.training.streaming import encode_stream

    bad_line = STREAM_CHUNK_ROWS + 300
    path = tmp_path / "corpus.jsonl"
    rows = [json.dumps({"text": f"sentence {i}"}) if i != bad_line else "{broken" for i in range(1, 2001)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    resolved = load_recipe(recipe(path, tmp_path / "out", shuffle_buffer=0))
    splits = load_splits(resolved.data, seed=42)  # reads the head only: the broken line is not reached
    task = build_task(resolved.task, resolved.data)
    task.check_data(splits)
    tokenizer = load_tokenizer(resolve_model("tiny-bert"))
    examples = iter(encode_stream(task, splits["train"], tokenizer, seed=42, shuffle_buffer=0))
    first = next(examples)
    assert first["input_ids"] == tokenizer("sentence 17")["input_ids"]  # rows 1-16 are held out
    with pytest.raises(LlmkitError, match=rf"data.train: {path} line {bad_line}: invalid JSON"):
        for _ in examples:
            pass


def test_an_empty_text_deep_in_a_stream_is_the_checks_error(tmp_path: Path) -> None:
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks import build_task
    from llmkit.training.streaming import encode_stream

    path = tmp_path / "corpus.jsonl"
    rows = [{"text": None if i == 1500 else f"sentence {i}"} for i in range(1, 1601)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    resolved = load_recipe(recipe(path, tmp_path / "out"))
    splits = load_splits(resolved.data, seed=42)
    task = build_task(resolved.task, resolved.data)
    task.check_data(splits)
    tokenizer = load_tokenizer(resolve_model("tiny-bert"))
    with pytest.raises(LlmkitError, match=r"line 1500: column 'text' \(data.text\) is empty"):
        list(encode_stream(task, splits["train"], tokenizer, seed=42, shuffle_buffer=100))


def test_the_shuffle_buffer_reorders_every_example_once(tmp_path: Path) -> None:
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks import build_task
    from llmkit.training.streaming import encode_stream

    path = write_lines(tmp_path / "corpus.txt", 300)
    resolved = load_recipe(recipe(path, tmp_path / "out"))
    splits = load_splits(resolved.data, seed=42)
    task = build_task(resolved.task, resolved.data)
    tokenizer = load_tokenizer(resolve_model("tiny-bert"))

    def texts(buffer: int) -> list[str]:
        examples = encode_stream(task, splits["train"], tokenizer, seed=42, shuffle_buffer=buffer)
        return [tokenizer.decode(example["input_ids"]) for example in examples]

    in_order, shuffled = texts(0), texts(64)
    assert len(in_order) == 300 - 16 and sorted(shuffled) == sorted(in_order) and shuffled != in_order


BLOCK_CASES = {
    "fill-mask": {"line_by_line": False, "max_length": 24},
    "generation": {"format": "text", "txt_unit": "line", "max_length": 24},
    "fill-mask capped": {"line_by_line": False, "max_length": 24, "max_train_samples": 33},
}


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_a_streamed_corpus_gives_the_blocks_it_gives_read_whole(tmp_path: Path, case: str) -> None:
    """Text cut into blocks: each chunk's tail opens the next chunk's first block (no tokens dropped at a
    chunk's end, no short block padded there), so the stream's blocks are the whole read's, capped or not."""
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks import build_task
    from llmkit.training.streaming import encode_stream

    task_name = case.split()[0]
    path = write_lines(tmp_path / "corpus.txt", 50)
    config = recipe(path, tmp_path / "out", task=task_name, validation_split=0.0, **BLOCK_CASES[case])
    resolved = load_recipe(config)
    streamed_splits = load_splits(resolved.data, seed=42)
    whole = load_splits({**resolved.data, "streaming": False}, seed=42)
    task = build_task(resolved.task, resolved.data)
    task.check_data(streamed_splits)
    tokenizer = load_tokenizer(resolve_model(config["model"]))
    task.prepare_tokenizer(tokenizer)

    streamed = list(encode_stream(task, streamed_splits["train"], tokenizer, 42, 0, chunk_rows=7))
    expected = task.encode(whole["train"].dataset, tokenizer).to_list()
    assert streamed == expected
    assert sum(len(block["input_ids"]) < 24 for block in streamed) <= 1  # only the corpus's last block


def test_stream_texts_and_sample_texts_for_tokenizer_training(tmp_path: Path) -> None:
    """The training texts of a stream (after the held-out head) come lazily; a sample keeps a few."""
    train = write_lines(tmp_path / "corpus.txt", 3 * STREAM_CHUNK_ROWS)
    split = stream_splits(train, max_eval_samples=10)["train"]
    texts = stream_texts(split)
    assert next(texts).endswith("number 11")
    assert sum(1 for _ in texts) == 3 * STREAM_CHUNK_ROWS - 11
    first = sample_texts(stream_texts(split), 5)
    assert [text.rsplit(" ", 1)[1] for text in first] == ["11", "12", "13", "14", "15"]
    sampled = sample_texts(stream_texts(split), 50, seed=1)
    assert len(sampled) == 50 and sampled == sample_texts(stream_texts(split), 50, seed=1)
    numbers = [int(text.rsplit(" ", 1)[1]) for text in sampled]
    assert max(numbers) > 2 * STREAM_CHUNK_ROWS  # a sample of the whole stream, not of its head
    assert sample_texts(stream_texts(split), 50, seed=2) != sampled
    whole = load_splits(load_recipe({**recipe(train, tmp_path), "data": {"train": str(train)}}).data, 42)
    assert sum(1 for _ in stream_texts(whole["train"])) == len(whole["train"].dataset)


# -- bad input ----------------------------------------------------------------------------------------
def test_streaming_needs_max_steps(tmp_path: Path, run_cli) -> None:
    train = write_lines(tmp_path / "corpus.txt", 20)
    plain = recipe(train, tmp_path / "out")
    plain["training"].pop("max_steps")
    message = "data.streaming needs training.max_steps (a stream has no length to count epochs in); set"
    with pytest.raises(LlmkitError, match=re_escape(message)):
        load_recipe(plain)
    path = yaml_recipe(tmp_path, plain)
    result = run_cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: recipe {path}: {message} training.max_steps=N"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"task": "classification"},
            "data.streaming does not work for task classification, which reads its "
            "data whole (tasks that stream: fill-mask, generation)",
        ),
        ({"suffix": ".json"}, "cannot be streamed (data.streaming reads .txt, .jsonl, .csv, .tsv files)"),
        ({"task": "generation", "data": {"txt_unit": "file"}}, "data.txt_unit='file' cannot be streamed"),
        ({"data": {"train": None, "dataset": "some/dataset"}}, "data.streaming reads the data.train file"),
        ({"data": {"shuffle_buffer": -1}}, "data.shuffle_buffer must be a number of examples"),
        ({"data": {"max_eval_samples": 40}}, "has no rows left for training after the 40 held out"),
    ],
    ids=["task", "json", "txt-unit", "hub-dataset", "buffer", "all-held-out"],
)
def test_what_cannot_stream_is_one_line(tmp_path: Path, change: dict, message: str) -> None:
    train = write_lines(tmp_path / f"corpus{change.get('suffix', '.txt')}", 30)
    if train.suffix == ".json":
        train.write_text(json.dumps([{"text": "a"}]))
    config = recipe(train, tmp_path / "out")
    config["task"] = change.get("task", config["task"])
    config["data"].update(change.get("data", {}))
    with pytest.raises(LlmkitError, match=re_escape(message)):
        resolved = load_recipe(config)
        load_splits(resolved.data, seed=42)


# -- training -----------------------------------------------------------------------------------------
def test_fill_mask_trains_on_a_stream_through_the_spine(tmp_path: Path, run_cli) -> None:
    """The spine end to end: the Trainer gets an IterableDataset (several passes over a short corpus with
    max_steps), only validation goes into the tokenization cache, the model works in a pipeline."""
    from datasets import IterableDataset
    from transformers import pipeline

    from llmkit.training.spine import prepare

    train = write_lines(tmp_path / "corpus.txt", 80)
    config = recipe(train, tmp_path / "fm", max_eval_samples=16)
    config["training"].update({"max_steps": 12, "per_device_train_batch_size": 16})
    before = tokenized_entries()
    assert isinstance(prepare(load_recipe(config)).encoded["train"], IterableDataset)
    result = llmkit.finetune(config)
    assert len(tokenized_entries() - before) == 1  # the validation split's; a stream is never cached
    assert 0 <= result.metrics["eval_masked_accuracy"] <= 1
    state = json.loads((result.output_dir / "log_history.json").read_text())
    assert max(entry["step"] for entry in state) == 12  # 12 x 16 rows: three passes over the 64 training rows
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["rows"] == {"train": "streamed", "validation": 16}
    candidates = pipeline("fill-mask", model=str(result.output_dir))("the food was [MASK].")
    assert len(candidates) == 5

    lines = run_cli("validate", yaml_recipe(tmp_path, config)).stdout
    assert f"train: streamed from {train}, after the 16 rows held out for validation" in lines
    assert f"validation: 16 rows from {train} (the head of the training stream)" in lines


def test_generation_trains_on_a_streamed_jsonl(tmp_path: Path) -> None:
    from transformers import pipeline

    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"{s} number {i}"}) + "\n" for i, s in enumerate(SENTENCES * 6))
    )
    result = llmkit.finetune(recipe(path, tmp_path / "gen", task="generation"))
    assert result.metrics["eval_perplexity"] > 1
    assert json.loads((result.output_dir / "manifest.json").read_text())["rows"]["train"] == "streamed"
    generated = pipeline("text-generation", model=str(result.output_dir))("the food", max_new_tokens=3)
    assert generated[0]["generated_text"].startswith("the food")


def test_the_run_fingerprint_sees_a_corpus_changed_past_the_rows_read_up_front(
    tmp_path: Path,
) -> None:
    """resume: auto compares fingerprints; a stream's covers the file, not only the head checked up front."""
    from llmkit.training.token_cache import split_digest

    train = write_lines(tmp_path / "corpus.txt", 3 * STREAM_CHUNK_ROWS)
    digest = split_digest(stream_splits(train)["train"])
    assert split_digest(stream_splits(train)["train"]) == digest
    with train.open("a", encoding="utf-8") as handle:
        handle.write("one more sentence at the end\n")
    assert split_digest(stream_splits(train)["train"]) != digest
