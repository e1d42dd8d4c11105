"""Token classification (task: token-classification, alias ner): CoNLL reading, labels, metrics, predict,
pipeline, and every bad input of issue 16 as a one-line error naming the file, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkit.data import ConllFormat, read_split
from llmkit.errors import LlmkitError

PEOPLE = ["Anna Schmidt", "John Smith", "Maria Rossi", "Peter Jones"]
PLACES = ["Berlin", "Paris", "London", "New York"]
FIRMS = ["Acme Corp", "Globex", "Initech", "Umbrella Inc"]


def sentence(person: str, place: str, firm: str) -> dict:
    """'<person> works for <firm> in <place> .' with IOB2 tags."""
    tokens, tags = [], []
    for words, kind in ((person, "PER"), ("works for", None), (firm, "ORG"), ("in", None), (place, "LOC")):
        for index, word in enumerate(words.split()):
            tokens.append(word)
            tags.append("O" if kind is None else f"{'B' if index == 0 else 'I'}-{kind}")
    return {"tokens": [*tokens, "."], "ner_tags": [*tags, "O"]}


def rows(count: int, offset: int = 0) -> list[dict]:
    return [
        sentence(PEOPLE[(i + offset) % 4], PLACES[(i + 2 * offset) % 4], FIRMS[(i + offset + 1) % 4])
        for i in range(count)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_conll(path: Path, records: list[dict]) -> Path:
    """CoNLL-2003 layout: a -DOCSTART- line, then 'word POS chunk tag' lines, blank lines between."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for record in records:
        lines += [f"{w} NNP B-NP {t}" for w, t in zip(record["tokens"], record["ner_tags"], strict=True)] + [
            ""
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def ner_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "train.jsonl", rows(16)), write_conll(
        tmp_path / "validation.conll", rows(4, 1)
    )


def finetune(tmp_path: Path, train: Path, validation: Path, *overrides: str):
    import llmkit

    return llmkit.finetune(
        {"task": "ner", "model": "tiny-bert"},
        [
            f"data.train={train}",
            f"data.validation={validation}",
            "training.max_steps=4",
            f"output_dir={tmp_path / 'out'}",
            *overrides,
        ],
    )


# -- reading ------------------------------------------------------------------------------------------
def test_conll_reader_skips_docstart_and_blank_lines_and_knows_each_sentence_line(tmp_path: Path) -> None:
    path = write_conll(tmp_path / "dev.conll", rows(2))
    split = read_split("validation", path, "data.validation")
    assert split.dataset["tokens"][0][:3] == ["Anna", "Schmidt", "works"]
    assert split.dataset["ner_tags"][0][:3] == ["B-PER", "I-PER", "O"]
    assert len(split.dataset) == 2 and split.where(1) == f"line {3 + len(rows(1)[0]['tokens']) + 1}"


def test_conll_txt_is_read_as_columns_with_the_chosen_tag_column(tmp_path: Path) -> None:
    path = write_conll(tmp_path / "train.txt", rows(2))
    split = read_split("train", path, "data.train", "conll", ConllFormat(tag_column=3))
    assert split.dataset["ner_tags"][0][0] == "B-NP"  # the chunk column


def test_the_shared_conll_file_reads_as_its_jsonl_twin(real_data_dir: Path) -> None:
    conll = real_data_dir / "conll2003"
    split = read_split("validation", conll / "validation.txt", "data.validation", "conll")
    twin = [json.loads(line) for line in (conll / "validation.jsonl").open()]
    assert len(split.dataset) == len(twin) == 3250
    assert split.dataset[100]["tokens"] == twin[100]["tokens"]
    assert split.dataset[100]["ner_tags"] == twin[100]["ner_tags"]


def test_word_labels_first_sub_token_or_all() -> None:
    from llmkit.tasks.token_classification import word_labels

    assert word_labels([None, 0, 0, 1, None], [3, 5], label_all=False) == [-100, 3, -100, 5, -100]
    assert word_labels([None, 0, 0, 1, None], [3, 5], label_all=True) == [-100, 3, 3, 5, -100]


