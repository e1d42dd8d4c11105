"""`llmkit audit`: its counts against a plain-Python count of the same files (written ones and, in the
real-data tier, SST-2 and GoEmotions), near duplicates, label-noise suspects, the output files and the CLI's
one-line errors."""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from llmkit.data import audit as checks
from llmkit.inference.audit import audit, label_suspects
from tests.conftest import write_csv


# -- a plain-Python count, written apart from llmkit's ------------------------------------------------------
def plain_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def plain_counts(splits: dict[str, list[tuple[str, object]]]) -> dict[str, object]:
    """Duplicate rows per split (rows beyond each text's first), contradicting texts per split and across
    splits, and training rows / evaluation rows whose text is in the other."""
    result: dict[str, object] = {}
    for role, rows in splits.items():
        keys = Counter(plain_key(text) for text, _ in rows)
        result[f"duplicates/{role}"] = sum(count - 1 for count in keys.values())
        labels = defaultdict(set)
        for text, label in rows:
            labels[plain_key(text)].add(label)
        result[f"contradictions/{role}"] = sum(1 for found in labels.values() if len(found) > 1)
    train_keys = {plain_key(text) for text, _ in splits["train"]}
    everywhere: dict[str, set] = defaultdict(set)
    roles: dict[str, set] = defaultdict(set)
    for role, rows in splits.items():
        for text, label in rows:
            everywhere[plain_key(text)].add(label)
            roles[plain_key(text)].add(role)
        if role != "train":
            other = {plain_key(text) for text, _ in rows}
            result[f"copies/{role}/train"] = sum(1 for text, _ in splits["train"] if plain_key(text) in other)
            result[f"copies/{role}/{role}"] = sum(1 for text, _ in rows if plain_key(text) in train_keys)
    result["contradictions/across"] = sum(
        1 for key, found in everywhere.items() if len(found) > 1 and len(roles[key]) > 1
    )
    return result


def audit_counts(report: dict) -> dict[str, object]:
    """The same numbers, read from audit.json."""
    result: dict[str, object] = {}
    for role, found in report["exact_duplicates"].items():
        result[f"duplicates/{role}"] = found["duplicate_rows"]
        result[f"contradictions/{role}"] = report["contradictions"][role]["texts"]
    for role, copies in report["cross_split_copies"].items():
        result[f"copies/{role}/train"] = copies["train_rows"]
        result[f"copies/{role}/{role}"] = copies[f"{role}_rows"]
    result["contradictions/across"] = report["contradictions"]["across_splits"]["texts"]
    return result


TRAIN = [
    ["A good film", "positive"],
    ["a  GOOD film ", "positive"],  # a duplicate once normalised
    ["ａ good film", "positive"],  # full-width a: NFKC makes it a duplicate too
    ["a dull film", "negative"],
    ["a dull film", "positive"],  # contradiction
    ["a tense and brilliant thriller with a great cast", "positive"],
    ["shown at the festival", "negative"],  # copied into validation with another label
    ["a plodding mess", "negative"],
    ["Mojibake cafÃ© scene", "positive"],
    ["the sound is lost", "negative"],
]
VALIDATION = [
    ["Shown at the festival", "positive"],
    ["a tense and brilliant thriller with a great cast!", "positive"],  # a near copy of a training row
    ["an unrelated sentence about cooking pasta", "negative"],
]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_csv(tmp_path / "train.csv", ["text", "label"], TRAIN),
        write_csv(tmp_path / "validation.csv", ["text", "label"], VALIDATION),
    )


def tiny_audit(train: Path, validation: Path, output: Path, overrides: tuple[str, ...] = (), **options):
    return audit(
        None,
        ["model=tiny-bert", f"data.train={train}", f"data.validation={validation}", *overrides],
        output=output,
        **options,
    )


