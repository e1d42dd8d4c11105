"""`llmkit evaluate`: training's own evaluation re-run on a file, bootstrap intervals, models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.inference.evaluate import (
    RowOutcomes,
    evaluate_models,
    multi_label_counts,
    paired_p_value,
    resampled_metrics,
    single_label_counts,
)
from tests.conftest import NEGATIVE, POSITIVE

WORDS = POSITIVE + NEGATIVE
COLOURS = ["red", "blue", "green", "yellow"]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def sentiment(index: int) -> dict[str, Any]:
    return {"text": WORDS[index % 20], "label": "positive" if index % 20 < 10 else "negative"}


def entity_row(index: int) -> dict[str, Any]:
    person, place = ["Anna", "Tom", "Maria", "Peter"][index % 4], ["Berlin", "Paris", "Rome"][index % 3]
    return {"tokens": [person, "lives", "in", place, "."], "ner_tags": ["B-PER", "O", "O", "B-LOC", "O"]}


def question(index: int, answerable: bool = True) -> dict[str, Any]:
    filler = " ".join(f"Sentence {i} says nothing." for i in range(index % 3 * 4))
    name = ["Anna", "Tom", "Maria"][index % 3]
    context = f"{filler} {name} lives in Berlin and works at the museum.".strip()
    answers = (
        {"text": [name], "answer_start": [context.index(name)]}
        if answerable
        else {
            "text": [],
            "answer_start": [],
        }
    )
    return {"question": "Who lives in Berlin?", "context": context, "answers": answers}


def pair(index: int) -> dict[str, str]:
    colour, other = COLOURS[index % 4], COLOURS[(index + 1) % 4]
    return {"prompt": f"Name the colour {colour}.", "chosen": colour, "rejected": f"{other} {other}"}


def unpaired(index: int) -> dict[str, Any]:
    """KTO's row: a completion and whether it is desirable (the colour asked for) or not."""
    row = pair(index)
    desirable = index % 2 == 0
    return {
        "prompt": row["prompt"],
        "completion": row["chosen" if desirable else "rejected"],
        "label": desirable,
    }


def sum_question(index: int) -> dict[str, Any]:
    a, b = index % 7 + 1, index % 3 + 2
    return {"prompt": f"What is {a} plus {b}? End with 'Answer: N'.", "answer": a + b}


