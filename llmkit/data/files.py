"""Reading data files into ``datasets.Dataset`` splits, with errors that name the file, row and column.

Supported: CSV, TSV, JSON (a list of records or JSON lines), JSONL, Parquet, plain text (one example a
line; a paragraph or the whole file with a task's ``data.txt_unit``), the CoNLL column format (``.conll``,
or a ``.txt`` read with ``data.txt_unit: conll``: a token and its tags a line, a blank line between
sentences) and a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``. Relative paths are relative to the current
directory; ``sample:NAME`` points into the samples shipped with llmkit. A Hugging Face dataset
(``data.dataset``: a hub id or a dataset folder) is read by :mod:`llmkit.data.hub`.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError
from llmkit.core.paths import SAMPLES_DIR

if TYPE_CHECKING:
    from datasets import Dataset

    from llmkit.data.hub import HubSource

SAMPLE_PREFIX = "sample:"
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".conll")
SPLIT_ROLES = ("train", "validation", "test")
#: The data key that keeps only the first N rows of each split.
SAMPLE_LIMITS = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_test_samples"}
TXT_UNITS = ("line", "paragraph", "file")  # what one example of a .txt file is (a task's data.txt_unit)
#: The data.txt_unit that reads a .txt file as CoNLL columns (token classification's default).
CONLL_UNIT = "conll"
#: A CoNLL line that separates documents rather than holding a token.
CONLL_DOCSTART = "-DOCSTART-"
PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")  # a blank line (or several) between paragraphs
ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark Excel's "CSV UTF-8" writes
MAX_FIELD_CHARS = 2**31 - 1  # csv's default limit (131,072 characters) refuses long documents
#: The files data.streaming reads lazily (the others are read whole, or hold one example per file).
STREAM_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")
#: Rows of a stream read, checked and encoded together; the first chunk is checked before training.
STREAM_CHUNK_ROWS = 1000
#: Validation rows held out from the head of a stream when there is no data.validation file.
STREAM_EVAL_ROWS = 1000


@dataclass(frozen=True)
class ConllFormat:
    """How a CoNLL file becomes rows: the column names its tokens and tags get, and which tag column."""

    tokens: str = "tokens"
    tags: str = "ner_tags"
    #: The 1-based column that holds the tags (the token is column 1); None: the last column.
    tag_column: int | None = None


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
    #: The line each of the file's rows starts on (1-based; text formats), so that blank lines and
    #: multi-line CSV fields do not shift the line a message names; None: count rows.
    lines: list[int] | None = None
    #: The dataset split the rows came from (data.dataset); None for files. ``path`` is then a cache file.
    hub: HubSource | None = None
    #: data.streaming: the file read lazily as training goes; ``dataset`` then holds its first rows only
    #: (checked before training, shown by `llmkit validate`, used for the report's samples).
    stream: TextStream | None = None

    @property
    def location(self) -> str:
        """The file, or the dataset and split, that holds the rows."""
        return self.hub.describe() if self.hub else str(self.path)

    @property
    def size(self) -> int | str:
        """Rows, for logs and reports: a count, or ``"streamed"`` for a stream (its length is unknown)."""
        return "streamed" if self.stream is not None else len(self.dataset)

    @property
    def origin(self) -> str:
        return f"{self.key or 'data.' + self.role} {self.location}"

    def where(self, index: int) -> str:
        """Human position of row ``index``: the line of a text file, else the row (of a file or split)."""
        if self.file_rows is not None:
            index = self.file_rows[index]
        if self.hub is not None:
            return f"row {index + 1}"
        if self.lines is not None:
            return f"line {self.lines[index]}"
        suffix = self.path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return f"line {index + 2}"  # 1-based, after the header
        if suffix in (".jsonl", ".txt"):
            return f"line {index + 1}"
        return f"row {index + 1}"

    def keep_rows(self, indices: Any) -> None:
        """Keep only the rows at ``indices`` (in that order), remembering where each came from."""
        import numpy as np

        picked = indices if isinstance(indices, range) else None  # a range stays a slice, with no mapping
        indices = list(indices)
        self.file_rows = [self.file_rows[i] for i in indices] if self.file_rows is not None else indices
        # an array, not a list: datasets fingerprints the argument, and pickling a million ints takes seconds
        self.dataset = self.dataset.select(picked or np.asarray(indices, dtype=np.int64))

    def add_variants(self, sources: list[int], column: str, texts: list[str]) -> None:
        """Append copies of the rows at ``sources`` with ``column`` set to ``texts`` (one per copy); each
        copy points at its source's file row, so a message about it names the row it was made from."""
        import numpy as np
        from datasets import Dataset, concatenate_datasets

        if not sources:
            return
        values = self.dataset.select(np.asarray(sources, dtype=np.int64)).to_dict()
        values[column] = texts
        copies = Dataset.from_dict(values, features=self.dataset.features)
        rows = self.file_rows if self.file_rows is not None else list(range(len(self.dataset)))
        self.file_rows = rows + [rows[i] for i in sources]
        self.dataset = concatenate_datasets([self.dataset, copies])


