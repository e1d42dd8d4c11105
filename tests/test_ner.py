"""Token classification (task: token-classification, alias ner): CoNLL reading, labels, metrics, predict,
pipeline, and every bad input of issue 16 as a one-line error naming the file, row and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkit.core.errors import LlmkitError
from llmkit.data.files import ConllFormat, read_split
from tests.conftest import REPO

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
    from llmkit.tasks.token_classification import inside_tag_ids, word_labels

    inside = inside_tag_ids(["O", "B-PER", "I-PER", "B-MISC"])
    assert inside == [0, 2, 2, 3]  # B-PER's later sub-tokens learn I-PER; B-MISC has no I-MISC to become
    assert word_labels([None, 0, 0, 1, None], [1, 2]) == [-100, 1, -100, 2, -100]
    assert word_labels([None, 0, 0, 1, 1, None], [1, 2], inside) == [-100, 1, 2, 2, 2, -100]
    assert word_labels([None, 0, 0, None], [3], inside) == [-100, 3, 3, -100]


def ner_task(label_all: bool, names: list[str]):
    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.tasks.token_classification import TokenClassificationTask

    data = {**COMMON_DATA_DEFAULTS, **TokenClassificationTask.data_defaults, "label_all_tokens": label_all}
    task = TokenClassificationTask(data)
    task.label_names = names
    return task


def test_label_all_tokens_gives_later_sub_tokens_the_inside_tag() -> None:
    """run_ner's label_all_tokens: one word, however many pieces, is one entity (B- then I-), not several."""
    from datasets import Dataset

    from llmkit.models.resolve import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("tiny-bert"))
    task = ner_task(True, ["O", "B-PER", "I-PER"])
    encoded = task.encode(
        Dataset.from_list([{"tokens": ["Shkvyrin", "scored"], "ner_tags": ["B-PER", "O"]}]), tokenizer
    )
    word_ids = tokenizer(["Shkvyrin", "scored"], is_split_into_words=True).word_ids()
    pieces = word_ids.count(0)
    assert pieces > 1  # the name is split into several sub-tokens
    tags = [task.label_name(label) for label in encoded[0]["labels"] if label != -100]
    assert tags == ["B-PER"] + ["I-PER"] * (pieces - 1) + ["O"] * word_ids.count(1)


@pytest.mark.parametrize("label_all", [False, True])
def test_entity_f1_counts_words_at_their_first_sub_token(label_all: bool) -> None:
    """A prediction right on every word's first sub-token scores F1 = 1 whatever the other sub-tokens say
    and whatever label_all_tokens is: CoNLL's word-level F1, as predict reads the words."""
    import numpy as np
    from datasets import Dataset
    from transformers import EvalPrediction

    from llmkit.data.files import Split
    from llmkit.models.resolve import load_tokenizer, resolve_model

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    words = [
        {"tokens": ["Shkvyrin", "scored"], "ner_tags": ["B-PER", "O"]},
        {
            "tokens": ["Anatoly", "Shkvyrin", "visited", "Dnipropetrovsk"],
            "ner_tags": ["B-PER", "I-PER", "O", "B-LOC"],
        },
    ]
    tokenizer = load_tokenizer(resolve_model("tiny-bert"))
    task = ner_task(label_all, names)
    split = Split("validation", Dataset.from_list(words), Path("validation.jsonl"))
    encoded = task.prepare_evaluation("validation", split, task.encode(split.dataset, tokenizer))
    assert "word_starts" not in encoded.column_names  # bookkeeping, not a model input
    width = max(len(ids) for ids in encoded["input_ids"])
    predicted = np.zeros((len(words), width), dtype=np.int64)
    gold = np.full((len(words), width), -100)
    for row, (record, example) in enumerate(zip(words, encoded, strict=True)):
        gold[row, : len(example["labels"])] = example["labels"]
        previous = None
        for position, word in enumerate(tokenizer(record["tokens"], is_split_into_words=True).word_ids()):
            if word is not None:  # the word's tag first, then I- on its later pieces (as a pipeline reads)
                tag = record["ner_tags"][word]
                later = word == previous and tag != "O"
                predicted[row, position] = names.index(f"I-{tag[2:]}" if later else tag)
            previous = word
    scores = task.compute_metrics()(EvalPrediction(predictions=predicted, label_ids=gold))
    assert (scores["precision"], scores["recall"], scores["f1"]) == (1.0, 1.0, 1.0)


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
def test_validate_shows_the_ner_recipes_examples(tmp_path: Path, run_cli) -> None:
    """[CLS] and [SEP] carry no label (-100): the example lists only the sub-tokens that learn a tag."""
    train = write_conll(tmp_path / "train.conll", rows(6))
    dev = write_conll(tmp_path / "dev.conll", rows(2, 1))
    recipe = REPO / "recipes" / "ner-conll2003.yaml"
    args = ["validate", recipe, f"data.train={train}", f"data.validation={dev}", "model=tiny-bert"]
    shown = run_cli(*args)
    assert shown.exit_code == 0, shown.stderr
    examples = [line for line in shown.stdout.splitlines() if "tagged sub-tokens" in line]
    assert len(examples) == 3
    for line, record in zip(examples, rows(3), strict=True):
        tags = [piece.rsplit("/", 1)[1] for piece in line.split(": ", 1)[1].split()]
        assert tags == record["ner_tags"]  # one tag per word, on its first sub-token
    every_piece = run_cli(*args, "data.label_all_tokens=true")
    assert every_piece.exit_code == 0, every_piece.stderr
    assert "-100" not in every_piece.stdout and "/I-PER" in every_piece.stdout