#: name -> (recipe, a training row, a validation row): every task (and problem type) llmkit trains.
CASES: dict[str, tuple[dict[str, Any], Any, Any]] = {
    "classification": (
        {"task": "classification", "model": "tiny-bert"},
        sentiment,
        lambda i: sentiment(i + 7),
    ),
    "classification-lora": (
        {"task": "classification", "model": "tiny-bert", "peft": {"r": 4}},
        sentiment,
        lambda i: sentiment(i + 7),
    ),
    "multi-label": (
        {"task": "classification", "model": "tiny-bert"},
        lambda i: {"text": WORDS[i % 20], "label": [["joy"], ["joy", "love"], ["anger"]][i % 3]},
        lambda i: {"text": WORDS[(i + 5) % 20], "label": [["love"], ["anger", "joy"]][i % 2]},
    ),
    "regression": (
        {"task": "classification", "model": "tiny-bert"},
        lambda i: {"text": WORDS[i % 20], "label": (i % 7) / 2 + 0.25},
        lambda i: {"text": WORDS[(i + 3) % 20], "label": (i % 5) / 2 + 0.5},
    ),
    "ner": ({"task": "ner", "model": "tiny-bert"}, entity_row, lambda i: entity_row(i + 1)),
    "qa": (
        {"task": "question-answering", "model": "tiny-bert", "data": {"max_length": 48, "doc_stride": 16}},
        question,
        lambda i: question(i + 1),
    ),
    "qa-v2": (
        {
            "task": "question-answering",
            "model": "tiny-bert",
            "data": {"max_length": 48, "doc_stride": 16, "version_2_with_negative": True},
        },
        lambda i: question(i, answerable=i % 3 != 0),
        lambda i: question(i + 1, answerable=i % 2 == 0),
    ),
    "fill-mask": (
        {"task": "fill-mask", "model": "tiny-bert", "data": {"max_length": 24}},
        lambda i: {"text": f"{WORDS[i % 20]} and {WORDS[(i + 3) % 20]}"},
        lambda i: {"text": f"{WORDS[(i + 1) % 20]} and {WORDS[(i + 9) % 20]}"},
    ),
    "fill-mask-next-sentence": (  # BertForPreTraining: two heads, so two label arrays a row
        {"task": "fill-mask", "model": "tiny-bert", "data": {"max_length": 32, "next_sentence": True}},
        lambda i: {"text": "\n".join(WORDS[(i + step) % 20] for step in (0, 3, 7))},
        lambda i: {"text": "\n".join(WORDS[(i + step) % 20] for step in (1, 9, 14))},
    ),
    "generation-text": (
        {"task": "generation", "model": "tiny-gpt2", "data": {"max_length": 16, "max_new_tokens": 4}},
        lambda i: {"text": f"{WORDS[i % 20]} and {WORDS[(i + 3) % 20]}"},
        lambda i: {"text": f"{WORDS[(i + 1) % 20]} and {WORDS[(i + 9) % 20]}"},
    ),
    "generation-instruction": (
        {"task": "generation", "model": "tiny-gpt2", "data": {"max_length": 96, "max_new_tokens": 4}},
        lambda i: {"instruction": f"Name the colour {COLOURS[i % 4]}.", "output": COLOURS[i % 4]},
        lambda i: {"instruction": f"Name the colour {COLOURS[(i + 1) % 4]}.", "output": COLOURS[(i + 1) % 4]},
    ),
    "summarization": (
        {"task": "summarization", "model": "tiny-t5", "data": {"max_length": 32, "max_new_tokens": 6}},
        lambda i: {"document": f"{WORDS[i % 20]} and then {WORDS[(i + 1) % 20]}", "summary": WORDS[i % 20]},
        lambda i: {"document": f"{WORDS[(i + 4) % 20]} said twice", "summary": WORDS[(i + 4) % 20]},
    ),
    "summarization-causal": (
        {
            "task": "summarization",
            "model": "tiny-gpt2",
            "data": {"max_length": 48, "max_target_length": 8, "max_new_tokens": 4},
        },
        lambda i: {"document": f"{WORDS[i % 20]} and then {WORDS[(i + 1) % 20]}", "summary": WORDS[i % 20]},
        lambda i: {"document": f"{WORDS[(i + 4) % 20]} said twice", "summary": WORDS[(i + 4) % 20]},
    ),
    "translation": (
        {
            "task": "translation",
            "model": "tiny-t5",
            "data": {"source_lang": "en", "target_lang": "de", "max_length": 32, "max_new_tokens": 6},
        },
        lambda i: {"en": WORDS[i % 20], "de": WORDS[(i + 10) % 20]},
        lambda i: {"en": WORDS[(i + 2) % 20], "de": WORDS[(i + 12) % 20]},
    ),
    "preference": (
        {
            "task": "preference",
            "model": "tiny-gpt2",
            "data": {"use_chat_template": False, "max_length": 128, "max_prompt_length": 64},
        },
        pair,
        lambda i: pair(i + 2),
    ),
    "preference-orpo": (
        {
            "task": "preference",
            "model": "tiny-gpt2",
            "data": {"use_chat_template": False, "max_length": 128, "max_prompt_length": 64},
            "preference": {"method": "orpo"},
        },
        pair,
        lambda i: pair(i + 2),
    ),
    "preference-kto": (  # unpaired rows, with LoRA: the reference is the adapter switched off
        {
            "task": "preference",
            "model": "tiny-gpt2",
            "data": {"use_chat_template": False, "max_length": 128, "max_prompt_length": 64},
            "preference": {"method": "kto"},
            "peft": {"r": 4},
        },
        unpaired,
        lambda i: unpaired(i + 2),
    ),
    "reward-model": (
        {"task": "reward-model", "model": "tiny-bert", "data": {"max_length": 96, "max_prompt_length": 64}},
        pair,
        lambda i: pair(i + 2),
    ),
    "reward-model-lora": (
        {
            "task": "reward-model",
            "model": "tiny-gpt2",
            "data": {"max_length": 128, "max_prompt_length": 64},
            "peft": {"r": 4},
        },
        pair,
        lambda i: pair(i + 2),
    ),
    "grpo": (  # one greedy completion per prompt, scored by its rewards and exact match of its final answer
        {
            "task": "grpo",
            "model": "tiny-gpt2",
            "data": {"use_chat_template": False, "max_prompt_length": 64},
            "grpo": {
                "rewards": [
                    {"name": "answer"},
                    {"name": "format", "pattern": "[aeiou]"},
                    {"name": "length", "max_tokens": 5},
                ],
                "num_generations": 2,
                "max_completion_length": 6,
            },
        },
        sum_question,
        lambda i: sum_question(i + 5),
    ),
}


def train_case(name: str, folder: Path) -> tuple[Path, Path]:
    """A short run of one case; returns its folder and its validation file."""
    recipe, train_row, validation_row = CASES[name]
    folder.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(folder / "train.jsonl", [train_row(i) for i in range(12)])
    validation = write_jsonl(folder / "validation.jsonl", [validation_row(i) for i in range(6)])
    settings = {
        **recipe,
        "data": {**recipe.get("data", {}), "train": str(train), "validation": str(validation)},
        "training": {
            "max_steps": 2,
            "learning_rate": 1e-3,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,  # 6 rows: batches of 4 and 2
            "eval_on_start": False,
        },
        "output_dir": str(folder / "run"),
    }
    return llmkit.finetune(settings).output_dir, validation