@dataclass(frozen=True)
class TextStream:
    """A data file read lazily, one row at a time (``data.streaming``): a corpus bigger than memory.

    Rows are the rows :func:`read_split` would read (a .txt line or paragraph, a JSON line, a CSV/TSV
    row), each with the line it starts on. ``skip`` rows at the head are held out (the validation split);
    ``limit`` caps the rows after them (``data.max_train_samples``).
    """

    path: Path
    key: str
    txt_unit: str = "line"
    columns: tuple[str, ...] | None = None
    skip: int = 0
    limit: int | None = None

    def records(self) -> Iterator[tuple[dict[str, Any], int]]:
        """The rows after ``skip`` (at most ``limit``), from the file's start, each with its line."""
        stop = None if self.limit is None else self.skip + self.limit
        return islice(self._all_records(), self.skip, stop)

    def _all_records(self) -> Iterator[tuple[dict[str, Any], int]]:
        suffix = self.path.suffix.lower()
        newline = "" if suffix in (".csv", ".tsv") else None  # csv reads quoted line breaks itself
        try:
            with self.path.open(encoding=ENCODING, newline=newline) as handle:
                if suffix == ".jsonl":
                    yield from _json_line_records(handle, self.path, self.key)
                elif suffix in (".csv", ".tsv"):
                    delimiter = "\t" if suffix == ".tsv" else ","
                    columns = list(self.columns) if self.columns is not None else None
                    yield from _delimited_records(handle, self.path, self.key, delimiter, columns)
                else:
                    yield from _text_unit_records(handle, self.txt_unit)
        except UnicodeDecodeError:
            raise LlmkitError(
                f"{self.key}: {self.path} is not valid UTF-8; re-save the file as UTF-8"
            ) from None
        except OSError as exc:
            raise LlmkitError(f"{self.key}: cannot read {self.path} ({exc.strerror or exc})") from None

    def chunks(self, size: int = STREAM_CHUNK_ROWS, role: str = "train") -> Iterator[Split]:
        """The rows as in-memory splits of ``size`` rows, checked and encoded as a file's rows are."""
        rows = self.records()
        while block := list(islice(rows, size)):
            records, lines = [record for record, _ in block], [line for _, line in block]
            dataset = _columns_to_dataset(columns_of(records), self.path, self.key, lines)
            yield Split(role, dataset, self.path, key=self.key, lines=lines)

    def head(self, rows: int, role: str = "train") -> Split | None:
        """The first ``rows`` rows as a split (None when the stream has none)."""
        return next(self.chunks(rows, role), None)

    def texts(self, column: str = "text") -> Iterator[str]:
        """Every text of ``column``, read lazily (rows without text in it are passed over)."""
        for record, _ in self.records():
            value = record.get(column)
            if isinstance(value, str) and value.strip():
                yield value

    def signature(self) -> str:
        """What identifies the corpus for a resumed run: the file's size and time (hashing gigabytes
        would take minutes), with the rows held out and the cap."""
        stat = self.path.stat()
        return f"{stat.st_size} bytes, mtime {stat.st_mtime_ns}, skip {self.skip}, limit {self.limit}"


def _text_unit_records(handle: Any, unit: str) -> Iterator[tuple[dict[str, str], int]]:
    """A .txt file's examples one at a time (``line`` or ``paragraph``), as :func:`text_units` splits the
    whole text."""
    if unit == "line":
        number = 0
        for line in handle:
            for part in line.splitlines():  # as str.splitlines splits the whole text (form feeds too)
                number += 1
                if part.strip():
                    yield {"text": part}, number
        return
    block: list[str] = []
    start = 0
    for number, line in enumerate(handle, start=1):
        if line.strip(" \t\n"):
            start = start if block else number
            block.append(line)
            continue
        if block and (text := "".join(block).strip("\n")).strip():
            yield {"text": text}, start
        block = []
    if block and (text := "".join(block).strip("\n")).strip():
        yield {"text": text}, start


