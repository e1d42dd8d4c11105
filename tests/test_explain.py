"""`--explain`: integrated-gradients word attributions on predict and evaluate (classification and NER)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import llmkit
from llmkit.inference import explain
from llmkit.inference.explain import (
    CAPTUM_MISSING,
    MAX_STEPS,
    N_STEPS,
    TOLERANCE,
    Attribution,
    pad_baseline,
    text_attribution,
)
from llmkit.inference.predict import task_for_model
from llmkit.models.resolve import load_for_inference, load_tokenizer
from tests.conftest import NEGATIVE, POSITIVE
from tests.test_ner import rows as ner_rows

KEYWORD = "blue"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def short_run(folder: Path, recipe: dict[str, Any], train: list[dict], **training: Any) -> Path:
    """A short fp32 run (predict and explain compute in fp32) on ``train``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(folder / "train.jsonl", train)
    settings = {
        **recipe,
        "data": {"train": str(data)},
        "training": {"max_steps": 4, "precision": "fp32", "eval_on_start": False, **training},
        "output_dir": str(folder / "run"),
    }
    return llmkit.finetune(settings).output_dir


def unspaced(texts: Iterable[str]) -> str:
    """The characters of the texts, without spaces: a text's words hold all of them, each once."""
    return "".join("".join(text.split()) for text in texts)


def sentiment_rows() -> list[dict[str, str]]:
    return [{"text": t, "label": "positive"} for t in POSITIVE] + [
        {"text": t, "label": "negative"} for t in NEGATIVE
    ]


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory, llmkit_cache: Path) -> Path:
    return short_run(
        tmp_path_factory.mktemp("sentiment"),
        {"task": "classification", "model": "tiny-bert"},
        sentiment_rows(),
    )


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory: pytest.TempPathFactory, llmkit_cache: Path) -> Path:
    """A tagger that finds entities (PER, ORG, LOC) in '<person> works for <firm> in <place> .'."""
    recipe = {"task": "ner", "model": "tiny-bert"}
    return short_run(tmp_path_factory.mktemp("ner"), recipe, ner_rows(16), max_steps=20, learning_rate=1e-3)


def adds_up(found: Attribution) -> bool:
    """The integral's error is within TOLERANCE of f(x) - f(baseline) (the explainer's own stopping rule)."""
    change = sum(found.raw) - found.delta
    return abs(found.delta) <= TOLERANCE * max(abs(change), 1.0)


def loaded(run: Path):
    task = task_for_model(run)
    return task, load_for_inference(task, run), load_tokenizer(run)


def test_attributions_cover_every_word_sum_to_one_and_add_up_to_the_logit_change(sentiment_run: Path) -> None:
    import torch

    task, model, tokenizer = loaded(sentiment_run)
    rows = [{"text": POSITIVE[0]}, {"text": NEGATIVE[4]}, {"text": "Brilliant, funny -- and moving!"}]
    for row, prediction in zip(rows, task.predict(model, tokenizer, rows), strict=True):
        found = text_attribution(task, model, tokenizer, row, prediction)
        assert found.target == prediction["predicted_label"]
        if "," not in row["text"]:
            assert found.words == row["text"].split()  # whole words, however many pieces each
        assert unspaced(found.words) == unspaced([row["text"]])  # every character, punctuation too
        record = found.record()
        assert [word for word, _ in record["words"]] == found.words
        assert sum(abs(score) for _, score in record["words"]) == pytest.approx(1, abs=1e-3)
        # completeness: the raw attributions add up to f(x) - f(baseline), computed here on their own
        encoded = tokenizer(row["text"], return_tensors="pt", return_special_tokens_mask=True)
        inputs = {key: value for key, value in encoded.items() if key != "special_tokens_mask"}
        index = model.config.label2id[found.target]
        with torch.no_grad():
            change = float(
                model(**inputs).logits[0, index]
                - model(**{**inputs, "input_ids": pad_baseline(tokenizer, encoded)}).logits[0, index]
            )
        assert sum(found.raw) - found.delta == pytest.approx(change, abs=1e-4)
        assert abs(found.delta) <= TOLERANCE * max(abs(change), 1.0) and found.steps == N_STEPS