def eval_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in metrics.items()
        if key.startswith(("eval_", "validation_"))
        and not key.startswith("eval_before_")
        and not key.endswith(("_runtime", "_per_second"))
    }


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate_on_the_validation_file_gives_back_the_runs_eval_metrics(name: str, tmp_path: Path) -> None:
    run, validation = train_case(name, tmp_path)
    trained = eval_scores(json.loads((run / "metrics.json").read_text()))
    assert trained, "the run recorded no validation scores"

    evaluation = evaluate_models([str(run)], str(validation), resamples=20)

    scored = evaluation.scores[0]
    # the same code on the same rows, in the same precision (a DPO policy beside its prepared reference was
    # scored in fp32 against a bf16 reference where `precision: auto` picks bf16). To the 7th digit, not the
    # last bit: MKL picks its thread count by the machine's load (MKL_DYNAMIC), and a float32 sum in another
    # order moved a loss by 5e-8 on a busy machine; any other difference in code or rows moves it far more.
    assert eval_scores(scored.metrics) == pytest.approx(trained, rel=1e-6, abs=1e-9)
    assert not [key for key in scored.metrics if key.endswith(("epoch", "input_tokens_seen"))]  # not scores
    if scored.outcomes is not None:  # what the bootstrap resamples: on every row once, the scores themselves
        again = scored.outcomes.on_rows(np.arange(scored.outcomes.count))
        shared = [key for key in again if isinstance(scored.metrics.get(f"eval_{key}"), float)]
        assert shared and all(again[key] == pytest.approx(scored.metrics[f"eval_{key}"]) for key in shared)
    folder = evaluation.output_dir
    assert folder.parent == run / "evaluations"
    record = json.loads((folder / "evaluation.json").read_text())
    assert record["models"][0]["metrics"] == json.loads(json.dumps(scored.metrics))
    # the intervals' legend only where there are intervals (generation has none)
    assert ("[low, high]" in (folder / "evaluation.md").read_text()) == bool(scored.intervals)
    if name.startswith(
        "preference"
    ):  # TRL reports batch means: the 2 batches (4 and 2 pairs) are what is resampled
        headline = (
            "eval_reward_margin" if name == "preference-kto" else "eval_reward_accuracy"
        )  # KTO: no pairs
        assert scored.outcomes.count == 2 and headline in scored.intervals
        unit = "rows (desirable or undesirable)" if name == "preference-kto" else "pairs"
        legend = f"resamples of the evaluation batches (up to 4 {unit} each)"
        assert legend in (folder / "evaluation.md").read_text()
    if name.startswith("fill-mask"):  # its rows hold no [MASK] to predict
        assert record["models"][0]["predictions"] is None and not (folder / "predictions.jsonl").exists()
        assert "eval_masked_accuracy" in scored.intervals  # resampled per row (NSP: per sentence pair)
        return
    predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    given = [json.loads(line) for line in validation.read_text().splitlines()]
    assert len(predictions) == len(given)
    assert all(row.items() >= original.items() for row, original in zip(predictions, given, strict=True))
    for key, (low, high) in scored.intervals.items():
        assert low <= high, key


def test_several_models_side_by_side_with_paired_p_values_and_overrides(tmp_path: Path, run_cli) -> None:
    first, validation = train_case("classification", tmp_path / "a")
    second = llmkit.finetune(
        str(first / "recipe.yaml"), [f"output_dir={tmp_path / 'b'}", "training.max_steps=6"]
    ).output_dir
    renamed = write_jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"review": row["text"], "label": row["label"]}
            for row in map(json.loads, validation.read_text().splitlines())
        ],
    )
    out = tmp_path / "comparison"

    result = run_cli(
        "evaluate", first, second, "--data", renamed, "data.text=review", "--output", out, "--resamples", "30"
    )

    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "evaluation.json").read_text())
    assert [m["rows"] for m in record["models"]] == [6, 6]
    difference = record["models"][1]["difference_to_first"]["eval_accuracy"]
    accuracies = [m["metrics"]["eval_accuracy"] for m in record["models"]]
    assert difference["difference"] == pytest.approx(accuracies[1] - accuracies[0])
    assert 0 < difference["p_value"] <= 1
    table = (out / "evaluation.md").read_text()
    assert "| accuracy |" in table and "bootstrap interval" in table and "p-value" in table
    assert {p.name for p in out.iterdir()} >= {"evaluation.json", "evaluation.md"}
    assert len(list(out.glob("predictions-*.jsonl"))) == 2
    assert record["comparison_chart"] == {"file": "comparison.png"}  # the shared scores, drawn
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](comparison.png)" in table
    from llmkit.inference.evaluation_report import charted_metrics

    assert charted_metrics(record["models"]) == ["eval_accuracy", "eval_f1", "eval_matthews_correlation"]
    again = run_cli("evaluate", first, "--data", renamed, "data.text=review", "--output", out)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_no_predictions_scores_a_preference_run_without_generating_replies(tmp_path: Path, run_cli) -> None:
    run, validation = train_case("preference", tmp_path)
    out = tmp_path / "scores-only"

    result = run_cli("evaluate", run, "--data", validation, "--output", out, "--no-predictions")

    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "evaluation.json").read_text())
    assert record["models"][0]["predictions"] is None and not list(out.glob("predictions*.jsonl"))
    trained = json.loads((run / "metrics.json").read_text())
    assert record["models"][0]["metrics"]["eval_reward_accuracy"] == trained["eval_reward_accuracy"]