def stream_texts(split: Split, column: str = "text") -> Iterator[str]:
    """The texts of a split's column: read lazily from a stream, else from the rows in memory.

    For tokenizer training on a corpus bigger than memory (``train_new_from_iterator`` takes an
    iterator); :func:`sample_texts` keeps a sample of it.
    """
    if split.stream is not None:
        yield from split.stream.texts(column)
        return
    for value in column_values(split.dataset, column):
        if isinstance(value, str) and value.strip():
            yield value


def sample_texts(texts: Iterable[str], size: int, seed: int | None = None) -> list[str]:
    """``size`` texts: the first ones (``seed`` None), or a uniform sample of all of them (reservoir
    sampling with ``seed``, which reads every text once and keeps only ``size`` in memory)."""
    if seed is None:
        return list(islice(texts, size))
    generator = random.Random(seed)
    kept: list[str] = []
    for seen, text in enumerate(texts):
        if seen < size:
            kept.append(text)
        elif (slot := generator.randrange(seen + 1)) < size:
            kept[slot] = text
    return kept


def column_values(dataset: Dataset, column: str) -> list[Any]:
    """A column's values as a list, read in one go.

    Iterating ``dataset[column]`` fetches and formats one row at a time, and slicing a split that picks
    its rows (carving, subsets) gathers them one by one too: checks of a million-row CSV took minutes that
    way. An Arrow ``take`` of the picked rows reads the column at once.
    """
    values = _arrow_column(dataset, column)
    return dataset[column][:] if values is None else values.to_pylist()


def column_array(dataset: Dataset, column: str) -> Any:
    """The column as Arrow values in row order (a list where its rows need formatting), to rebuild a split."""
    values = _arrow_column(dataset, column)
    return column_values(dataset, column) if values is None else values


def column_lengths(dataset: Dataset, column: str) -> list[int]:
    """The length of each list in a column (e.g. tokens per encoded example), without building the lists."""
    import pyarrow.compute as pc

    values = _arrow_column(dataset, column)
    if values is None:
        return [len(value) for value in column_values(dataset, column)]
    return pc.list_value_length(values).to_pylist()


def _arrow_column(dataset: Dataset, column: str) -> Any:
    """The column's Arrow values in the dataset's row order; None when its rows need formatting."""
    from datasets.features.features import require_decoding

    if dataset.format["type"] is not None or require_decoding(dataset.features[column]):
        return None
    values = dataset.data.column(column)
    indices = getattr(dataset, "_indices", None)  # the rows a select() picked (datasets keeps no public name)
    return values if indices is None else values.take(indices.column(0))


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
    return [part for part, _ in text_units(text, unit)]


