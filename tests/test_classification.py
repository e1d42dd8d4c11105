"""Classification end to end on tiny-bert: API, CLI, saved folder in transformers.pipeline, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import llmkit
from tests.conftest import NEGATIVE, POSITIVE, write_csv

FAST = ["training.max_steps=4", "training.per_device_train_batch_size=8", "training.logging_steps=2"]


def recipe_for(train: Path, validation: Path | None, output_dir: Path, **data) -> dict:
    return {
        "task": "classification",
        "model": "tiny-bert",
        "data": {"train": str(train), "validation": str(validation) if validation else None, **data},
        "training": {"max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
        "output_dir": str(output_dir),
    }


def test_api_run_saves_a_pipeline_ready_folder(sentiment_files, tmp_path: Path) -> None:
    from transformers import pipeline

    train, validation = sentiment_files
    result = llmkit.finetune(recipe_for(train, validation, tmp_path / "out"))

    out = result.output_dir
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "recipe.yaml"} <= {
        p.name for p in out.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx(result.metrics)
    assert {"train_loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_matthews_correlation"} <= set(
        metrics
    )
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    classify = pipeline("text-classification", model=str(out))
    predictions = classify(["a wonderful film", "a dull film"])
    assert {p["label"] for p in predictions} <= {"negative", "positive"}

    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["task"] == "classification" and saved["training"]["max_steps"] == 4


def test_saved_recipe_reruns_the_same_training(sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    first = llmkit.finetune(recipe_for(train, validation, tmp_path / "a"))
    again = llmkit.finetune(first.output_dir / "recipe.yaml", [f"output_dir={tmp_path / 'b'}"])
    assert again.metrics["eval_loss"] == pytest.approx(first.metrics["eval_loss"], rel=1e-5)
    assert again.metrics["train_loss"] == pytest.approx(first.metrics["train_loss"], rel=1e-5)


def test_text_pairs_three_classes_integer_labels_and_carved_validation(tmp_path: Path) -> None:
    rows = []
    for i, (a, b) in enumerate(zip(POSITIVE + NEGATIVE, NEGATIVE + POSITIVE, strict=True)):
        rows.append([a, b, i % 3])
    train = write_csv(tmp_path / "pairs.csv", ["premise", "hypothesis", "gold"], rows)
    recipe = recipe_for(
        train,
        None,
        tmp_path / "out",
        text="premise",
        text_pair="hypothesis",
        label="gold",
        label_names=["entailment", "neutral", "contradiction"],
        validation_split=0.25,
    )
    result = llmkit.finetune(recipe)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert "eval_accuracy" in result.metrics


def test_test_split_with_labels_is_scored(sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    result = llmkit.finetune(recipe_for(train, validation, tmp_path / "out", test=str(validation)))
    assert result.metrics["test_accuracy"] == pytest.approx(result.metrics["eval_accuracy"])


def test_cli_finetune_then_predict(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    out = tmp_path / "cli-out"
    result = run_cli(
        "finetune",
        "classification",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        *FAST,
    )
    assert result.exit_code == 0, result.stderr
    assert "eval_accuracy = " in result.stdout and f"model saved to {out}" in result.stdout

    predictions = tmp_path / "predictions.jsonl"
    result = run_cli("predict", "--model", out, "--input", validation, "--output", predictions)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 4
    assert all(
        row["predicted_label"] in {"negative", "positive"} and 0.5 <= row["predicted_score"] <= 1.0
        for row in rows
    )
    gold = [line.split(",")[-1] for line in validation.read_text().splitlines()[1:]]
    assert [row["label"] for row in rows] == gold  # input columns, gold labels too, are kept as they are
    assert rows[0]["text"]

    as_csv = tmp_path / "predictions.csv"
    assert run_cli("predict", "--model", out, "--input", validation, "--output", as_csv).exit_code == 0
    assert as_csv.read_text().splitlines()[0] == "text,label,predicted_label,predicted_score"

    result = run_cli("predict", "-m", out, "-i", validation)  # JSONL on stdout
    stdout_rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["predicted_label"] for r in stdout_rows] == [r["predicted_label"] for r in rows]


def test_cli_overwrite_replaces_output(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old run")
    args = [
        "finetune",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        *FAST,
    ]
    assert run_cli(*args).exit_code == 2
    assert run_cli(*args, "--overwrite").exit_code == 2  # not an llmkit run: nothing of it is llmkit's
    assert (out / "old.txt").read_text() == "old run"
    (out / "old.txt").unlink()
    assert run_cli(*args).exit_code == 0
    assert run_cli(*args).exit_code == 2  # a finished run
    (out / "metrics.json").write_text("{}")
    assert run_cli(*args, "--overwrite").exit_code == 0
    assert json.loads((out / "metrics.json").read_text())  # the new run's metrics


def test_recipes_command_lists_bundled_recipes(run_cli) -> None:
    result = run_cli("recipes")
    assert result.exit_code == 0
    assert "classification" in result.stdout and "sst2-minilm" in result.stdout


def test_real_tokens_are_counted_and_batches_grouped_by_length(sentiment_files, tmp_path: Path) -> None:
    """One epoch of 32 rows in 4 batches: the run's token count is every row's real (unpadded) length."""
    from transformers import AutoTokenizer

    from llmkit.models.resolve import resolve_model
    from llmkit.recipe.loader import load_recipe
    from llmkit.training.arguments import training_arguments

    rows = [
        [texts[i % 10] + " indeed" * (i % 5), label]
        for texts, label in ((POSITIVE, "positive"), (NEGATIVE, "negative"))
        for i in range(16)
    ]
    assert len(rows) == 32
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    recipe = recipe_for(train, None, tmp_path / "out", validation_split=0.0)
    result = llmkit.finetune(recipe)

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-bert"))
    lengths = [len(ids) for ids in tokenizer([row[0] for row in rows], truncation=True)["input_ids"]]
    assert result.metrics["num_input_tokens_seen"] == sum(lengths)
    assert result.metrics["train_tokens_per_second"] > 0
    args = training_arguments(load_recipe(recipe), tmp_path / "args", has_eval=False)
    assert args.train_sampling_strategy == "group_by_length"


def test_tokenized_splits_are_cached_per_rows_and_code(sentiment_files, tmp_path: Path, monkeypatch) -> None:
    from llmkit.training import token_cache

    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "cache"))
    tokenized = tmp_path / "cache" / "tokenized"
    train = sentiment_files[0]
    llmkit.finetune(recipe_for(train, None, tmp_path / "a", validation_split=0.25))
    first = {p.name for p in tokenized.iterdir()}
    assert len(first) == 2  # train and the validation part carved from it
    llmkit.finetune(recipe_for(train, None, tmp_path / "b", validation_split=0.25))
    assert {p.name for p in tokenized.iterdir()} == first  # a rerun tokenizes nothing

    monkeypatch.setattr(token_cache, "package_code_digest", lambda: "edited encoder")
    llmkit.finetune(recipe_for(train, None, tmp_path / "c", validation_split=0.25))
    assert len({p.name for p in tokenized.iterdir()} - first) == 2  # edited llmkit code: encoded again


def test_test_predictions_keep_the_input_columns_as_predict_does(
    run_cli, finetune_tiny, tmp_path: Path
) -> None:
    unlabelled = write_csv(
        tmp_path / "unlabelled.csv", ["id", "text"], [["001", "great film"], ["002", "dull"]]
    )
    result = finetune_tiny("training.max_steps=1", f"data.test={unlabelled}")
    saved = [json.loads(line) for line in (result.output_dir / "test_predictions.jsonl").open()]
    assert [(row["id"], row["text"]) for row in saved] == [("001", "great film"), ("002", "dull")]
    predicted = run_cli("predict", "--model", result.output_dir, "--input", unlabelled)
    assert predicted.exit_code == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [list(row) for row in saved] == [list(row) for row in rows]  # the same columns, in the same order
    assert [row["predicted_label"] for row in saved] == [row["predicted_label"] for row in rows]


def test_predict_batches_by_length_and_keeps_the_input_order(sentiment_files, tmp_path: Path) -> None:
    """predict scores rows shortest first (less padding); each row's answer is the one it gets alone."""
    from llmkit.inference.predict import task_for_model
    from llmkit.models.resolve import load_for_inference, load_tokenizer

    train, validation = sentiment_files
    out = llmkit.finetune(recipe_for(train, validation, tmp_path / "out")).output_dir
    task, tokenizer = task_for_model(out), load_tokenizer(out)
    model = load_for_inference(task, out)
    texts = ["a film", "a long and winding film that never ends and never starts at all", "good", "bad one"]
    rows = [{"text": f"{text} {'!' * (n % 7)}"} for n, text in enumerate(texts * 20)]  # 80 rows, 2 batches
    together = task.predict(model, tokenizer, rows)
    for row, prediction in zip(rows, together, strict=True):
        alone = task.predict(model, tokenizer, [row])[0]
        assert prediction["predicted_label"] == alone["predicted_label"]
        assert prediction["predicted_score"] == pytest.approx(alone["predicted_score"], abs=1e-5)
