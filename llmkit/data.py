"""Reading data files into ``datasets.Dataset`` splits, with errors that name the file, row and column.

Supported: CSV, TSV, JSON (a list of records or JSON lines), JSONL, Parquet, plain text (one example a
line; a paragraph or the whole file with a task's ``data.txt_unit``) and a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``. Relative paths are relative to the current
directory; ``sample:NAME`` points into the samples shipped with llmkit. A Hugging Face dataset
(``data.dataset``: a hub id or a dataset folder) is read by :mod:`llmkit.hub_data`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from datasets import Dataset

    from llmkit.hub_data import HubSource

SAMPLE_PREFIX = "sample:"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt")
SPLIT_ROLES = ("train", "validation", "test")
TXT_UNITS = ("line", "paragraph", "file")  # what one example of a .txt file is (a task's data.txt_unit)


@dataclass
class Split:
    """One split's rows plus where they came from, so messages can point at the file and row."""

    role: str  # train, validation or test
    dataset: Dataset
    path: Path
    carved: bool = False  # True when validation was split off train (its rows are rows of the train file)
    key: str = ""  # what the user set to name this file, e.g. "data.train" or "--input"
    #: File position of each row after carving, subsetting or dropping; None while rows are in file order.
    file_rows: list[int] | None = None
    #: The dataset split the rows came from (data.dataset); None for files. ``path`` is then a cache file.
    hub: HubSource | None = None

    @property
    def location(self) -> str:
        """The file, or the dataset and split, that holds the rows."""
        return self.hub.describe() if self.hub else str(self.path)

    @property
    def origin(self) -> str:
        return f"{self.key or 'data.' + self.role} {self.location}"

    def where(self, index: int) -> str:
        """Human position of row ``index``: the line of a text file, else the row (of a file or split)."""
        if self.file_rows is not None:
            index = self.file_rows[index]
        if self.hub is not None:
            return f"row {index + 1}"
        suffix = self.path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return f"line {index + 2}"  # 1-based, after the header
        if suffix in (".jsonl", ".txt"):
            return f"line {index + 1}"
        return f"row {index + 1}"

    def keep_rows(self, indices: Any) -> None:
        """Keep only the rows at ``indices`` (in that order), remembering where each came from."""
        indices = list(indices)
        self.file_rows = [self.file_rows[i] for i in indices] if self.file_rows is not None else indices
        self.dataset = self.dataset.select(indices)


def resolve_data_path(value: str, key: str) -> Path:
    """Turn a recipe's data path into a Path (``sample:`` -> llmkit's shipped samples)."""
    if not isinstance(value, str) or not value.strip():
        raise LlmkitError(f"{key} must be a file path (string), got {value!r}")
    if value.startswith(SAMPLE_PREFIX):
        path = SAMPLES_DIR / value[len(SAMPLE_PREFIX) :]
        if not path.exists():
            shipped = sorted(str(p.relative_to(SAMPLES_DIR)) for p in SAMPLES_DIR.rglob("*.*"))
            raise LlmkitError(f"{key}: no shipped sample '{value}'; available: {', '.join(shipped)}")
        return path
    return Path(value).expanduser()


def split_text_file(text: str, unit: str = "line") -> list[str]:
    """A .txt file's examples: each non-blank ``line``, each blank-line separated ``paragraph``, or all."""
    if unit == "line":
        return [line for line in text.splitlines() if line.strip()]
    if unit == "paragraph":
        return [part.strip("\n") for part in re.split(r"\n(?:[ \t]*\n)+", text) if part.strip()]
    if unit == "file":
        return [text] if text.strip() else []
    raise LlmkitError(f"data.txt_unit must be one of {', '.join(TXT_UNITS)}, got {unit!r}")