def text_units(text: str, unit: str = "line") -> list[tuple[str, int]]:
    """:func:`split_text_file`'s examples, each with the (1-based) line it starts on."""
    if unit == "line":
        return [(line, number) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if unit == "paragraph":
        return _paragraph_units(text)
    if unit == "file":
        return [(text, 1)] if text.strip() else []
    raise LlmkitError(f"data.txt_unit must be one of {', '.join(TXT_UNITS)}, got {unit!r}")


def _paragraph_units(text: str) -> list[tuple[str, int]]:
    """Blank-line separated paragraphs, each with the line its text starts on."""
    bounds = [0, *(edge for match in PARAGRAPH_BREAK.finditer(text) for edge in match.span()), len(text)]
    units, line, counted = [], 1, 0
    for start, end in zip(bounds[::2], bounds[1::2], strict=True):
        part = text[start:end]
        if part.strip():
            begins = start + len(part) - len(part.lstrip("\n"))
            line += text.count("\n", counted, begins)  # counted once: the file is read front to back
            counted = begins
            units.append((part.strip("\n"), line))
    return units


def read_table(path: Path, key: str, txt_unit: str = "line", columns: list[str] | None = None) -> Dataset:
    """Read one data file or saved-dataset folder into a Dataset; every failure is a LlmkitError.

    ``txt_unit`` says what one example of a .txt file is (see :func:`split_text_file`); ``columns`` names
    the columns of a headerless CSV/TSV (``data.columns``).
    """
    return read_split("test", path, key, txt_unit, columns=columns).dataset


def read_split(
    role: str,
    path: Path,
    key: str,
    txt_unit: str = "line",
    conll: ConllFormat | None = None,
    columns: list[str] | None = None,
) -> Split:
    """:func:`read_table` as a Split that knows the file line of each row (for messages).

    ``conll`` names the columns a CoNLL file's rows get (default: tokens, ner_tags, the last tag column);
    ``columns`` names the columns of a headerless CSV/TSV (``data.columns``).
    """
    if not path.exists():
        raise LlmkitError(f"{key}: file {path} does not exist; check the path (relative to {Path.cwd()})")
    if path.is_dir():
        return Split(role, _read_saved_dataset(path, key), path, key=key)
    values, lines = _read_columns(path, key, txt_unit, conll or ConllFormat(), columns)
    return Split(role, _columns_to_dataset(values, path, key, lines), path, key=key, lines=lines)


def _read_columns(
    path: Path, key: str, txt_unit: str, conll: ConllFormat, columns: list[str] | None = None
) -> tuple[dict[str, list[Any]], list[int] | None]:
    """A data file's columns (name -> a value per row), and the line each row starts on where the format
    has lines. A CSV's cells go straight into their columns: a dict per row costs a million-row file
    hundreds of megabytes."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise LlmkitError(
            f"{key}: {path} has unsupported extension '{suffix or '(none)'}'; "
            f"use one of {', '.join(TABLE_SUFFIXES)} or a save_to_disk folder"
        )
    if columns is not None and suffix not in (".csv", ".tsv"):
        raise LlmkitError(
            f"{key}: data.columns names the columns of a headerless CSV/TSV, but {path} is a {suffix} file "
            f"whose columns have names; remove data.columns"
        )
    try:
        if path.stat().st_size == 0:
            raise LlmkitError(f"{key}: {path} is empty; give a file with a header and rows")
        if suffix in (".csv", ".tsv"):
            values, lines = _read_delimited(path, key, "\t" if suffix == ".tsv" else ",", columns)
            rows = len(lines)
        else:
            records, lines = _read_records(path, key, suffix, txt_unit, conll)
            values, rows = columns_of(records), len(records)
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
    if not rows:
        raise LlmkitError(f"{key}: {path} has no rows; give a file with at least one example")
    return values, lines


def _read_records(
    path: Path, key: str, suffix: str, txt_unit: str, conll: ConllFormat
) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The records of a JSON (lines), CoNLL, text or Parquet file, and each one's line where it has one."""
    if suffix == ".jsonl":
        return _read_json_lines(path, key)
    if suffix == ".json":
        return _read_json(path, key)
    if suffix == ".conll" or (suffix == ".txt" and txt_unit == CONLL_UNIT):
        return read_conll(path, key, conll)
    if suffix == ".txt":
        units = text_units(path.read_text(encoding=ENCODING), txt_unit)
        return [{"text": part} for part, _ in units], [line for _, line in units]
    import pandas as pd

    return pd.read_parquet(path).to_dict(orient="records"), None


def read_conll(path: Path, key: str, conll: ConllFormat) -> tuple[list[dict[str, Any]], list[int]]:
    """CoNLL columns: ``token tag...`` a line (space or tab separated), a blank line ends a sentence,
    ``-DOCSTART-`` lines are skipped. Every token line must have as many columns as the file's first one.

    Returns one record per sentence, {tokens: [...], tags: [...]}, and the line each sentence starts on.
    """
    records: list[dict[str, Any]] = []
    starts: list[int] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    with path.open(encoding=ENCODING) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0] == CONLL_DOCSTART:
                if tokens:
                    records.append({conll.tokens: tokens, conll.tags: tags})
                    tokens, tags = [], []
                continue
            if width is None:
                width = len(fields)
                column = _conll_tag_column(path, key, width, conll.tag_column)
            if len(fields) != width:
                raise LlmkitError(
                    f"{key}: {path} line {number}: {len(fields)} columns where the file's first token line "
                    f"has {width}; give every token line the same columns (a token with a space breaks them)"
                )
            if not tokens:
                starts.append(number)
            tokens.append(fields[0])
            tags.append(fields[column])
    if tokens:
        records.append({conll.tokens: tokens, conll.tags: tags})
    return records, starts


def _conll_tag_column(path: Path, key: str, width: int, tag_column: int | None) -> int:
    """The 0-based index of the tag column (data.tag_column is 1-based; the token is column 1)."""
    if width < 2:
        raise LlmkitError(
            f"{key}: {path}: the first token line has 1 column; CoNLL lines are 'token tag' "
            f"(or 'token POS chunk tag'), separated by spaces or tabs"
        )
    if tag_column is None:
        return width - 1
    if not 2 <= tag_column <= width:
        raise LlmkitError(
            f"{key}: {path}: data.tag_column={tag_column}, but the lines have {width} columns "
            f"(the token is column 1); set data.tag_column to a number from 2 to {width}"
        )
    return tag_column - 1