def test_counts_equal_a_plain_python_count_and_the_files_say_so(written, tmp_path: Path) -> None:
    train, validation = written
    result = tiny_audit(train, validation, tmp_path / "audit", label_noise=False)
    splits = {
        "train": [(text, label) for text, label in TRAIN],
        "validation": [(text, label) for text, label in VALIDATION],
    }
    expected = plain_counts(splits)
    assert audit_counts(result.report) == expected
    assert expected["duplicates/train"] == 3 and expected["copies/validation/train"] == 1  # the plants
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert audit_counts(report) == expected
    train_report = report["exact_duplicates"]["train"]
    assert train_report["examples"][0]["rows"] == ["line 2", "line 3", "line 4"]  # CSV lines, as errors say
    assert report["broken_encodings"]["train"]["rows"] == 1
    assert report["broken_encodings"]["train"]["examples"][0]["where"] == "line 10"
    assert report["labels"]["train"]["counts"] == {"positive": 6, "negative": 4}
    assert report["labels"]["train"]["imbalance_ratio"] == 1.5
    assert report["lengths"]["train"]["unit"] == "tokens"
    assert report["label_noise"] == {"checked": False, "why": "turned off (--no-label-noise)"}
    markdown = (tmp_path / "audit" / "audit.md").read_text()
    assert "## Leakage" in markdown and "train line 8 = validation line 2" in markdown
    assert any("1 training rows copy 1 validation rows" in line for line in result.summary)


def test_near_duplicates_find_a_planted_near_copy_and_not_an_unrelated_row(written, tmp_path: Path) -> None:
    train, validation = written
    result = tiny_audit(train, validation, tmp_path / "audit", label_noise=False)
    across = result.report["near_duplicates"]["across_splits"]["validation"]
    assert across["train_rows"] == 1 and across["validation_rows"] == 1
    example = across["examples"][0]
    assert example["train"]["where"] == "line 7" and example["validation"]["where"] == "line 3"
    within = result.report["near_duplicates"]["within"]["train"]
    assert within["groups"] == 0  # the exact duplicates are not near duplicates of each other


def test_near_duplicate_pairs_separate_edits_from_other_texts() -> None:
    texts = [
        "the film is a gorgeous and moving portrait of a family",
        "the film is a gorgeous , moving portrait of a family",  # one edit
        "a completely different remark about the weather today",
        "the weather today is a completely different remark",  # the same words, reordered: not near
    ]
    signatures = checks.minhash_signatures([checks.normalise(text) for text in texts])
    assert checks.near_duplicate_pairs(signatures).tolist() == [[0, 1]]


def test_label_suspects_rank_a_planted_flipped_label_first() -> None:
    """Two overlapping classes of vectors; one row deep in class "a" is labelled "b": the only suspect."""
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(-1, 1, (40, 8)), rng.normal(1, 1, (40, 8))])
    vectors[5] = -3
    labels = ["a"] * 40 + ["b"] * 40
    labels[5] = "b"
    found = label_suspects(vectors, labels, seed=0)
    assert found["checked"] and found["suspect_rows"] == 1
    first = found["suspects"][0]
    assert (first["index"], first["given"], first["suggested"]) == (5, "b", "a")
    assert first["confidence"] > 0.9


def test_label_suspects_average_an_ngram_head_in_when_the_texts_are_given() -> None:
    """The words agree with the vectors: row 5 reads like class "a" and sits in it, yet is labelled "b"."""
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(-1, 1, (40, 8)), rng.normal(1, 1, (40, 8))])
    words = {"a": ["dull", "boring", "tedious", "flat"], "b": ["great", "lovely", "moving", "sharp"]}
    labels = ["a"] * 40 + ["b"] * 40
    texts = [
        f"a {words[label][i % 4]} and {words[label][(i + 1) % 4]} film" for i, label in enumerate(labels)
    ]
    vectors[5], labels[5] = -3, "b"
    found = label_suspects(vectors, labels, texts, seed=0)
    assert "TF-IDF" in found["method"] and "confident_learning" in found["method"]
    first = found["suspects"][0]
    assert (first["index"], first["given"], first["suggested"]) == (5, "b", "a")
    assert found["suspect_rows"] == len(found["suspects"]) <= 3


def test_label_noise_runs_on_the_recipes_model_and_lists_suspects(written, tmp_path: Path) -> None:
    train, validation = written
    result = tiny_audit(train, validation, tmp_path / "audit", near=False)
    noise = result.report["label_noise"]
    assert noise["checked"] and noise["model"] == "tiny-bert" and noise["rows"] == len(TRAIN)
    for suspect in noise["suspects"]:
        assert {"where", "text", "label", "given", "suggested", "confidence"} <= set(suspect)
        assert suspect["given"] != suspect["suggested"] or suspect["confidence"] < 0.5
    assert "near_duplicates" not in result.report