def predicted_word_tags(record: dict, entities: list[dict]) -> list[str]:
    """Word tags (B-/I-) from predicted entities' character offsets into the words joined by spaces."""
    starts, position = [], 0
    for word in record["tokens"]:
        starts.append(position)
        position += len(word) + 1
    tags = ["O"] * len(starts)
    for entity in entities:
        covered = [i for i, start in enumerate(starts) if entity["start"] <= start < entity["end"]]
        tags[covered[0]] = f"B-{entity['type']}"
        for index in covered[1:]:
            tags[index] = f"I-{entity['type']}"
    return tags


@pytest.mark.parametrize("label_all", [False, True])
def test_predictions_score_the_runs_entity_f1(tmp_path: Path, run_cli, label_all: bool) -> None:
    """`llmkit predict` and test_predictions.jsonl read words as the evaluation does: their entities,
    scored with seqeval against the gold tags, give the run's eval_precision/recall/f1 exactly."""
    from llmkit.metrics import load_metrics

    records = rows(4, 1)
    train = write_jsonl(tmp_path / "train.jsonl", rows(16))
    dev = write_conll(tmp_path / "validation.conll", records)
    unlabelled = write_jsonl(tmp_path / "test.jsonl", [{"tokens": r["tokens"]} for r in records])
    result = finetune(
        tmp_path, train, dev, f"data.test={unlabelled}", f"data.label_all_tokens={str(label_all).lower()}",
        "training.max_steps=20", "training.learning_rate=1e-3",
        "training.precision=fp32",  # predict runs in fp32; a bf16 evaluation could differ in the last digit
    )  # fmt: skip
    assert result.metrics["eval_f1"] > 0  # the tagger finds entities: the comparison is not 0 == 0
    printed = run_cli("predict", "-m", result.output_dir, "-i", dev)
    assert printed.exit_code == 0, printed.stderr
    from_predict = [json.loads(line)["predicted_entities"] for line in printed.stdout.splitlines()]
    written = (result.output_dir / "test_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["predicted_entities"] for line in written] == from_predict
    scores = load_metrics("seqeval").compute(
        predictions=[predicted_word_tags(r, e) for r, e in zip(records, from_predict, strict=True)],
        references=[r["ner_tags"] for r in records],
    )
    for key in ("precision", "recall", "f1"):
        assert scores[key] == pytest.approx(result.metrics[f"eval_{key}"], abs=1e-12), key


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


def test_predict_in_length_order_keeps_each_rows_entities(
    tmp_path: Path, ner_files: tuple[Path, Path]
) -> None:
    """Rows are tagged shortest first (less padding); each row's entities are the ones it gets alone."""
    from llmkit.inference.predict import task_for_model
    from llmkit.models.resolve import load_for_inference, load_tokenizer

    out = finetune(tmp_path, *ner_files).output_dir
    task, tokenizer = task_for_model(out), load_tokenizer(out)
    model = load_for_inference(task, out)
    rows = [json.loads(line) for line in ner_files[0].read_text().splitlines()] * 3
    rows = [{**row, "tokens": row["tokens"][: 2 + n % 5]} for n, row in enumerate(rows)]  # mixed lengths
    together = task.predict(model, tokenizer, rows)
    assert len(rows) > 32  # more than one batch
    for row, prediction in zip(rows, together, strict=True):
        alone = task.predict(model, tokenizer, [row])[0]
        assert [e["text"] for e in prediction["predicted_entities"]] == [
            e["text"] for e in alone["predicted_entities"]
        ]
        assert [e["start"] for e in prediction["predicted_entities"]] == [
            e["start"] for e in alone["predicted_entities"]
        ]