def columns_of(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every key of any record is a column (in first-seen order); a record without it holds null there.

    ``Dataset.from_list`` alone takes the columns of the first record and drops the rest.
    """
    names = dict.fromkeys(name for record in records for name in record)
    return {name: [record.get(name) for record in records] for name in names}


def _columns_to_dataset(
    values: dict[str, list[Any]], path: Path, key: str, lines: list[int] | None = None
) -> Dataset:
    """The columns as a Dataset; a column of mixed types is an error naming the first odd row."""
    from datasets import Dataset

    try:
        return Dataset.from_dict(values)
    except Exception as exc:
        for column, cells in values.items():
            kinds = sorted({type(cell).__name__ for cell in cells if cell is not None})
            if len(kinds) > 1:
                first = next(type(cell) for cell in cells if cell is not None)
                index = next(
                    i for i, cell in enumerate(cells) if cell is not None and type(cell) is not first
                )
                where = f"line {lines[index]}" if lines else f"row {index + 1}"
                raise LlmkitError(
                    f"{key}: {path} column '{column}' mixes types ({', '.join(kinds)}): {where} holds "
                    f"{shown_value(cells[index])} where the rows before hold a {first.__name__}; make each "
                    f"column one type"
                ) from None
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(f"{key}: cannot read {path} as a table ({first_line}); check the file") from None


def shown_value(value: Any, limit: int = 40) -> str:
    """A cell's value for an error message: its repr, cut to ``limit`` characters."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _read_delimited(
    path: Path, key: str, delimiter: str, columns: list[str] | None = None
) -> tuple[dict[str, list[str]], list[int]]:
    """CSV/TSV with a header (or the names in ``columns``), quoted as pandas writes both; every cell stays
    text (IDs keep their zeros): a task that reads a column as numbers converts it (numbers_from_text).

    With ``columns`` a first row that repeats those names is a header after all, and is skipped.
    Returns the cells column by column, and the line each row starts on.
    """
    with path.open(encoding=ENCODING, newline="") as handle:
        header, rows = _delimited_rows(handle, path, key, delimiter, columns)
        cells: list[list[str]] = [[] for _ in header]
        lines = []
        for row, start in rows:
            for column, cell in zip(cells, row, strict=True):
                column.append(cell)
            lines.append(start)
    return dict(zip(header, cells, strict=True)), lines


def _delimited_records(
    handle: Any, path: Path, key: str, delimiter: str, columns: list[str] | None = None
) -> Iterator[tuple[dict[str, str], int]]:
    """:func:`_read_delimited`'s rows one at a time, as dicts, each with the line it starts on."""
    header, rows = _delimited_rows(handle, path, key, delimiter, columns)
    for row, start in rows:
        yield dict(zip(header, row, strict=True)), start