def test_a_decoder_classifier_adds_up_too() -> None:
    """A GPT-2 classifier reads its ids besides the embeddings (it pools at the last non-pad token): the
    delta is measured on the integral's own path, so it is the integral's error, not that difference."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from llmkit.inference.predict import task_with_defaults
    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.classification import ClassificationTask

    folder = resolve_model("tiny-gpt2")
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, pad_token_id=tokenizer.pad_token_id
    ).eval()
    task = task_with_defaults(ClassificationTask, {"problem": "single_label"})
    row = {"text": POSITIVE[0]}
    found = text_attribution(task, model, tokenizer, row, task.predict(model, tokenizer, [row])[0])
    change = sum(found.raw) - found.delta
    assert len(found.words) == len(row["text"].split()) and change != 0
    # a smooth (untrained) model: 32 steps are all but exact; measured from the pad ids, which move the
    # pooled position to the first token, the "delta" was off by 5 % of a logit
    assert abs(found.delta) <= 1e-3 * max(abs(change), 1.0) and found.steps == N_STEPS


def test_the_word_that_decides_the_label_gets_the_largest_attribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier trained on label = 'the text holds KEYWORD' is explained by KEYWORD, wherever it is."""
    train = []
    for number, text in enumerate(POSITIVE + NEGATIVE):
        words = text.split()
        at = number % len(words)
        with_keyword = " ".join([*words[:at], KEYWORD, *words[at:]])
        train += [{"text": with_keyword, "label": "yes"}, {"text": text, "label": "no"}]
    recipe = {"task": "classification", "model": "tiny-bert"}
    run = short_run(tmp_path, recipe, train, max_steps=40, learning_rate=2e-3, eval_strategy="no")
    task, model, tokenizer = loaded(run)
    rows = [
        {"text": f"the {KEYWORD} film was dull"},
        {"text": f"a cat sat on the {KEYWORD} mat"},
        {"text": f"{KEYWORD} skies and cold rain"},
    ]
    predictions = task.predict(model, tokenizer, rows)
    assert [p["predicted_label"] for p in predictions] == ["yes"] * 3  # the model learned the rule
    for row, prediction in zip(rows, predictions, strict=True):
        found = text_attribution(task, model, tokenizer, row, prediction)
        strongest = max(zip(found.words, found.raw, strict=True), key=lambda pair: abs(pair[1]))
        assert strongest[0] == KEYWORD and strongest[1] > 0, found

    # an integral too coarse for the model's change along the path is refined until it adds up, and only
    # then: one step (refinement off) misses on some rows, not necessarily on all (it depends on the model)
    monkeypatch.setattr(explain, "N_STEPS", 1)
    monkeypatch.setattr(explain, "MAX_STEPS", 1)
    coarse = [
        text_attribution(task, model, tokenizer, row, p) for row, p in zip(rows, predictions, strict=True)
    ]
    monkeypatch.setattr(explain, "MAX_STEPS", MAX_STEPS)
    refined = [
        text_attribution(task, model, tokenizer, row, p) for row, p in zip(rows, predictions, strict=True)
    ]
    missed = [not adds_up(found) for found in coarse]
    assert any(missed), coarse
    for found, one_step_missed in zip(refined, missed, strict=True):
        assert adds_up(found) and (found.steps > 1) == one_step_missed, found


def test_predict_explain_adds_an_explanation_to_each_row(
    sentiment_run: Path, tmp_path: Path, run_cli
) -> None:
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": text} for text in (POSITIVE[2], NEGATIVE[3])])
    plain = run_cli("predict", "-m", sentiment_run, "-i", rows)
    explained = run_cli("predict", "-m", sentiment_run, "-i", rows, "--explain")
    assert explained.exit_code == 0, explained.stderr
    for before, after in zip(plain.stdout.splitlines(), explained.stdout.splitlines(), strict=True):
        row, with_why = json.loads(before), json.loads(after)
        why = with_why.pop("explanation")
        assert with_why == row  # the predictions are as they were; the explanation is added beside them
        assert set(why) == {"target", "words", "delta", "steps"} and why["target"] == row["predicted_label"]
        assert [word for word, _ in why["words"]] == row["text"].split()
        assert sum(abs(score) for _, score in why["words"]) == pytest.approx(1, abs=1e-3)


def test_ner_explains_each_predicted_entity_in_predict_and_evaluate(
    ner_run: Path, tmp_path: Path, run_cli
) -> None:
    records = ner_rows(3, 1)
    labelled = write_jsonl(tmp_path / "labelled.jsonl", records)
    unlabelled = write_jsonl(tmp_path / "rows.jsonl", [{"tokens": r["tokens"]} for r in records])
    printed = run_cli("predict", "-m", ner_run, "-i", unlabelled, "--explain")
    assert printed.exit_code == 0, printed.stderr
    found = [json.loads(line) for line in printed.stdout.splitlines()]
    assert any(row["predicted_entities"] for row in found)  # the tagger finds entities to explain
    for row in found:
        assert len(row["explanation"]) == len(row["predicted_entities"])
        for entity, why in zip(row["predicted_entities"], row["explanation"], strict=True):
            assert why["entity"] == entity["text"] and why["target"][2:] == entity["type"]
            assert [word for word, _ in why["words"]] == row["tokens"]  # the sentence's words, each once
            assert sum(abs(score) for _, score in why["words"]) == pytest.approx(1, abs=1e-3)

    out = tmp_path / "evaluation"
    result = run_cli(
        "evaluate",
        ner_run,
        "--data",
        labelled,
        "--output",
        out,
        "--resamples",
        "0",
        "--worst",
        "2",
        "--explain",
    )
    assert result.exit_code == 0, result.stderr
    worst = json.loads((out / "evaluation.json").read_text())["models"][0]["analysis"]["worst"]
    assert len(worst) == 2 and all(isinstance(entry["explanation"], list) for entry in worst)
    assert "### Why: the worst rows explained" in (out / "evaluation.md").read_text()
    assert '<span style="background:rgba(' in (out / "explanations.html").read_text()