def read_table(path: Path, key: str, txt_unit: str = "line") -> Dataset:
    """Read one data file or saved-dataset folder into a Dataset; every failure is a LlmkitError.

    ``txt_unit`` says what one example of a .txt file is (see :func:`split_text_file`).
    """
    from datasets import Dataset

    if not path.exists():
        raise LlmkitError(f"{key}: file {path} does not exist; check the path (relative to {Path.cwd()})")
    if path.is_dir():
        return _read_saved_dataset(path, key)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise LlmkitError(
            f"{key}: {path} has unsupported extension '{suffix or '(none)'}'; "
            f"use one of {', '.join(TABLE_SUFFIXES)} or a save_to_disk folder"
        )
    try:
        if path.stat().st_size == 0:
            raise LlmkitError(f"{key}: {path} is empty; give a file with a header and rows")
        if suffix in (".csv", ".tsv"):
            records = _read_delimited(path, key, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".jsonl":
            records = _read_json_lines(path, key)
        elif suffix == ".json":
            records = _read_json(path, key)
        elif suffix == ".txt":
            records = [{"text": part} for part in split_text_file(path.read_text(encoding="utf-8"), txt_unit)]
        else:
            import pandas as pd

            records = pd.read_parquet(path).to_dict(orient="records")
    except UnicodeDecodeError as exc:
        raise LlmkitError(
            f"{key}: {path} is not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise LlmkitError(f"{key}: cannot read {path} ({exc.strerror or exc}); check the file") from None
    except LlmkitError:
        raise
    except Exception as exc:  # pyarrow/pandas parse errors carry no stable type
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmkitError(f"{key}: cannot parse {path} ({first_line}); check the file format") from None
    if not records:
        raise LlmkitError(f"{key}: {path} has no rows; give a file with at least one example")
    try:
        return Dataset.from_list(records)
    except Exception as exc:
        for column in records[0]:
            kinds = sorted({type(r[column]).__name__ for r in records if r.get(column) is not None})
            if len(kinds) > 1:
                raise LlmkitError(
                    f"{key}: {path} column '{column}' mixes types ({', '.join(kinds)}); "
                    f"make each column one type"
                ) from None
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(f"{key}: cannot read {path} as a table ({first_line}); check the file") from None


def _read_delimited(path: Path, key: str, delimiter: str) -> list[dict[str, Any]]:
    """CSV/TSV with a header; numbers become int/float when a whole column is numeric."""
    with path.open(encoding="utf-8", newline="") as handle:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise LlmkitError(f"{key}: {path} is empty; give a file with a header and rows")
        header = [h.strip() for h in header]
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates:
            raise LlmkitError(
                f"{key}: {path} header repeats column {duplicates[0]!r}; give columns unique names"
            )
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise LlmkitError(
                    f"{key}: {path} line {reader.line_num}: {len(row)} fields where the header has "
                    f"{len(header)}; quote fields that contain '{delimiter}' or fix the row"
                )
            rows.append(row)
    columns = {name: _numeric_column([row[i] for row in rows]) for i, name in enumerate(header)}
    return [{name: columns[name][i] for name in header} for i in range(len(rows))]


def _numeric_column(values: list[str]) -> list[Any]:
    """Whole-column typing, like pandas: ints if all parse as int, floats if all parse as float."""
    for kind in (int, float):
        try:
            return [kind(v) for v in values]
        except ValueError:
            continue
    return values


def _read_json_lines(path: Path, key: str) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LlmkitError(
                    f"{key}: {path} line {number}: invalid JSON ({exc.msg}); fix or remove the line"
                ) from None
            if not isinstance(record, dict):
                raise LlmkitError(f"{key}: {path} line {number}: expected a JSON object per line")
            records.append(record)
    return records


def _read_json(path: Path, key: str) -> list[dict[str, Any]]:
    """A JSON list of records, a {"data": [...]} wrapper, a dict of columns, or JSON lines."""
    text = path.read_text(encoding="utf-8")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several objects: it is JSON lines with a .json name
            return _read_json_lines(path, key)
        raise LlmkitError(
            f"{key}: {path} line {exc.lineno}: invalid JSON ({exc.msg}); fix the file"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        payload = payload["data"]
    if isinstance(payload, dict) and payload and all(isinstance(v, list) for v in payload.values()):
        lengths = {len(v) for v in payload.values()}
        if len(lengths) != 1:
            raise LlmkitError(f"{key}: {path}: the column lists have different lengths")
        names = list(payload)
        return [dict(zip(names, values, strict=True)) for values in zip(*payload.values(), strict=True)]
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        return payload
    raise LlmkitError(f"{key}: {path}: expected a JSON list of objects (one per example)")


def _read_saved_dataset(path: Path, key: str) -> Dataset:
    """A ``save_to_disk`` folder; for a DatasetDict, take the split named like the role (train, ...)."""
    from datasets import DatasetDict, load_from_disk

    if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        raise LlmkitError(
            f"{key}: {path} is a folder but not a saved dataset (no dataset_info.json or dataset_dict.json); "
            f"give a file or a Dataset.save_to_disk folder"
        )
    loaded = load_from_disk(str(path))
    if isinstance(loaded, DatasetDict):
        role = key.rsplit(".", 1)[-1]
        if role not in loaded:
            raise LlmkitError(
                f"{key}: {path} holds splits {', '.join(loaded)} but no '{role}' split; "
                f"save that split or point {key} at a single-split folder"
            )
        loaded = loaded[role]
    if len(loaded) == 0:
        raise LlmkitError(f"{key}: {path} has no rows")
    return loaded


def load_splits(data: dict[str, Any], seed: int) -> dict[str, Split]:
    """Read train/validation/test; carve a seeded validation split from train when none is given."""
    splits: dict[str, Split] = {}
    for role in SPLIT_ROLES:
        value = data.get(role)
        if value:
            key = f"data.{role}"
            path = resolve_data_path(value, key)
            splits[role] = Split(role, read_table(path, key, data.get("txt_unit", "line")), path)
    if data.get("dataset") and "train" not in splits:  # a file for data.train means files only
        splits = read_dataset_roles(data, splits)
    train = splits["train"]
    max_train = data.get("max_train_samples")
    if "validation" not in splits and data["validation_split"] > 0:
        if len(train.dataset) < 2:
            raise LlmkitError(
                f"{train.origin} has {len(train.dataset)} row; give more rows or set data.validation"
            )
        # Split row numbers, not rows, so that messages can still name each row's place in the file.
        from datasets import Dataset

        numbers = Dataset.from_dict({"row": range(len(train.dataset))})
        parts = numbers.train_test_split(test_size=data["validation_split"], seed=seed)
        validation = Split(
            "validation", train.dataset, train.path, carved=True, key=train.key or "data.train", hub=train.hub
        )
        validation.keep_rows(parts["test"]["row"])
        splits["validation"] = validation
        train.keep_rows(parts["train"]["row"])
    if max_train:
        train.keep_rows(range(min(max_train, len(train.dataset))))
    max_eval = data.get("max_eval_samples")
    for role in ("validation", "test"):
        if max_eval and role in splits:
            split = splits[role]
            split.keep_rows(range(min(max_eval, len(split.dataset))))
    return splits


def read_dataset_roles(data: dict[str, Any], files: dict[str, Split]) -> dict[str, Split]:
    """The roles without a file read from ``data.dataset`` (a hub id or dataset folder: llmkit.hub_data)."""
    from llmkit.hub_data import read_dataset_splits

    missing = [role for role in SPLIT_ROLES if role not in files]
    read = {
        role: Split(role, rows.dataset, rows.file, key="data.dataset", hub=rows.source)
        for role, rows in read_dataset_splits(data, missing).items()
    }
    return {role: (files.get(role) or read[role]) for role in SPLIT_ROLES if role in files or role in read}


def require_columns(split: Split, columns: dict[str, str | None]) -> None:
    """Each recipe key (e.g. data.text) must name a column of the split; list the ones that exist."""
    present = split.dataset.column_names
    for recipe_key, column in columns.items():
        if column is None:
            continue
        if column not in present:
            raise LlmkitError(
                f"{split.origin}: no column '{column}' (set by data.{recipe_key}); "
                f"columns are: {', '.join(present)}; set data.{recipe_key}=<one of them>"
            )


def require_text(split: Split, column: str, recipe_key: str, also: str = "") -> None:
    """Every value of a text column must be a non-empty string; ``also`` adds another way out."""
    for index, value in enumerate(split.dataset[column]):
        if not isinstance(value, str) or not value.strip():
            shown = "empty" if value is None or (isinstance(value, str)) else f"not text ({value!r})"
            raise LlmkitError(
                f"{split.origin} {split.where(index)}: column '{column}' (data.{recipe_key}) is {shown}; "
                f"fill in or remove that row{also}"
            )