def _delimited_rows(
    handle: Any, path: Path, key: str, delimiter: str, columns: list[str] | None = None
) -> tuple[list[str], Iterator[tuple[list[str], int]]]:
    """The column names, and each row (as many fields as names) with the line it starts on."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))  # long documents are fine
    rows = _rows_with_lines(csv.reader(handle, delimiter=delimiter))
    if columns is None:
        header, where = _header(next(rows, (None, 0))[0], path, key), "the header has"
    else:
        header, where = _check_column_names(columns), "data.columns names"

    def checked() -> Iterator[tuple[list[str], int]]:
        started = False
        for row, start in rows:
            if columns is not None and not started and [cell.strip() for cell in row] == header:
                continue  # a header that repeats data.columns
            if len(row) != len(header):
                raise LlmkitError(
                    f"{key}: {path} line {start}: {len(row)} fields where {where} "
                    f"{len(header)}; quote fields that contain '{delimiter}' or fix the row"
                )
            started = True
            yield row, start

    return header, checked()


def _rows_with_lines(reader: Any) -> Iterator[tuple[list[str], int]]:
    """Each non-empty row with the line it starts on (a quoted field may span lines)."""
    start = 1
    for row in reader:
        if row:
            yield row, start
        start = reader.line_num + 1


def _header(header: list[str] | None, path: Path, key: str) -> list[str]:
    """The first row as column names: present, and each name once."""
    if not header or not any(h.strip() for h in header):
        raise LlmkitError(f"{key}: {path} is empty; give a file with a header and rows")
    header = [h.strip() for h in header]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        hint = headerless_hint(header) or "give columns unique names"
        raise LlmkitError(f"{key}: {path} header repeats column {duplicates[0]!r}; {hint}")
    return header


def _check_column_names(columns: Any) -> list[str]:
    """``data.columns``: a list of distinct, non-empty names."""
    if (
        not isinstance(columns, list)
        or not columns
        or not all(isinstance(name, str) and name.strip() for name in columns)
    ):
        raise LlmkitError(
            f"data.columns must be a list of column names, e.g. [label, title, text]; got {columns!r}"
        )
    names = [name.strip() for name in columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LlmkitError(f"data.columns names column {repeated[0]!r} twice; give each column its own name")
    return names


def looks_like_data(names: list[str]) -> bool:
    """Column names that read like a row of data: a number, or a phrase of several words."""

    def data_like(name: str) -> bool:
        try:
            float(name)
            return True
        except ValueError:
            return len(name.split()) > 3 or len(name) > 40

    return any(data_like(name) for name in names)


def headerless_hint(names: list[str]) -> str:
    """The advice for a file whose first row looks like data ('' when it looks like a header)."""
    if not looks_like_data(names):
        return ""
    example = ", ".join(f"col{i + 1}" for i in range(len(names)))
    return (
        f"the file looks headerless (its first line is data, not column names); name its {len(names)} "
        f"columns with data.columns, e.g. data.columns=[{example}]"
    )


def numbers_from_text(split: Split, column: str) -> None:
    """Type a CSV/TSV column a task reads as numbers, like pandas: ints if every cell is an integer,
    else floats if every cell is a number; otherwise (or for typed formats) it stays as it is."""
    if split.path.suffix.lower() not in (".csv", ".tsv") or column not in split.dataset.column_names:
        return
    values = column_values(split.dataset, column)
    if not all(isinstance(value, str) for value in values):
        return
    for kind in (int, float):
        try:
            typed = [kind(value) for value in values]
        except ValueError:
            continue
        from datasets import Dataset

        # A CSV split holds flat text columns only: rebuilding it loses nothing (and shows no progress bar).
        # The other columns go over as Arrow arrays: a million texts need not become Python strings.
        columns = {
            name: typed if name == column else column_array(split.dataset, name)
            for name in split.dataset.column_names
        }
        split.dataset = Dataset.from_dict(columns)
        return


def _read_json_lines(path: Path, key: str) -> tuple[list[dict[str, Any]], list[int]]:
    with path.open(encoding=ENCODING) as handle:
        rows = list(_json_line_records(handle, path, key))
    return [record for record, _ in rows], [line for _, line in rows]


def _json_line_records(handle: Any, path: Path, key: str) -> Iterator[tuple[dict[str, Any], int]]:
    """A JSON lines file's objects one at a time, each with its line (blank lines are skipped)."""
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
        yield record, number


def _read_json(path: Path, key: str) -> tuple[list[dict[str, Any]], list[int] | None]:
    """A JSON list of records, a {"data": [...]} wrapper, a dict of columns, or JSON lines."""
    text = path.read_text(encoding=ENCODING)
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
        return [dict(zip(names, values, strict=True)) for values in zip(*payload.values(), strict=True)], None
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        return payload, None
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
    """Read train/validation/test; carve a seeded validation split from train when none is given.

    With ``data.streaming`` the training file is opened as a stream instead (:func:`load_stream_splits`).
    """
    limits = sample_limits(data)
    if data.get("streaming"):
        return load_stream_splits(data, limits)
    splits = read_files(data, SPLIT_ROLES)
    if data.get("dataset") and "train" not in splits:  # a file for data.train means files only
        splits = read_dataset_roles(data, splits)
    train = splits["train"]
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
            "validation",
            train.dataset,
            train.path,
            carved=True,
            key=train.key or "data.train",
            lines=train.lines,
            hub=train.hub,
        )
        validation.keep_rows(column_values(parts["test"], "row"))
        splits["validation"] = validation
        train.keep_rows(column_values(parts["train"], "row"))
    return keep_first_rows(splits, limits)


def read_files(data: dict[str, Any], roles: tuple[str, ...]) -> dict[str, Split]:
    """The splits of ``roles`` that the recipe names a file for."""
    splits: dict[str, Split] = {}
    for role in roles:
        value = data.get(role)
        if value:
            key = f"data.{role}"
            path = resolve_data_path(value, key)
            splits[role] = read_split(
                role, path, key, data.get("txt_unit", "line"), conll_format(data), data.get("columns")
            )
    return splits


