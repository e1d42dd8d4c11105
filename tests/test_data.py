"""Every supported data format loads the same rows; splits are carved reproducibly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmkit.core.errors import LlmkitError
from llmkit.data.files import load_splits, read_table, resolve_data_path
from llmkit.data.section import COMMON_DATA_DEFAULTS
from tests.conftest import write_csv

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
    """CSV/TSV cells have no type: they stay text, and a task types the columns it needs as numbers."""
    dataset = read_table(write_format(tmp_path, fmt), "data.train")
    as_text = fmt in ("csv", "tsv")
    assert dataset.to_list() == [
        {**row, "label": str(row["label"]) if as_text else row["label"]} for row in ROWS
    ]


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
        LlmkitError, match=r"no shipped sample 'sample:nope\.csv'; available: .*sentiment/train\.csv"
    ):
        resolve_data_path("sample:nope.csv", "data.train")


def test_max_eval_samples_leaves_the_test_split_whole(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(6)))
    data = {**COMMON_DATA_DEFAULTS, "train": str(path), "validation": str(path), "test": str(path)}
    splits = load_splits({**data, "max_eval_samples": 2}, seed=0)
    assert len(splits["validation"].dataset) == 2 and len(splits["test"].dataset) == 6
    splits = load_splits({**data, "max_test_samples": 3}, seed=0)
    assert len(splits["validation"].dataset) == 6 and len(splits["test"].dataset) == 3
    with pytest.raises(LlmkitError, match=r"data.max_eval_samples must be a positive number of rows or null"):
        load_splits({**data, "max_eval_samples": "all"}, seed=0)


# -- JSON keys: the union of every record's -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_keys_missing_from_the_first_record_are_still_columns(tmp_path: Path, fmt: str) -> None:
    from llmkit.tasks.generation import GenerationTask

    rows = [
        {"instruction": "Say hi.", "output": "Hi."},
        {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "note": "extra"},
    ]
    path = tmp_path / f"instructions.{fmt}"
    text = "".join(json.dumps(r) + "\n" for r in rows) if fmt == "jsonl" else json.dumps(rows)
    path.write_text(text, encoding="utf-8")
    dataset = read_table(path, "data.train")
    assert dataset.column_names == ["instruction", "output", "input", "note"]
    assert dataset[0]["input"] is None and dataset[1]["input"] == "Bonjour"
    task = GenerationTask({**COMMON_DATA_DEFAULTS, **GenerationTask.data_defaults})
    split = load_splits({**COMMON_DATA_DEFAULTS, "train": str(path), "validation_split": 0}, seed=0)
    task.check_data(split)
    user_turn = task.conversation(split["train"].dataset[1])[0]["content"]
    assert "Bonjour" in user_turn  # the example shows its input text


def test_a_label_missing_from_the_first_test_row_is_checked_not_dropped(tmp_path: Path) -> None:
    from llmkit.tasks.classification import ClassificationTask

    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n', encoding="utf-8")
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "fine"}\n{"text": "awful", "label": "neg"}\n', encoding="utf-8")
    data = {**COMMON_DATA_DEFAULTS, "train": str(train), "validation_split": 0, "test": str(test)}
    splits = load_splits(data, seed=0)
    assert splits["test"].dataset.column_names == ["text", "label"]
    task = ClassificationTask({**data, **ClassificationTask.data_defaults})
    with pytest.raises(LlmkitError, match=rf"data.test {test} line 1: label column 'label' is empty"):
        task.check_data(splits)


# -- row positions: the real line of the file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("rows.jsonl", '\n{"text": "a"}\n\n\n{"text": ""}\n', 5),
        ("rows.json", '{"text": "a"}\n\n{"text": ""}\n', 3),  # JSON lines under a .json name
        ("rows.csv", 'text\n"two\nlines"\n\n""\n', 5),  # a quoted field spans lines; a blank line
        ("rows.tsv", "text\tlabel\n\n\nok\tx\n\tx\n", 5),
        ("rows.txt", "first\n\n\nsecond\n", None),
    ],
)
def test_messages_name_the_real_file_line(tmp_path: Path, name: str, content: str, line: int | None) -> None:
    from llmkit.data.files import require_text

    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    split = load_splits({**COMMON_DATA_DEFAULTS, "train": str(path), "validation_split": 0}, seed=0)["train"]
    if line is None:  # a .txt file has no empty rows: the lines themselves are counted
        assert [split.where(i) for i in range(2)] == ["line 1", "line 4"]
        return
    with pytest.raises(LlmkitError, match=rf"{path.name} line {line}: column 'text'"):
        require_text(split, "text", "text")


def test_carved_and_subset_rows_keep_their_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "gappy.jsonl"
    path.write_text("".join(json.dumps({"text": f"line {2 * i + 1}"}) + "\n\n" for i in range(20)))
    splits = load_splits({**COMMON_DATA_DEFAULTS, "train": str(path), "validation_split": 0.25}, seed=3)
    for split in splits.values():
        for index, text in enumerate(split.dataset["text"]):
            assert split.where(index) == text


def test_paragraphs_start_on_their_line(tmp_path: Path) -> None:
    path = tmp_path / "play.txt"
    path.write_text("\n\nROMEO:\nHello.\n\n  \nJULIET:\nHi.\n\n\nEnd\n", encoding="utf-8")
    data = {**COMMON_DATA_DEFAULTS, "train": str(path), "validation_split": 0, "txt_unit": "paragraph"}
    split = load_splits(data, seed=0)["train"]
    assert split.dataset["text"] == ["ROMEO:\nHello.", "JULIET:\nHi.", "End"]
    assert [split.where(i) for i in range(3)] == ["line 3", "line 7", "line 11"]


# -- CSV / TSV, as pandas reads them --------------------------------------------------------------------


def test_csv_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\ncafé,pos\n".encode("utf-8-sig"))
    assert read_table(path, "data.train").to_list() == [{"text": "café", "label": "pos"}]


def test_tsv_honours_quotes_as_pandas_writes_them(tmp_path: Path) -> None:
    import pandas as pd

    rows = [
        {"text": 'she said "hi"', "label": "a"},
        {"text": "a\ttab inside", "label": "b"},
        {"text": '"quoted at the start"', "label": "c"},
    ]
    path = tmp_path / "pandas.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    assert read_table(path, "data.train").to_list() == rows
    assert pd.read_csv(path, sep="\t").to_dict(orient="records") == rows


def test_fields_longer_than_csvs_default_limit_are_read(tmp_path: Path) -> None:
    document = "word " * 60_000  # 300,000 characters: csv refuses fields over 131,072 by default
    path = tmp_path / "long.csv"
    write_csv(path, ["document", "summary"], [[document, "words"]])
    assert read_table(path, "data.train")[0]["document"] == document


def test_identifiers_keep_their_leading_zeros(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "ids.csv", ["id", "zip", "text"], [["000123", "02139", "a"], ["7", "10001", "b"]]
    )
    dataset = read_table(path, "data.train")
    assert dataset["id"] == ["000123", "7"] and dataset["zip"] == ["02139", "10001"]


def test_classification_reads_csv_labels_as_numbers(tmp_path: Path) -> None:
    """Only the label column a classifier reads becomes numbers, so CSV 0/1 match JSON 0/1."""
    from llmkit.tasks.classification import ClassificationTask

    train = write_csv(
        tmp_path / "train.csv", ["id", "text", "label"], [["01", "good", "1"], ["02", "bad", "0"]]
    )
    validation = tmp_path / "validation.jsonl"
    validation.write_text('{"id": "03", "text": "fine", "label": 1}\n', encoding="utf-8")
    data = {**COMMON_DATA_DEFAULTS, "train": str(train), "validation": str(validation)}
    task = ClassificationTask({**data, **ClassificationTask.data_defaults, "label_names": ["neg", "pos"]})
    splits = load_splits(data, seed=0)
    task.check_data(splits)
    assert task.labels == [0, 1] and task.label_names == ["neg", "pos"]
    assert splits["train"].dataset.column_names == ["id", "text", "label"]
    assert splits["train"].dataset["label"] == [1, 0] and splits["train"].dataset["id"] == ["01", "02"]


# -- predict and summarize outputs: the input row as it was, plus the predictions ------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-bert classifier trained for one step (its predictions don't matter, their keys do)."""
    import llmkit

    folder = tmp_path_factory.mktemp("classifier")
    rows = [["a fine film", "positive"], ["a bad film", "negative"]] * 4
    train = write_csv(folder / "train.csv", ["text", "label"], rows)
    recipe = {
        "task": "classification",
        "model": "tiny-bert",
        "data": {"train": str(train), "validation": str(train)},
        "training": {"max_steps": 1},
        "output_dir": str(folder / "model"),
    }
    return llmkit.finetune(recipe).output_dir