def test_label_noise_is_not_checked_for_a_task_without_classes(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\nthe cat sat on the mat\nthe dog sat\n")
    result = audit(None, ["task=fill-mask", "model=tiny-bert", f"data.train={text}"], output=tmp_path / "a")
    assert result.report["exact_duplicates"]["train"]["duplicate_rows"] == 1
    assert result.report["label_noise"]["why"].startswith("not checked for this task")
    assert result.report["labels"] == {}


def test_the_command_writes_a_new_folder_and_errors_are_one_line(
    written, tmp_path, run_cli, monkeypatch
) -> None:
    train, validation = written
    monkeypatch.chdir(tmp_path)
    foreign = tmp_path / "runs" / "classification-audit"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    args = ["audit", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}"]
    result = run_cli(*args, "--no-label-noise", "--max-rows", "4")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "runs" / "classification-audit-2" / "audit.md").is_file()
    assert (foreign / "notes.txt").read_text() == "mine" and not (foreign / "audit.json").exists()
    assert "wrote runs/classification-audit-2/audit.md" in result.stdout
    report = json.loads((tmp_path / "runs" / "classification-audit-2" / "audit.json").read_text())
    assert report["splits"]["train"]["rows"] == 4 and report["max_rows"] == 4

    refused = run_cli(*args, "--output", str(foreign))
    assert refused.exit_code == 2
    assert error_lines(refused.stderr) == [
        f"error: --output {foreign} holds notes.txt, not written by llmkit audit; give a new folder"
    ]
    missing = run_cli("audit", "model=tiny-bert", "data.train=nowhere.csv", f"data.validation={validation}")
    assert missing.exit_code == 2
    assert len(error_lines(missing.stderr)) == 1 and "nowhere.csv does not exist" in missing.stderr
    other_task = tmp_path / "chat.jsonl"
    other_task.write_text(
        "".join(json.dumps({"instruction": f"say {i}", "output": "hi"}) + "\n" for i in range(9))
    )
    unaudited = run_cli("audit", "task=generation", "model=tiny-gpt2", f"data.train={other_task}")
    assert unaudited.exit_code == 2 and "has no texts or labels it can audit" in unaudited.stderr
    bad_rows = run_cli(*args, "--max-rows", "0")
    assert bad_rows.exit_code == 2 and "--max-rows" in bad_rows.stderr


def error_lines(stderr: str) -> list[str]:
    """The CLI's error lines (library warnings before them are not the error)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- the real-data tier ------------------------------------------------------------------------------------
def read_tsv(path: Path) -> list[tuple[str, object]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row["sentence"], int(row["label"])) for row in csv.DictReader(handle, delimiter="\t")]


def read_emotions(path: Path) -> list[tuple[str, object]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["text"], tuple(sorted(set(row["labels"])))) for row in rows]


def test_sst2_counts_equal_a_plain_python_count(real_data_dir: Path, tmp_path: Path) -> None:
    sst2 = real_data_dir / "sst2"
    result = audit(
        "recipes/sst2-minilm.yaml",
        [f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'dev.tsv'}"],
        output=tmp_path / "sst2",
        near=False,
        label_noise=False,
    )
    splits = {"train": read_tsv(sst2 / "train.tsv"), "validation": read_tsv(sst2 / "dev.tsv")}
    assert audit_counts(result.report) == plain_counts(splits)
    assert result.report["labels"]["train"]["counts"].keys() == {"negative", "positive"}


def test_goemotions_counts_equal_a_plain_python_count(real_data_dir: Path, tmp_path: Path) -> None:
    emotions = real_data_dir / "goemotions"
    files = {role: emotions / f"{role}.jsonl" for role in ("train", "validation", "test")}
    result = audit(
        "recipes/goemotions-minilm.yaml",
        [f"data.{role}={path}" for role, path in files.items()],
        output=tmp_path / "goemotions",
        near=False,
        label_noise=False,
    )
    splits = {role: read_emotions(path) for role, path in files.items()}
    assert audit_counts(result.report) == plain_counts(splits)
    assert result.report["label_noise"]["why"].startswith("not checked for this task")
    assert result.report["labels"]["train"]["classes"] == 28


def test_the_mojibake_pattern_names_common_cases() -> None:
    for broken in ("cafÃ©", "donâ€™t", "a \ufffd b"):
        assert checks.BROKEN_ENCODING.search(broken), broken
    for fine in ("café", "don’t", "naïve Ålesund"):
        assert not checks.BROKEN_ENCODING.search(fine), fine
    assert re.fullmatch(r"[a-z ]+", checks.normalise("  Ｈｅｌｌｏ\tWORLD "))


# -- the recipe's fixes: data.deduplicate, data.drop_leaks -------------------------------------------------
def test_deduplicate_and_drop_leaks_remove_what_a_plain_count_finds(written, tmp_path: Path) -> None:
    """The audit reads the rows after the fixes: no duplicate or copied training row is left, and the rows
    removed are the plain count's duplicates plus the training rows that copy a validation row."""
    train, validation = written
    plain = plain_counts({"train": TRAIN, "validation": VALIDATION})
    result = tiny_audit(
        train,
        validation,
        tmp_path / "audit",
        label_noise=False,
        near=False,
        overrides=["data.deduplicate=exact", "data.drop_leaks=true"],
    )
    report = result.report
    assert report["removed_by_recipe"] == {
        "train_duplicates_removed": plain["duplicates/train"],
        "train_leaks_removed": plain["copies/validation/train"],
    }
    assert report["splits"]["train"]["rows"] == len(TRAIN) - 3 - 1
    assert report["exact_duplicates"]["train"]["duplicate_rows"] == 0
    assert report["cross_split_copies"]["validation"]["train_rows"] == 0
    assert "the recipe removed 3 repeated training rows" in "\n".join(result.summary)