def test_vectorized_resampling_equals_the_metric_modules_on_each_resample() -> None:
    from transformers import EvalPrediction

    from llmkit.tasks.base import Task
    from llmkit.tasks.classification import ClassificationTask

    rng = np.random.default_rng(1)
    labels, predictions = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    predictions[:5] = 2
    task = ClassificationTask(
        {
            **Task.data_defaults,
            **ClassificationTask.data_defaults,
            "label_names": None,
            "problem": "single_label",
        }
    )
    compute = task.compute_metrics()
    draws = rng.integers(0, 200, size=(5, 200))
    draws[0] = np.where(labels == 0)[0][0]  # a resample of one class only: F1 over the classes present
    counts = np.zeros((5, 200))
    np.add.at(counts, (np.repeat(np.arange(5), 200), draws.ravel()), 1.0)
    fast = single_label_counts(predictions, labels)(counts)
    for number, indices in enumerate(draws):
        slow = compute(EvalPrediction(predictions=predictions[indices], label_ids=labels[indices]))
        for key, value in slow.items():
            assert fast[key][number] == pytest.approx(value, abs=1e-12), key


def test_vectorized_multi_label_resampling_equals_one_compute_per_resample() -> None:
    from transformers import EvalPrediction

    from llmkit.tasks.base import Task
    from llmkit.tasks.classification import ClassificationTask

    rng = np.random.default_rng(2)
    gold = (rng.random((60, 3)) < 0.3).astype(np.float32)
    gold[:, 2] = 0  # a label that occurs once only: absent from some resamples
    gold[7, 2] = 1
    probabilities = rng.random((60, 3)).astype(np.float32)
    task = ClassificationTask(
        {
            **Task.data_defaults,
            **ClassificationTask.data_defaults,
            "label_names": ["joy", "love", "anger"],
            "problem": "multi_label",
        }
    )
    task.label_names = ["joy", "love", "anger"]
    compute = task.compute_metrics()

    def on_rows(indices: np.ndarray) -> dict[str, float]:
        return compute(EvalPrediction(predictions=probabilities[indices], label_ids=gold[indices]))

    draws = rng.integers(0, 60, size=(40, 60))
    slow = resampled_metrics(RowOutcomes(60, on_rows), draws)
    fast = resampled_metrics(
        RowOutcomes(60, on_rows, multi_label_counts(probabilities >= 0.5, gold == 1, task.label_names)), draws
    )
    assert set(fast) == set(slow) and "f1_label_joy" in fast
    for key, values in slow.items():
        assert fast[key] == pytest.approx(values, abs=1e-12), key


def test_rouge_on_resampled_rows_is_their_mean_not_their_sum() -> None:
    """The bootstrap feeds the scorer each resample's texts through add() alone (no batch counting)."""
    from types import SimpleNamespace

    from llmkit.tasks.summarization import RougeInBatches

    scorer = RougeInBatches(SimpleNamespace(pad_token_id=0))
    scorer.add(["the cat sat", "a dog"], ["the cat sat", "two birds"])
    assert scorer.result()["rouge1"] == pytest.approx(0.5)  # (1 + 0) / 2
    scorer.reset()
    scorer.add(["a dog"], ["a dog"])
    assert scorer.result()["rouge1"] == pytest.approx(1.0)


def test_paired_p_value() -> None:
    assert paired_p_value(np.array([0.1] * 99 + [-0.1])) == pytest.approx(0.02)
    assert paired_p_value(np.array([0.1] * 100)) == pytest.approx(1 / 101)
    assert paired_p_value(np.array([0.1, -0.1] * 50)) == 1.0


