"""Every supported data format loads the same rows; splits are carved reproducibly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkit.config import COMMON_DATA_DEFAULTS
from llmkit.data import load_splits, read_table, resolve_data_path
from llmkit.errors import LlmkitError

ROWS = [
    {"text": "good, really", "label": 1},
    {"text": 'a "quoted" word', "label": 0},
    {"text": "fine", "label": 1},
]


def write_format(tmp_path: Path, fmt: str) -> Path:
    import pandas as pd
    from datasets import Dataset, DatasetDict

    path = tmp_path / f"data.{fmt}"
    frame = pd.DataFrame(ROWS)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        path.write_text(
            "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS), encoding="utf-8"
        )
    elif fmt == "json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    elif fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "disk":
        Dataset.from_list(ROWS).save_to_disk(str(path))
    elif fmt == "dict":
        DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet", "disk", "dict"])
def test_every_format_reads_the_same_rows(tmp_path: Path, fmt: str) -> None:
    dataset = read_table(write_format(tmp_path, fmt), "data.train")
    assert dataset.to_list() == ROWS


def test_txt_is_one_example_per_nonblank_line(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert read_table(path, "data.train")["text"] == ["first line", "second line"]


def test_validation_is_carved_from_train_reproducibly(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(50)), encoding="utf-8"
    )
    data = {**COMMON_DATA_DEFAULTS, "train": str(path), "validation_split": 0.2}
    first = load_splits(data, seed=1)
    again = load_splits(data, seed=1)
    other = load_splits(data, seed=2)
    assert len(first["train"].dataset) == 40 and len(first["validation"].dataset) == 10
    assert first["validation"].dataset["text"] == again["validation"].dataset["text"]
    assert first["validation"].dataset["text"] != other["validation"].dataset["text"]
    assert not set(first["validation"].dataset["text"]) & set(first["train"].dataset["text"])
    for split in first.values():  # messages still name each row's own line in the file
        for index, text in enumerate(split.dataset["text"]):
            assert split.where(index) == f"line {int(text.split()[1]) + 1}"


def test_max_samples_limit_rows(tmp_path: Path) -> None:
    path = write_format(tmp_path, "jsonl")
    data = {
        **COMMON_DATA_DEFAULTS,
        "train": str(path),
        "validation": str(path),
        "max_train_samples": 2,
        "max_eval_samples": 1,
    }
    splits = load_splits(data, seed=0)
    assert len(splits["train"].dataset) == 2 and len(splits["validation"].dataset) == 1


def test_shipped_samples_resolve() -> None:
    assert resolve_data_path("sample:sentiment/train.csv", "data.train").is_file()
    with pytest.raises(
        LlmkitError, match=r"no shipped sample 'sample:nope\.csv'; available: sentiment/train\.csv"
    ):
        resolve_data_path("sample:nope.csv", "data.train")