def test_near_deduplication_keeps_the_first_row_of_each_group() -> None:
    keys = [
        checks.normalise(text)
        for text in [
            "the film is a gorgeous and moving portrait of a family",
            "a completely different remark about the weather today",
            "the film is a gorgeous , moving portrait of a family",  # near row 0
            "The film is a gorgeous and moving portrait of a family",  # exactly row 0
            "",  # empty rows are never dropped
            "",
        ]
    ]
    assert checks.repeated_rows(keys) == [3]
    assert checks.repeated_rows(keys, near=True) == [2, 3]
    assert checks.leaked_rows(keys, [["a completely different remark about the weather today"], [""]]) == [1]


def test_a_run_records_the_rows_its_fixes_removed(sentiment_files, tmp_path: Path) -> None:
    import llmkit

    train, validation = sentiment_files
    with train.open() as handle:
        rows = list(csv.reader(handle))[1:]
    leaked = next(csv.reader(validation.read_text().splitlines()[1:2]))  # a validation row
    doubled = write_csv(tmp_path / "doubled.csv", ["text", "label"], rows + rows[:3] + [leaked])
    result = llmkit.finetune(
        None,
        [
            "model=tiny-bert",
            f"data.train={doubled}",
            f"data.validation={validation}",
            f"output_dir={tmp_path / 'out'}",
            "training.max_steps=1",
            "data.deduplicate=near",
            "data.drop_leaks=true",
        ],
    )
    recorded = json.loads((result.output_dir / "metrics.json").read_text())
    assert recorded["train_duplicates_removed"] >= 3 and recorded["train_leaks_removed"] == 1
    assert result.metrics["train_leaks_removed"] == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.deduplicate=fuzzy"], "data.deduplicate must be exact or near (or null), got 'fuzzy'"),
        (
            ["data.deduplicate=exact", "data.streaming=true", "training.max_steps=2"],
            "data.deduplicate needs the training rows whole and does not work with data.streaming",
        ),
    ],
)
def test_bad_fix_settings_are_one_line_errors(written, overrides: list[str], message: str) -> None:
    from llmkit.core.errors import LlmkitError
    from llmkit.recipe.loader import load_recipe

    train = written[0]
    with pytest.raises(LlmkitError, match=re.escape(message)):
        load_recipe(None, ["model=tiny-bert", f"data.train={train}", *overrides])


def test_a_task_without_texts_refuses_the_fixes(tmp_path: Path, run_cli) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"instruction": f"say {i}", "output": "hi"}) + "\n" for i in range(9)))
    result = run_cli(
        "validate", "task=generation", "model=tiny-gpt2", f"data.train={chat}", "data.drop_leaks=true"
    )
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "error: data.drop_leaks does not work for task generation, which has no texts to compare; "
        "remove data.drop_leaks"
    ]