def typed_parquet(path: Path) -> Path:
    """Parquet with the column types JSON has no word for: a date, a datetime and a Decimal."""
    import datetime
    import decimal

    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": ["000123", "02139"],
            "text": ["a fine film", "a bad film"],
            "label": ["negative", "positive"],  # gold labels, which the predictions must not replace
            "day": [datetime.date(2024, 1, 31), datetime.date(2024, 2, 1)],
            "at": pd.to_datetime(["2024-01-31 12:30", "2024-02-01 08:00"]),
            "price": [decimal.Decimal("1.50"), decimal.Decimal("20.25")],
        }
    )
    frame.to_parquet(path)
    return path


EXPECTED_INPUTS = [
    {
        "id": "000123",
        "text": "a fine film",
        "label": "negative",
        "day": "2024-01-31",
        "at": "2024-01-31 12:30:00",
        "price": "1.50",
    },
    {
        "id": "02139",
        "text": "a bad film",
        "label": "positive",
        "day": "2024-02-01",
        "at": "2024-02-01 08:00:00",
        "price": "20.25",
    },
]


def test_predict_keeps_the_input_row_and_writes_dates_as_text(run_cli, classifier, tmp_path: Path) -> None:
    parquet = typed_parquet(tmp_path / "typed.parquet")
    as_jsonl = tmp_path / "predictions.jsonl"
    result = run_cli("predict", "--model", classifier, "--input", parquet, "--output", as_jsonl)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in as_jsonl.read_text().splitlines()]
    assert [
        {k: v for k, v in row.items() if not k.startswith("predicted_")} for row in rows
    ] == EXPECTED_INPUTS
    assert all(
        row["predicted_label"] in {"negative", "positive"} and row["predicted_score"] > 0 for row in rows
    )

    stdout = run_cli("predict", "--model", classifier, "--input", parquet)
    assert stdout.exit_code == 0, stdout.stderr
    assert [json.loads(line) for line in stdout.stdout.splitlines()] == rows

    as_csv = tmp_path / "predictions.csv"
    assert run_cli("predict", "-m", classifier, "-i", parquet, "-o", as_csv).exit_code == 0
    import pandas as pd

    read_back = pd.read_csv(as_csv, dtype=str).to_dict(orient="records")
    assert [{k: row[k] for k in EXPECTED_INPUTS[0]} for row in read_back] == EXPECTED_INPUTS