def test_evaluate_explain_on_a_lora_run_writes_the_worst_rows_explained(tmp_path: Path, run_cli) -> None:
    run = short_run(
        tmp_path, {"task": "classification", "model": "tiny-bert", "peft": {"r": 4}}, sentiment_rows()
    )
    tricky = "<b>bold</b> & brash"  # text that must come out as text in the page
    data = write_jsonl(
        tmp_path / "data.jsonl", [*sentiment_rows()[8:12], {"text": tricky, "label": "negative"}]
    )
    out = tmp_path / "evaluation"
    result = run_cli(
        "evaluate", run, "--data", data, "--output", out, "--resamples", "0", "--worst", "5", "--explain"
    )
    assert result.exit_code == 0, result.stderr
    analysis = json.loads((out / "evaluation.json").read_text())["models"][0]["analysis"]
    assert "integrated gradients" in analysis["explained_by"]
    assert len(analysis["worst"]) == 5
    for entry in analysis["worst"]:
        assert entry["explanation"]["target"] == entry["prediction"]
        assert " ".join(word for word, _ in entry["explanation"]["words"]).replace(" ", "") == entry[
            "input"
        ].replace(" ", "")
    report = (out / "evaluation.md").read_text()
    section = report[report.index("### Why: the worst rows explained") :]
    assert section.count("\n- row ") == 5 and "⁺" in section  # each row, its strongest words marked
    page = (out / "explanations.html").read_text()
    assert ">&lt;</span>" in page and ">&amp;</span>" in page and "<b>bold</b>" not in page
    assert page.count('<p class="words">') == 5


def test_explain_errors_are_one_line(
    sentiment_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForQuestionAnswering

    from llmkit.models.resolve import resolve_model

    reader = tmp_path / "reader"  # a plain Hugging Face QA folder: its task is read from its architecture
    AutoModelForQuestionAnswering.from_pretrained(resolve_model("tiny-bert")).save_pretrained(reader)
    load_tokenizer(resolve_model("tiny-bert")).save_pretrained(reader)
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": POSITIVE[0], "label": "positive"}])
    taken = write_jsonl(tmp_path / "taken.jsonl", [{"text": POSITIVE[0], "explanation": "mine"}])
    cases = [
        (("predict", "-m", reader, "-i", rows), "--explain: question-answering models cannot be explained"),
        (("evaluate", reader, "--data", rows), "--explain: question-answering models cannot be explained"),
        (("predict", "-m", sentiment_run, "-i", taken), "already has a column 'explanation'"),
    ]
    for args, expected in cases:
        result = run_cli(*args, "--explain")
        assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last, result.stderr

    monkeypatch.setitem(sys.modules, "captum", None)  # as if captum were not installed
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    for args in (("predict", "-m", sentiment_run, "-i", rows), ("evaluate", sentiment_run, "--data", rows)):
        result = run_cli(*args, "--explain")
        assert result.exit_code == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"error: {CAPTUM_MISSING}", result.stderr


def test_multi_label_and_regression_explain_the_likeliest_label_and_the_score() -> None:
    from types import SimpleNamespace

    from llmkit.inference.explain import classification_target
    from llmkit.inference.predict import task_with_defaults
    from llmkit.tasks.classification import ClassificationTask

    model = SimpleNamespace(config=SimpleNamespace(id2label={0: "joy", 1: "love", 2: "anger"}))
    cases = [
        (
            "multi_label",
            {"predicted_labels": [], "probabilities": {"joy": 0.2, "love": 0.4, "anger": 0.1}},
            ("love", 1),
        ),
        ("single_label", {"predicted_label": "anger", "predicted_score": 0.5}, ("anger", 2)),
        ("regression", {"predicted_score": 3.5}, ("score", 0)),
    ]
    for problem, prediction, expected in cases:
        task = task_with_defaults(ClassificationTask, {"problem": problem})
        assert classification_target(task, model, prediction) == expected, problem
