"""Fill-mask: recipe end to end on tiny-bert, mask placeholders, several masks, the CLI demo, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmkit
from llmkit.tasks.fill_mask import normalise_masks
from tests.conftest import NEGATIVE, POSITIVE, write_csv

SENTENCES = [s + "." for s in POSITIVE + NEGATIVE] * 3


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def fill_mask_recipe(train: Path, output_dir: Path, **data) -> dict:
    return {
        "task": "fill-mask",
        "model": "tiny-bert",
        "data": {"train": str(train), "validation_split": 0.2, "max_length": 32, **data},
        "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
        "output_dir": str(output_dir),
    }


@pytest.fixture
def trained(text_file: Path, tmp_path: Path) -> Path:
    return llmkit.finetune(fill_mask_recipe(text_file, tmp_path / "fm")).output_dir


def test_recipe_end_to_end_and_pipeline(trained: Path) -> None:
    from transformers import pipeline

    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0 <= metrics["eval_masked_accuracy"] <= 1
    assert metrics["eval_perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    config = json.loads((trained / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]

    fill = pipeline("fill-mask", model=str(trained))
    candidates = fill("the food was [MASK].")
    assert len(candidates) == 5 and all(c["sequence"].startswith("the food was") for c in candidates)


@pytest.mark.parametrize(
    ("data", "column"),
    [({"line_by_line": False}, None), ({"whole_word_mask": True}, None), ({"text": "review"}, "review")],
    ids=["blocks", "whole-word", "csv-column"],
)
def test_data_shapes(tmp_path: Path, text_file: Path, data: dict, column: str | None) -> None:
    train = text_file
    if column:
        train = write_csv(tmp_path / "reviews.csv", [column, "stars"], [[s, 5] for s in SENTENCES])
    result = llmkit.finetune(fill_mask_recipe(train, tmp_path / "out", **data))
    assert "eval_masked_accuracy" in result.metrics


def test_blocks_are_max_length_tokens(text_file: Path) -> None:
    from transformers import AutoTokenizer

    from llmkit.config import COMMON_DATA_DEFAULTS
    from llmkit.data import read_table
    from llmkit.models import resolve_model
    from llmkit.tasks.fill_mask import FillMaskTask

    task = FillMaskTask(
        {**COMMON_DATA_DEFAULTS, **FillMaskTask.data_defaults, "line_by_line": False, "max_length": 16}
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-bert"))
    rows = read_table(text_file, "data.train")
    blocks = task.encode(rows, tokenizer)
    total = sum(len(ids) for ids in tokenizer(list(rows["text"]))["input_ids"])
    assert len(blocks) == total // 16 and {len(ids) for ids in blocks["input_ids"]} == {16}


def test_masked_positions_loss_equals_full_loss() -> None:
    """The fast training path (logits only at masked positions) computes exactly the model's own loss."""
    import torch
    from transformers import AutoTokenizer, TrainingArguments

    from llmkit.config import COMMON_DATA_DEFAULTS
    from llmkit.models import resolve_model
    from llmkit.tasks.fill_mask import FillMaskTask, masked_positions_trainer, mlm_head

    task = FillMaskTask({**COMMON_DATA_DEFAULTS, **FillMaskTask.data_defaults, "mlm_probability": 0.5})
    folder = resolve_model("tiny-bert")
    model, tokenizer = task.load_model(folder), AutoTokenizer.from_pretrained(folder)
    assert mlm_head(model) is model.cls
    torch.manual_seed(0)
    batch = task.collator(tokenizer)([tokenizer(s) for s in SENTENCES[:6]])
    trainer = masked_positions_trainer()(model=model, args=TrainingArguments("unused", report_to="none"))
    model.eval()  # no dropout, so both paths see the same network
    model.training = True  # ...but take the training branch of compute_loss
    fast = trainer.compute_loss(model, dict(batch))
    model.training = False
    full = trainer.compute_loss(model, dict(batch))
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)


def test_placeholders_are_normalised() -> None:
    assert (
        normalise_masks("a [MASK] b [mask] c <mask> d <MASK>", "[MASK]")
        == "a [MASK] b [MASK] c [MASK] d [MASK]"
    )
    assert normalise_masks("the [MASK] sat", "<mask>") == "the <mask> sat"


def test_cli_several_masks_table_and_json(run_cli, trained: Path) -> None:
    result = run_cli("fill-mask", "the [MASK] was <mask>.", "--model", trained, "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "the [MASK] was <mask>."
    assert lines[1].startswith("  mask 1: 1. ") and any(line.startswith("  mask 2: 1. ") for line in lines)
    assert len(lines) == 1 + 2 * 3

    result = run_cli("fill-mask", "the food was [MASK].", "--model", trained, "--json", "-k", "2")
    payload = json.loads(result.stdout)
    assert payload["text"] == "the food was [MASK]."
    assert len(payload["masks"]) == 1 and len(payload["masks"][0]) == 2
    scores = [c["score"] for c in payload["masks"][0]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_cli_reads_texts_from_a_file_and_defaults_to_the_newest_run(
    run_cli, trained: Path, tmp_path: Path
) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a [MASK] film\n\nthe [MASK] was cold\n", encoding="utf-8")
    result = run_cli("fill-mask", "--input", texts, "--json")  # no --model: the newest fill-mask run
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [
        "a [MASK] film",
        "the [MASK] was cold",
    ]


def test_cli_bad_inputs(run_cli, trained: Path, tmp_path: Path, sentiment_files) -> None:
    result = run_cli("fill-mask", "no placeholder here", "--model", trained)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: text 1 has no mask: 'no placeholder here'; "
        "write [MASK] (or <mask>) where a word should be filled in"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    result = run_cli("fill-mask", "--input", empty, "--model", trained)
    assert result.exit_code == 2 and f"error: --input {empty} is empty" in result.stderr

    train, validation = sentiment_files
    classifier = llmkit.finetune(
        {
            "model": "tiny-bert",
            "data": {"train": str(train), "validation": str(validation)},
            "training": {"max_steps": 1},
            "output_dir": str(tmp_path / "clf"),
        }
    ).output_dir
    result = run_cli("fill-mask", "a [MASK] film", "--model", classifier)
    assert result.exit_code == 2
    assert "holds a BertForSequenceClassification, which cannot do fill-mask" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_without_any_fill_mask_run(run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "empty-cache"))
    result = run_cli("fill-mask", "a [MASK] film")
    assert result.exit_code == 2
    assert (
        "no fill-mask model yet: make one with `llmkit finetune recipes/fill-mask-brown.yaml`"
        in result.stderr
    )