def test_predict_writes_csv_ids_back_unaltered(run_cli, classifier, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["id", "text", "label"], [["007", "a fine film", "1"]])
    out = tmp_path / "out.csv"
    assert run_cli("predict", "-m", classifier, "-i", source, "-o", out).exit_code == 0
    header, row = out.read_text().splitlines()
    assert header == "id,text,label,predicted_label,predicted_score"
    assert row.startswith("007,a fine film,1,")


def test_summarize_writes_dates_as_text(run_cli, tmp_path: Path) -> None:
    import datetime
    import decimal

    import pandas as pd

    parquet = tmp_path / "docs.parquet"
    pd.DataFrame(
        {
            "document": ["#Person1#: Lunch at noon?\n#Person2#: Sure."],
            "day": [datetime.date(2024, 1, 31)],
            "cost": [decimal.Decimal("3.10")],
        }
    ).to_parquet(parquet)
    out = tmp_path / "summaries.jsonl"
    common = ["--model", "tiny-t5", "--input", parquet, "--max-new-tokens", "3"]
    result = run_cli("summarize", *common, "--output", out)
    assert result.exit_code == 0, result.stderr
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["day"] == "2024-01-31" and row["cost"] == "3.10" and isinstance(row["generated_summary"], str)
    result = run_cli("summarize", *common, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["day"] == "2024-01-31"


# -- data as it is distributed: headerless files, list-valued columns, keys that go together --------------

AG_NEWS_ROWS = [
    [
        "3",
        "Wall St. Bears Claw Back Into the Black",
        "Short-sellers, Wall Street's dwindling band, are back.",
    ],
    ["4", "New iPod due", "Apple is said to be preparing a new music player."],
    ["2", "Phelps wins again", "Michael Phelps won his fifth gold medal on Tuesday."],
    ["1", "Talks resume", "Negotiators met again in Geneva on Monday."],
]


def write_headerless_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def classification_data(**data) -> dict:
    from llmkit.tasks.classification import ClassificationTask

    return {**COMMON_DATA_DEFAULTS, **ClassificationTask.data_defaults, **data}


def test_a_headerless_tsv_is_named_by_data_columns(tmp_path: Path) -> None:
    from llmkit.tasks.classification import ClassificationTask

    train = write_headerless_tsv(tmp_path / "train.tsv", AG_NEWS_ROWS)
    data = classification_data(train=str(train), validation_split=0.0, columns=["label", "title", "text"])
    splits = load_splits(data, seed=0)
    dataset = splits["train"].dataset
    assert dataset.column_names == ["label", "title", "text"] and len(dataset) == 4  # the first row is data
    assert splits["train"].where(0) == "line 1"
    task = ClassificationTask(data)
    task.check_data(splits)
    assert task.labels == [1, 2, 3, 4] and task.problem == "single_label"


def test_a_headerless_file_without_data_columns_says_so(tmp_path: Path) -> None:
    from llmkit.tasks.classification import ClassificationTask

    train = write_headerless_tsv(tmp_path / "train.tsv", AG_NEWS_ROWS)
    data = classification_data(train=str(train), validation_split=0.0)
    splits = load_splits(data, seed=0)
    with pytest.raises(LlmkitError) as error:
        ClassificationTask(data).check_data(splits)
    assert str(error.value) == (
        f"data.train {train}: no column 'text' (set by data.text); the file looks headerless (its first "
        f"line is data, not column names); name its 3 columns with data.columns, e.g. "
        f"data.columns=[col1, col2, col3]"
    )


def test_a_missing_column_of_a_real_header_still_lists_the_columns(tmp_path: Path) -> None:
    from llmkit.tasks.classification import ClassificationTask

    train = write_csv(tmp_path / "train.csv", ["sentence", "label"], [["good", "1"], ["bad", "0"]])
    data = classification_data(train=str(train), validation_split=0.0)
    with pytest.raises(
        LlmkitError, match=re.escape("columns are: sentence, label; set data.text=<one of them>")
    ):
        ClassificationTask(data).check_data(load_splits(data, seed=0))


def test_data_columns_skips_a_header_that_repeats_them_and_counts_fields(tmp_path: Path) -> None:
    rows = [["label", "title", "text"], *AG_NEWS_ROWS]
    train = write_headerless_tsv(tmp_path / "train.tsv", rows)
    splits = load_splits(classification_data(train=str(train), columns=["label", "title", "text"]), seed=0)
    assert len(splits["train"].dataset) + len(splits["validation"].dataset) == 4
    ragged = write_headerless_tsv(tmp_path / "ragged.tsv", [*AG_NEWS_ROWS, ["1", "no text"]])
    with pytest.raises(LlmkitError, match=r"ragged.tsv line 5: 2 fields where data.columns names 3"):
        load_splits(classification_data(train=str(ragged), columns=["label", "title", "text"]), seed=0)
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n', encoding="utf-8")
    with pytest.raises(
        LlmkitError, match=re.escape("data.columns names the columns of a headerless CSV/TSV, but")
    ):
        load_splits(classification_data(train=str(jsonl), columns=["text", "label"]), seed=0)
    with pytest.raises(LlmkitError, match=re.escape("data.columns names column 'text' twice")):
        load_splits(classification_data(train=str(train), columns=["text", "text", "label"]), seed=0)


def write_scitldr(path: Path) -> Path:
    """SciTLDR's shape: ``source`` a list of sentences, ``target`` a list of reference summaries."""
    rows = [
        {"source": ["We study X.", "It works."], "target": ["X works.", "A study of X."]},
        {"source": ["We propose Y.", "Y is fast."], "target": ["Y is a fast method."]},
        {"source": ["Z is new."], "target": ["Z.", "New Z.", "About Z."]},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def summarization_data(**data) -> dict:
    from llmkit.tasks.summarization import SummarizationTask

    return {
        **COMMON_DATA_DEFAULTS,
        **SummarizationTask.data_defaults,
        "document": "source",
        "summary": "target",
        "validation_split": 0.0,
        **data,
    }


def test_list_columns_are_refused_with_the_keys_that_take_them(tmp_path: Path) -> None:
    from llmkit.tasks.summarization import SummarizationTask

    train = write_scitldr(tmp_path / "scitldr.jsonl")
    data = summarization_data(train=str(train))
    with pytest.raises(LlmkitError) as error:
        SummarizationTask(data).check_data(load_splits(data, seed=0))
    assert str(error.value) == (
        f"data.train {train} line 1: column 'source' (data.document) is a list of 2 strings, not text; "
        f"set data.join_lists=' ' to join each list into one text"
    )
    data = summarization_data(train=str(train), join_lists=" ")
    with pytest.raises(LlmkitError) as error:
        SummarizationTask(data).check_data(load_splits(data, seed=0))
    assert str(error.value) == (
        f"data.train {train} line 1: column 'target' (data.summary) is a list of 2 strings, not text; "
        f"set data.explode=true to make one row per reference summary"
    )


def test_join_lists_and_explode_make_one_row_per_reference(tmp_path: Path) -> None:
    from llmkit.tasks.summarization import SummarizationTask

    train = write_scitldr(tmp_path / "scitldr.jsonl")
    data = summarization_data(train=str(train), join_lists=" ", explode=True)
    splits = load_splits(data, seed=0)
    SummarizationTask(data).check_data(splits)
    rows = splits["train"].dataset.to_list()
    assert [row["target"] for row in rows] == [
        "X works.",
        "A study of X.",
        "Y is a fast method.",
        "Z.",
        "New Z.",
        "About Z.",
    ]
    assert rows[0]["source"] == rows[1]["source"] == "We study X. It works."
    assert [splits["train"].where(i) for i in range(6)] == [
        "line 1",
        "line 1",
        "line 2",
        "line 3",
        "line 3",
        "line 3",
    ]


def test_an_exploded_row_keeps_its_file_line_in_messages(tmp_path: Path) -> None:
    from llmkit.tasks.summarization import SummarizationTask

    train = tmp_path / "refs.jsonl"
    rows = [{"source": "a text", "target": ["one", "two"]}, {"source": "b text", "target": ["three", ""]}]
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    data = summarization_data(train=str(train), explode=True)
    with pytest.raises(LlmkitError, match=r"refs.jsonl line 2: column 'target' \(data.summary\) is empty"):
        SummarizationTask(data).check_data(load_splits(data, seed=0))


def test_join_lists_in_a_classifier_text_column(tmp_path: Path) -> None:
    from llmkit.tasks.classification import ClassificationTask

    train = tmp_path / "train.jsonl"
    rows = [{"text": ["good", "film"], "label": 1}, {"text": ["bad", "film"], "label": 0}]
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    data = classification_data(train=str(train), validation_split=0.0, join_lists=" | ")
    splits = load_splits(data, seed=0)
    ClassificationTask(data).check_data(splits)
    assert splits["train"].dataset["text"] == ["good | film", "bad | film"]


def test_overriding_train_but_not_the_recipes_validation_is_one_warning(tmp_path: Path, capsys) -> None:
    from llmkit.recipe.loader import load_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {train: a/train.csv, validation: a/dev.csv}\n", encoding="utf-8")
    load_recipe(recipe, ["data.train=b/train.csv"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines == [
        f"llmkit: warning: data.train is overridden (b/train.csv) but data.validation is still the file of "
        f"recipe {recipe} (a/dev.csv); override data.validation too, or set data.validation=null to carve "
        f"validation rows from the new data.train"
    ]
    for together in (["data.train=b/train.csv", "data.validation=b/dev.csv"], ["data.max_length=64"]):
        load_recipe(recipe, together)
        assert "warning" not in capsys.readouterr().err


def test_validate_reads_columns_whole_not_row_by_row(tmp_path: Path, monkeypatch) -> None:
    """The data checks read each column at once: a million-row CSV took minutes to validate when every
    check fetched its cells one row at a time (datasets formats each fetched row on its own)."""
    import datasets.arrow_dataset

    from llmkit.training.validate import validate

    rows = 3000
    path = write_csv(
        tmp_path / "big.csv", ["text", "label"], [[f"text number {i}", i % 2] for i in range(rows)]
    )
    formatted = 0
    format_table = datasets.arrow_dataset.format_table

    def counting(*args, **kwargs):
        nonlocal formatted
        formatted += 1
        return format_table(*args, **kwargs)

    monkeypatch.setattr(datasets.arrow_dataset, "format_table", counting)
    lines = validate({"task": "classification", "model": "tiny-bert", "data": {"train": str(path)}})
    assert f"train: {rows - rows // 10} rows from {path}" in lines
    assert formatted < rows / 10, f"{formatted} row fetches for {rows} rows"