def test_entity_spans_read_iob_like_seqeval() -> None:
    from llmkit.tasks.token_classification import entity_spans

    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "B-ORG", "I-PER"]
    assert entity_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 5), ("ORG", 5, 6), ("PER", 6, 7)]


def test_seqeval_metric_scores_whole_entities() -> None:
    from llmkit.metrics import load_metrics

    scores = load_metrics("seqeval").compute(
        predictions=[["B-PER", "O", "B-LOC", "O"]], references=[["B-PER", "I-PER", "B-LOC", "O"]]
    )
    assert scores["f1"] == pytest.approx(0.5) and scores["per_type"]["LOC"]["f1"] == 1.0
    assert scores["per_type"]["PER"]["f1"] == 0.0


# -- a run ----------------------------------------------------------------------------------------------
def test_ner_trains_evaluates_and_serves_pipeline_and_predict(
    tmp_path: Path, ner_files: tuple[Path, Path], run_cli
) -> None:
    from transformers import AutoConfig, pipeline

    result = finetune(tmp_path, *ner_files)
    assert {"eval_f1", "eval_precision", "eval_recall", "eval_PER_f1", "eval_LOC_f1"} <= set(result.metrics)
    out = result.output_dir
    config = AutoConfig.from_pretrained(out)
    assert set(config.id2label.values()) == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}

    tagger = pipeline("token-classification", model=str(out), aggregation_strategy="simple")
    found = tagger("Anna Schmidt works for Globex in Paris .")
    assert all({"entity_group", "word", "start", "end", "score"} <= set(entity) for entity in found)

    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": "John Smith works for Initech in London."}])
    printed = run_cli("predict", "-m", out, "-i", texts)
    assert printed.exit_code == 0, printed.stderr
    row = json.loads(printed.stdout)
    for entity in row["predicted_entities"]:
        assert set(entity) == {"type", "text", "start", "end", "score"}
        assert row["text"][entity["start"] : entity["end"]] == entity["text"]
        assert entity["type"] in {"PER", "ORG", "LOC"} and 0 <= entity["score"] <= 1
    report = (out / "report.md").read_text()
    assert "Anna Schmidt (PER)" in report or "John Smith (PER)" in report  # the reference entities


def test_predict_on_token_lists_gives_offsets_into_the_joined_words(
    tmp_path: Path, ner_files: tuple[Path, Path], run_cli
) -> None:
    out = finetune(tmp_path, *ner_files).output_dir
    printed = run_cli("predict", "-m", out, "-i", ner_files[1])
    assert printed.exit_code == 0, printed.stderr
    for line in printed.stdout.splitlines():
        row = json.loads(line)
        text = " ".join(row["tokens"])
        assert all(text[e["start"] : e["end"]] == e["text"] for e in row["predicted_entities"])


def test_integer_tags_named_by_label_names(tmp_path: Path) -> None:
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    as_ids = [{**r, "ner_tags": [names.index(t) for t in r["ner_tags"]]} for r in rows(12)]
    train = write_jsonl(tmp_path / "train.jsonl", as_ids[:8])
    validation = write_jsonl(tmp_path / "validation.jsonl", as_ids[8:])
    result = finetune(tmp_path, train, validation, f"data.label_names={json.dumps(names)}")
    from transformers import AutoConfig

    assert list(AutoConfig.from_pretrained(result.output_dir).id2label.values()) == names
    with pytest.raises(LlmkitError, match=r"integer tags; name them with data.label_names"):
        finetune(tmp_path, train, validation, f"output_dir={tmp_path / 'other'}")