def test_bad_input_is_one_line(tmp_path: Path, run_cli) -> None:
    run, validation = train_case("ner", tmp_path)
    unlabelled = write_jsonl(tmp_path / "unlabelled.jsonl", [{"tokens": ["Anna", "lives"]}])
    qa_file = write_jsonl(tmp_path / "qa.jsonl", [question(0)])
    cases = [
        ((run, "--data", unlabelled), "no column 'ner_tags'"),
        ((run, "--data", qa_file), "does token-classification"),
        ((tmp_path / "nowhere", "--data", validation), "does not exist"),
        ((run, "--data", tmp_path / "missing.jsonl"), "no such file"),
        ((run, "--data", validation, "--max-samples", "0"), "--max-samples"),
        ((run, "--data", validation, "--slice-by", "source"), "has no column 'source'"),
        ((run, "--data", validation, "--length-order"), "--length-order: token-classification"),
    ]
    for args, expected in cases:
        result = run_cli("evaluate", *args)
        assert result.exit_code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
        assert "Traceback" not in result.stderr
    assert not (run / "evaluations").exists()


def test_evaluate_refuses_a_hub_dataset_that_is_not_cached(tmp_path: Path, run_cli) -> None:
    run, _ = train_case("classification", tmp_path)
    result = run_cli("evaluate", run, "--data", "nobody/no-such-dataset", "--split", "test")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()[-1]) > 10
    assert "Traceback" not in result.stderr


def test_max_samples_and_evaluations_never_overwrite(tmp_path: Path) -> None:
    run, validation = train_case("classification", tmp_path)
    first = evaluate_models([str(run)], str(validation), max_samples=3, resamples=0)
    second = evaluate_models([str(run)], str(validation), max_samples=3, resamples=0)
    assert first.scores[0].rows == 3 and first.output_dir != second.output_dir
    assert (first.output_dir / "evaluation.json").exists() and (
        second.output_dir / "evaluation.json"
    ).exists()
    settings = str(run / "recipe.yaml")
    llmkit.finetune(settings, ["training.max_steps=1"], overwrite=True)  # evaluations are llmkit's own
    assert not (run / "evaluations").exists()