def sample_limits(data: dict[str, Any]) -> dict[str, int]:
    """The row limit of each role that has one (data.max_train_samples, ...), checked."""
    limits = {}
    for role, limit_key in SAMPLE_LIMITS.items():
        limit = data.get(limit_key)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise LlmkitError(f"data.{limit_key} must be a positive number of rows or null, got {limit!r}")
        if limit:
            limits[role] = limit
    return limits


def keep_first_rows(splits: dict[str, Split], limits: dict[str, int]) -> dict[str, Split]:
    """Each limit cuts its own split: the test split stays whole unless data.max_test_samples says so."""
    for role, limit in limits.items():
        if role in splits and splits[role].stream is None:
            splits[role].keep_rows(range(min(limit, len(splits[role].dataset))))
    return splits


def load_stream_splits(data: dict[str, Any], limits: dict[str, int]) -> dict[str, Split]:
    """``data.streaming``: data.train is read lazily as training goes, validation and test files whole.

    Without a data.validation file, validation is the head of the stream: its first
    ``data.max_eval_samples`` rows (default :data:`STREAM_EVAL_ROWS`), which training then skips
    (a stream has no length to carve a share of). The train split holds the first
    :data:`STREAM_CHUNK_ROWS` rows after them, for the checks before training; its ``stream`` has the rest.
    """
    stream = open_stream(data)
    splits = read_files(data, ("validation", "test"))
    if "validation" not in splits and data["validation_split"] > 0:
        held_out = limits.get("validation", STREAM_EVAL_ROWS)
        validation = stream.head(held_out, "validation")
        if validation is None:
            raise LlmkitError(f"{stream.key} {stream.path} has no rows; give a file with examples")
        validation.carved = True
        splits["validation"] = validation
        stream = replace(stream, skip=held_out)
    stream = replace(stream, limit=limits.get("train"))
    train = stream.head(STREAM_CHUNK_ROWS)
    if train is None:
        raise LlmkitError(
            f"{stream.key} {stream.path} has no rows left for training after the {stream.skip} held out for "
            f"validation; give a longer file, a data.validation file, or a smaller data.max_eval_samples"
        )
    train.stream = stream
    return keep_first_rows({"train": train, **splits}, limits)


def open_stream(data: dict[str, Any]) -> TextStream:
    """data.train as a :class:`TextStream`: a file of a streamable kind (checked before any row is read)."""
    key = "data.train"
    if not data.get("train"):
        raise LlmkitError(
            f"data.streaming reads the data.train file lazily; give data.train (one of "
            f"{', '.join(STREAM_SUFFIXES)}), or set data.streaming=false to read data.dataset"
        )
    path = resolve_data_path(data["train"], key)
    if not path.exists():
        raise LlmkitError(f"{key}: file {path} does not exist; check the path (relative to {Path.cwd()})")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in STREAM_SUFFIXES:
        raise LlmkitError(
            f"{key}: {path} cannot be streamed (data.streaming reads {', '.join(STREAM_SUFFIXES)} files); "
            f"convert it to JSON lines, or set data.streaming=false to read it whole"
        )
    columns = data.get("columns")
    if columns is not None and suffix not in (".csv", ".tsv"):
        raise LlmkitError(
            f"{key}: data.columns names the columns of a headerless CSV/TSV, but {path} is a {suffix} file "
            f"whose columns have names; remove data.columns"
        )
    unit = data.get("txt_unit", "line")
    if suffix == ".txt" and unit not in ("line", "paragraph"):
        raise LlmkitError(
            f"{key}: data.txt_unit={unit!r} cannot be streamed (it reads {path} as one example or as CoNLL "
            f"columns); set data.txt_unit to line or paragraph, or data.streaming=false"
        )
    if path.stat().st_size == 0:
        raise LlmkitError(f"{key}: {path} is empty; give a file with examples")
    return TextStream(path, key, unit, tuple(columns) if columns is not None else None)


def conll_format(data: dict[str, Any]) -> ConllFormat:
    """The CoNLL reading settings of a task's data section (token classification sets them)."""
    tag_column = data.get("tag_column")
    if tag_column is not None and (not isinstance(tag_column, int) or isinstance(tag_column, bool)):
        raise LlmkitError(
            f"data.tag_column must be a column number (the token is 1) or null, got {tag_column!r}"
        )
    return ConllFormat(data.get("tokens", "tokens"), data.get("tags", "ner_tags"), tag_column)