# -- bad input ------------------------------------------------------------------------------------------
def test_tokens_and_tags_of_different_lengths(tmp_path: Path, ner_files, run_cli) -> None:
    bad = rows(6)
    bad[3]["ner_tags"] = bad[3]["ner_tags"][:-1]
    train = write_jsonl(tmp_path / "bad.jsonl", bad)
    result = run_cli(
        "finetune", "task=ner", "model=tiny-bert", f"data.train={train}", f"output_dir={tmp_path}/o"
    )
    assert result.exit_code == 2
    assert f"data.train {train} line 4: 10 words in 'tokens' but 9 tags in 'ner_tags'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tags_column_that_is_not_a_list(tmp_path: Path, run_cli) -> None:
    bad = rows(6)
    bad[2]["ner_tags"] = "B-PER I-PER O"
    train = write_jsonl(tmp_path / "bad.jsonl", bad)
    result = run_cli(
        "finetune", "task=ner", "model=tiny-bert", f"data.train={train}", f"output_dir={tmp_path}/o"
    )
    assert result.exit_code == 2
    assert (
        f"{train} column 'ner_tags' mixes types (list, str): line 3 holds 'B-PER I-PER O' where"
        in result.stderr
    )
    every_row = write_jsonl(
        tmp_path / "strings.jsonl", [{**r, "ner_tags": " ".join(r["ner_tags"])} for r in rows(6)]
    )
    result = run_cli(
        "finetune", "task=ner", "model=tiny-bert", f"data.train={every_row}", "data.validation_split=0",
        f"output_dir={tmp_path}/o",
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        f"{every_row} line 1: column 'ner_tags' (data.tags) is 'B-PER I-PER O O B-ORG O B-LOC O', not a list"
        in (result.stderr)
    )


def test_validation_tag_that_train_never_had(tmp_path: Path, run_cli) -> None:
    validation = rows(3)
    validation[1]["ner_tags"][-1] = "B-MISC"
    train = write_jsonl(tmp_path / "train.jsonl", rows(8))
    dev = write_conll(tmp_path / "dev.conll", validation)
    result = run_cli(
        "finetune", "task=ner", "model=tiny-bert", f"data.train={train}", f"data.validation={dev}",
        f"output_dir={tmp_path}/o",
    )  # fmt: skip
    assert result.exit_code == 2
    line = 3 + len(validation[0]["tokens"]) + 1
    assert (
        f"data.validation {dev} line {line}: tag 'B-MISC' in column 'ner_tags' never occurs in data.train"
        in (result.stderr)
    )
    assert not (tmp_path / "o").exists()


def test_conll_line_with_the_wrong_number_of_columns(tmp_path: Path, run_cli) -> None:
    path = write_conll(tmp_path / "train.conll", rows(3))
    lines = path.read_text().splitlines()
    lines[5] = "New York NNP B-NP B-LOC"  # a token with a space: five columns
    path.write_text("\n".join(lines))
    result = run_cli(
        "finetune", "task=ner", "model=tiny-bert", f"data.train={path}", f"output_dir={tmp_path}/o"
    )
    assert result.exit_code == 2
    assert f"data.train: {path} line 6: 5 columns where the file's first token line has 4" in result.stderr


def test_tag_column_outside_the_lines(tmp_path: Path, run_cli) -> None:
    path = write_conll(tmp_path / "train.conll", rows(3))
    result = run_cli(
        "finetune", "task=ner", "model=tiny-bert", f"data.train={path}", "data.tag_column=7",
        f"output_dir={tmp_path}/o",
    )  # fmt: skip
    assert result.exit_code == 2 and "data.tag_column=7, but the lines have 4 columns" in result.stderr


# -- the real model -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_learns_conll_entities(tmp_path: Path, real_data_dir: Path) -> None:
    """MiniLM-L6 on 400 real CoNLL-2003 sentences for 40 steps: the pipeline finds entities with types."""
    from transformers import pipeline

    import llmkit

    data = real_data_dir / "conll2003"
    result = llmkit.finetune(
        "recipes/ner-conll2003.yaml" if Path("recipes/ner-conll2003.yaml").exists() else "ner-conll2003",
        [
            f"data.train={data / 'train.txt'}",
            f"data.validation={data / 'validation.jsonl'}",
            "data.max_train_samples=400",
            "data.max_eval_samples=100",
            "training.max_steps=40",
            "training.learning_rate=3e-4",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    assert result.metrics["eval_f1"] > 0.2  # an untrained head scores ~0.01
    tagger = pipeline("token-classification", model=str(result.output_dir), aggregation_strategy="simple")
    groups = {entity["entity_group"] for entity in tagger("Germany beat France in Paris on Sunday .")}
    assert groups and groups <= {"PER", "ORG", "LOC", "MISC"}