def test_a_plain_hugging_face_folder_is_scored_by_its_architecture(tmp_path: Path) -> None:
    run, validation = train_case("classification", tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in run.iterdir():
        if path.is_file() and path.name not in ("recipe.yaml", "metrics.json"):
            (plain / path.name).write_bytes(path.read_bytes())
    evaluation = evaluate_models([str(plain)], str(validation), resamples=0, write_predictions=False)
    assert evaluation.scores[0].task == "classification"
    assert 0 <= evaluation.scores[0].metrics["eval_accuracy"] <= 1


def test_llmkit_errors_are_raised_for_an_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(LlmkitError, match="does not exist"):
        evaluate_models([str(tmp_path / "missing")], str(tmp_path / "x.jsonl"))


@pytest.mark.parametrize("name", ["classification", "multi-label", "regression", "classification-lora"])
def test_classification_predictions_come_from_the_scoring_pass_and_match_predict(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit.inference.predict import predict_file
    from llmkit.tasks.classification import ClassificationTask

    run, validation = train_case(name, tmp_path)

    def no_second_pass(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("evaluate ran predict: a second pass over the rows")

    with monkeypatch.context() as patched:
        patched.setattr(ClassificationTask, "predict", no_second_pass)
        # fp32 as predict computes (a bf16 run's evaluation autocasts as training did: scores within ~1e-3)
        evaluation = evaluate_models([str(run)], str(validation), ["training.precision=fp32"], resamples=0)
    written_file = evaluation.output_dir / "predictions.jsonl"
    written = [json.loads(line) for line in written_file.read_text().splitlines()]

    predicted = predict_file(str(run), validation, tmp_path / "predicted.jsonl")
    assert len(written) == len(predicted) == 6
    analysis = evaluation.scores[0].analysis
    assert len(analysis["worst"]) == 6 and analysis["worst"][0]["error"] >= analysis["worst"][-1]["error"]
    assert ("per_class" in analysis) == (name != "regression")
    for ours, theirs in zip(written, predicted, strict=True):
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-5), key


def test_classification_error_analysis_per_class_confusion_worst_rows_and_slices(
    tmp_path: Path, run_cli
) -> None:
    run, validation = train_case("classification", tmp_path)
    rows = [json.loads(line) for line in validation.read_text().splitlines()]
    sourced = write_jsonl(
        tmp_path / "sourced.jsonl", [{**row, "source": ["web", "mail"][i % 2]} for i, row in enumerate(rows)]
    )
    out = tmp_path / "analysis"

    result = run_cli(
        "evaluate", run, "--data", sourced, "--output", out, "--slice-by", "source", "--worst", "4"
    )

    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "evaluation.json").read_text())["models"][0]
    analysis, metrics = record["analysis"], record["metrics"]
    predicted = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    gold = [row["label"] for row in predicted]
    guessed = [row["predicted_label"] for row in predicted]
    confusion = analysis["confusion"]
    assert sorted(confusion["labels"]) == ["negative", "positive"]
    for g_index, g in enumerate(confusion["labels"]):
        for p_index, p in enumerate(confusion["labels"]):
            expected = sum(1 for a, b in zip(gold, guessed, strict=True) if (a, b) == (g, p))
            assert confusion["matrix"][g_index][p_index] == expected
    for label, scores in analysis["per_class"].items():
        hits = sum(1 for a, b in zip(gold, guessed, strict=True) if a == b == label)
        assert scores["support"] == gold.count(label)
        assert scores["recall"] == pytest.approx(hits / gold.count(label) if gold.count(label) else 0.0)
        assert scores["precision"] == pytest.approx(
            hits / guessed.count(label) if guessed.count(label) else 0.0
        )
    assert (out / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert analysis["confusion_image"] == {"file": "confusion_matrix.png"}

    worst = analysis["worst"]
    assert len(worst) == 4 and [w["error"] for w in worst] == sorted(
        (w["error"] for w in worst), reverse=True
    )
    for entry in worst:
        row = predicted[entry["row"] - 1]
        assert (entry["input"], entry["gold"], entry["prediction"]) == (
            row["text"],
            row["label"],
            row["predicted_label"],
        )
        if (
            row["label"] == row["predicted_label"]
        ):  # the gold class is the predicted one: -log its probability
            assert entry["error"] == pytest.approx(-np.log(row["predicted_score"]), abs=1e-2)

    slices = analysis["slices"]
    assert analysis["slice_metric"] == "accuracy"
    assert set(slices) == {"label", "input length", "source"}
    for group in slices["source"]:
        members = [row for row in predicted if row["source"] == group["value"]]
        correct = sum(row["label"] == row["predicted_label"] for row in members)
        assert group["rows"] == len(members) and group["accuracy"] == pytest.approx(correct / len(members))
    assert [g["accuracy"] for g in slices["source"]] == sorted(g["accuracy"] for g in slices["source"])
    assert sum(group["rows"] for group in slices["input length"]) == 6
    for group in slices["label"]:
        assert group["accuracy"] == pytest.approx(analysis["per_class"][group["value"]]["recall"])
    report = (out / "evaluation.md").read_text()
    for heading in (
        "### Per class",
        "### Confusion matrix",
        "![confusion matrix](confusion_matrix.png)",
        "### Worst 4 rows",
        "### Weakest slices (by accuracy)",
        "| source |",
    ):
        assert heading in report, heading
    assert sum(sum(row) for row in confusion["matrix"]) * metrics["eval_accuracy"] == pytest.approx(
        sum(confusion["matrix"][i][i] for i in range(2))
    )


def test_without_matplotlib_the_confusion_matrix_image_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    run, validation = train_case("classification", tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError

    evaluation = evaluate_models([str(run)], str(validation), resamples=0)

    analysis = evaluation.scores[0].analysis
    assert "matplotlib is not installed" in analysis["confusion_image"]["skipped"]
    assert not list(evaluation.output_dir.glob("*.png"))
    assert (
        "image skipped: matplotlib is not installed" in (evaluation.output_dir / "evaluation.md").read_text()
    )
    assert analysis["confusion"]["matrix"]  # the numbers are there all the same


def test_ner_error_analysis_per_entity_type_and_wrong_entities(tmp_path: Path) -> None:
    from llmkit.tasks.token_classification import entity_spans

    run, validation = train_case("ner", tmp_path)
    evaluation = evaluate_models([str(run)], str(validation), resamples=0, worst=6)

    scored = evaluation.scores[0]
    per_type = scored.analysis["per_type"]
    assert set(per_type) <= {"PER", "LOC"} and per_type
    for kind, values in per_type.items():  # seqeval's per-type report: the run's own per-type scores
        for key in ("precision", "recall", "f1"):
            assert values[key] == pytest.approx(scored.metrics[f"eval_{kind}_{key}"])
    assert sum(values["support"] for values in per_type.values()) == 12  # 6 rows, a person and a place each
    rows = [json.loads(line) for line in validation.read_text().splitlines()]
    worst = scored.analysis["worst"]
    assert scored.analysis["worst_by"] == "wrong entities" and len(worst) == 6
    for entry in worst:
        row = rows[entry["row"] - 1]
        assert entry["input"] == " ".join(row["tokens"])
        assert entry["gold"] == f"PER: {row['tokens'][0]}; LOC: {row['tokens'][3]}"
        assert len(entity_spans(row["ner_tags"])) == 2
        assert entry["error"] >= 0 and (entry["error"] == 0) == (entry["gold"] == entry["prediction"])
    assert set(scored.analysis["slices"]) == {"input length"}
    assert scored.analysis["slice_metric"] == "f1"
    assert "### Per entity type" in (evaluation.output_dir / "evaluation.md").read_text()


def test_length_order_scores_the_same_rows_shortest_first_and_writes_them_in_file_order(
    tmp_path: Path,
) -> None:
    run, _ = train_case("classification", tmp_path)
    mixed = write_jsonl(  # lengths out of order: sorting moves rows
        tmp_path / "mixed.jsonl",
        [
            {
                "text": " ".join(WORDS[j % 20] for j in range(i, i + 1 + (7 * i) % 11)),
                "label": sentiment(i)["label"],
            }
            for i in range(10)
        ],
    )
    options = {"resamples": 50, "worst": 10}
    in_file_order = evaluate_models([str(run)], str(mixed), ["training.precision=fp32"], **options)
    shortest_first = evaluate_models(
        [str(run)], str(mixed), ["training.precision=fp32"], length_order=True, **options
    )

    plain, ordered = in_file_order.scores[0], shortest_first.scores[0]
    for key in ("eval_accuracy", "eval_f1", "eval_matthews_correlation", "eval_loss"):
        assert ordered.metrics[key] == pytest.approx(plain.metrics[key], abs=1e-6), key
    assert ordered.intervals == plain.intervals  # the same per-row outcomes, in the same row order
    assert [row["text"] for row in ordered.predictions] == [row["text"] for row in plain.predictions]
    for ours, theirs in zip(ordered.predictions, plain.predictions, strict=True):
        assert ours["predicted_label"] == theirs["predicted_label"]
        assert ours["predicted_score"] == pytest.approx(theirs["predicted_score"], abs=1e-5)
    assert [w["row"] for w in ordered.analysis["worst"]] == [w["row"] for w in plain.analysis["worst"]]


def test_qa_error_analysis_worst_answers_and_slices_by_answer_and_context_length(tmp_path: Path) -> None:
    from llmkit.metrics import load_metrics

    run, validation = train_case("qa", tmp_path)
    evaluation = evaluate_models([str(run)], str(validation), resamples=0, worst=3)

    scored = evaluation.scores[0]
    rows = [json.loads(line) for line in validation.read_text().splitlines()]
    squad = load_metrics("squad")
    worst = scored.analysis["worst"]
    assert scored.analysis["worst_by"].startswith("1 - F1") and len(worst) == 3
    for entry in worst:  # each row's error is 1 - its own SQuAD F1, as the metric scores it alone
        row = rows[entry["row"] - 1]
        assert entry["input"].startswith(row["question"] + " | ")
        assert entry["gold"] == " / ".join(row["answers"]["text"])
        answer = scored.predictions[entry["row"] - 1]["predicted_answer"]  # predict's answer for the row
        alone = squad.compute(predictions=[answer], references=[row["answers"]["text"]])["f1"] / 100
        assert entry["error"] == pytest.approx(1 - alone, abs=1e-6)
    errors = [entry["error"] for entry in worst]
    assert errors == sorted(errors, reverse=True)
    assert {"answer length", "context length"} <= set(scored.analysis["slices"])
    assert scored.analysis["slice_metric"] == "f1"
    shown_rows = sum(group["rows"] for group in scored.analysis["slices"]["context length"])
    assert shown_rows == len(rows)


@pytest.mark.parametrize("name", ["summarization", "translation"])
def test_generated_predictions_are_the_scored_texts_in_row_order(name: str, tmp_path: Path) -> None:
    """Text-to-text rows get the texts the scoring pass generated (no second generation): each row's text
    scored against that row's own reference gives back the evaluation's score."""
    from llmkit.metrics import load_metrics

    recipe, train_row, validation_row = CASES[name]
    train = write_jsonl(tmp_path / "train.jsonl", [train_row(i) for i in range(24)])
    validation = write_jsonl(tmp_path / "validation.jsonl", [validation_row(i) for i in range(6)])
    data = {**recipe["data"], "train": str(train), "validation": str(validation)}
    training = {
        "max_steps": 60,
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 8,
        "eval_on_start": False,
    }
    run = llmkit.finetune({**recipe, "data": data, "training": training, "output_dir": str(tmp_path / "run")})
    scored = evaluate_models([str(run.output_dir)], str(validation), resamples=0).scores[0]

    rows = [json.loads(line) for line in validation.read_text().splitlines()]
    assert [{k: v for k, v in p.items() if k in rows[0]} for p in scored.predictions] == rows
    key = "generated_summary" if name == "summarization" else "generated_translation"
    texts = [p[key] for p in scored.predictions]
    assert len(set(texts)) > 1 and all(texts)  # trained enough to say different things
    if name == "summarization":
        per_row = load_metrics("rouge").compute(
            predictions=texts, references=[r["summary"] for r in rows], use_aggregator=False
        )
        assert scored.metrics["eval_rouge1"] > 0
        assert sum(per_row["rouge1"]) / len(rows) == pytest.approx(scored.metrics["eval_rouge1"], abs=1e-9)
    else:
        bleu = load_metrics("translation").compute(predictions=texts, references=[r["de"] for r in rows])
        assert scored.metrics["eval_bleu"] > 0
        assert bleu["bleu"] == pytest.approx(scored.metrics["eval_bleu"], abs=1e-9)


def test_vectorized_entity_resampling_equals_seqeval_on_each_resample() -> None:
    """NER intervals come from per-row entity counts; each resample's scores are seqeval's on those rows
    (malformed spans included: an I- tag that opens an entity), a type absent from a resample NaN."""
    from llmkit.inference.evaluate import entity_counts
    from llmkit.metrics import load_metrics

    rng = np.random.default_rng(3)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"]
    gold = [[tags[i] for i in rng.integers(0, 5, rng.integers(1, 9))] for _ in range(60)]
    predicted = [
        [tags[i] if rng.random() < 0.3 else g for i, g in zip(rng.integers(0, 6, len(row)), row, strict=True)]
        for row in gold
    ]
    draws = rng.integers(0, 60, size=(6, 60))
    draws[0] = 0  # one row over and over: types absent from the resample
    counts = np.zeros((6, 60))
    np.add.at(counts, (np.repeat(np.arange(6), 60), draws.ravel()), 1.0)
    fast = entity_counts(predicted, gold)(counts)
    seqeval = load_metrics("seqeval")
    for number, indices in enumerate(draws):
        slow = seqeval.compute(
            predictions=[predicted[i] for i in indices], references=[gold[i] for i in indices]
        )
        for key in ("precision", "recall", "f1", "accuracy"):
            assert fast[key][number] == pytest.approx(slow[key], abs=1e-12), key
        for kind in ("PER", "LOC", "MISC"):
            for key in ("precision", "recall", "f1"):
                expected = slow["per_type"][kind][key] if kind in slow["per_type"] else None
                value = fast[f"{kind}_{key}"][number]
                assert np.isnan(value) if expected is None else value == pytest.approx(expected, abs=1e-12)


def test_a_causal_lm_before_fine_tuning_is_scored_as_the_task_named(tmp_path: Path, run_cli) -> None:
    """Zero-shot baselines: a plain causal LM folder has no task of its own; task=NAME names it, and it is
    scored beside the run it was fine-tuned into, on the same rows."""
    run, validation = train_case("summarization-causal", tmp_path)
    out = tmp_path / "side-by-side"
    settings = [
        "task=summarization",
        "data.max_length=48",
        "data.max_target_length=8",
        "data.max_new_tokens=4",
    ]
    result = run_cli("evaluate", "tiny-gpt2", run, *settings, "--data", validation, "--output", out)
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "evaluation.json").read_text())
    assert [m["task"] for m in record["models"]] == ["summarization", "summarization"]
    assert all("eval_rouge1" in m["metrics"] for m in record["models"])
    unnamed = run_cli("evaluate", "tiny-gpt2", "--data", validation, "--output", tmp_path / "unnamed")
    assert unnamed.exit_code == 2 and "task=NAME" in unnamed.stderr and "Traceback" not in unnamed.stderr


def test_a_long_scoring_pass_reports_its_progress(tmp_path: Path, monkeypatch, capsys) -> None:
    """Outside a terminal (no bar), the scoring pass prints a throttled line: batches done and time left."""
    import llmkit.core.progress

    run, validation = train_case("classification", tmp_path)  # 6 rows, batches of 4: two batches
    monkeypatch.setattr(llmkit.core.progress, "TRAINING_LINE_SECONDS", 0.0)
    capsys.readouterr()
    evaluate_models([str(run)], str(validation), resamples=0)
    lines = [line for line in capsys.readouterr().err.splitlines() if "scoring batch" in line]
    assert lines and lines[0].startswith("llmkit: scoring batch 1/2 (") and lines[0].endswith(" left)")


def test_the_comparison_chart_draws_scores_not_counts() -> None:
    from llmkit.inference.evaluation_report import charted_metrics

    metrics = {"eval_truncated_documents": 2, "eval_loss": 1.7, "eval_rouge1": 0.3, "eval_gen_len": 31.0}
    models = [{"metrics": metrics}, {"metrics": {**metrics, "eval_rouge1": 0.2}}]
    assert charted_metrics(models) == ["eval_rouge1"]