def read_dataset_roles(data: dict[str, Any], files: dict[str, Split]) -> dict[str, Split]:
    """The roles without a file read from ``data.dataset`` (a hub id or dataset folder: llmkit.data.hub)."""
    from llmkit.data.hub import read_dataset_splits

    missing = [role for role in SPLIT_ROLES if role not in files]
    read = {
        role: Split(role, rows.dataset, rows.file, key="data.dataset", hub=rows.source)
        for role, rows in read_dataset_splits(data, missing).items()
    }
    return {role: (files.get(role) or read[role]) for role in SPLIT_ROLES if role in files or role in read}


def require_columns(split: Split, columns: dict[str, str | None], also: str = "") -> None:
    """Each recipe key (e.g. data.text) must name a column of the split; list the ones that exist (``also``:
    another way out, added to the error)."""
    present = split.dataset.column_names
    for recipe_key, column in columns.items():
        if column is None:
            continue
        if column not in present:
            headerless = split.path.suffix.lower() in (".csv", ".tsv") and split.hub is None
            if headerless and (hint := headerless_hint(present)):
                raise LlmkitError(f"{split.origin}: no column '{column}' (set by data.{recipe_key}); {hint}")
            raise LlmkitError(
                f"{split.origin}: no column '{column}' (set by data.{recipe_key}); "
                f"columns are: {', '.join(present)}; set data.{recipe_key}=<one of them>"
                + (f", {also}" if also else "")
            )


def require_text(
    split: Split,
    column: str,
    recipe_key: str,
    also: str = "",
    lists: str = "set data.join_lists=' ' to join each list into one text",
) -> None:
    """Every value of a text column must be a non-empty string; ``also`` adds another way out, ``lists``
    says what to do with a list of strings."""
    for index, value in enumerate(column_values(split.dataset, column)):
        if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
            raise LlmkitError(
                f"{split.origin} {split.where(index)}: column '{column}' (data.{recipe_key}) is a list of "
                f"{len(value)} strings, not text; {lists}"
            )
        if not isinstance(value, str) or not value.strip():
            shown = "empty" if value is None or (isinstance(value, str)) else f"not text ({value!r})"
            raise LlmkitError(
                f"{split.origin} {split.where(index)}: column '{column}' (data.{recipe_key}) is {shown}; "
                f"fill in or remove that row{also}"
            )


def join_lists(split: Split, column: str, separator: str | None) -> None:
    """``data.join_lists``: a text column's lists of strings (e.g. a document as its sentences) become one
    text each, joined by ``separator``; None leaves them (require_text then says what to do)."""
    if separator is None or column not in split.dataset.column_names:
        return
    if not isinstance(separator, str):
        raise LlmkitError(
            f"data.join_lists must be a string to join list items with, e.g. ' '; got {separator!r}"
        )
    values = column_values(split.dataset, column)
    if not any(isinstance(value, list) for value in values):
        return
    joined = [
        separator.join(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value
        for value in values
    ]
    _replace_column(split, column, joined)


def explode(split: Split, column: str, recipe_key: str) -> None:
    """``data.explode``: a row whose ``column`` holds a list becomes one row per item (e.g. one training
    example per reference summary); messages still name the row's line in the file."""
    values = column_values(split.dataset, column)
    if not any(isinstance(value, list) for value in values):
        return
    rows, items = [], []
    for index, value in enumerate(values):
        parts = value if isinstance(value, list) else [value]
        if not parts:
            raise LlmkitError(
                f"{split.origin} {split.where(index)}: column '{column}' (data.{recipe_key}) is an empty "
                f"list; give at least one item or remove that row"
            )
        rows.extend([index] * len(parts))
        items.extend(parts)
    split.keep_rows(rows)
    _replace_column(split, column, items)


def _replace_column(split: Split, column: str, values: list[Any]) -> None:
    """A column with new values, in its place among the others (their types, e.g. ClassLabel, kept)."""
    order = split.dataset.column_names
    split.dataset = split.dataset.remove_columns(column).add_column(column, values).select_columns(order)


def warn_stale_validation(recipe_data: Any, data: Any, source: str) -> None:
    """One stderr line when ``data.train`` is overridden but ``data.validation`` is still the recipe's own
    file: rows of one dataset would be judged against another's (keys that only make sense together)."""
    if not isinstance(recipe_data, dict) or not isinstance(data, dict):
        return
    validation = recipe_data.get("validation")
    if (
        not validation
        or data.get("train") == recipe_data.get("train")
        or data.get("validation") != validation
    ):
        return
    from llmkit.core.progress import log

    log(
        f"warning: data.train is overridden ({data.get('train')}) but data.validation is still the file of "
        f"recipe {source} ({validation}); override data.validation too, or set data.validation=null to "
        f"carve validation rows from the new data.train"
    )
