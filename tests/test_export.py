"""`llmkit export`: ONNX (fp32, int8, fp16) and PyTorch int8 folders of classification and NER runs, read
back by `llmkit predict` and `llmkit evaluate`; the bad inputs, each one line and exit code 2."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import llmkit
from llmkit.inference.export import export
from llmkit.models.exported import EXPORT_FILE, ONNX_FILE, TORCH_INT8_FILE
from tests.conftest import NEGATIVE, POSITIVE, write_csv

TEXTS = [*POSITIVE, *NEGATIVE]
TRAINING = ["training.max_steps=12", "training.learning_rate=5e-3", "training.per_device_train_batch_size=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-bert sentiment classifier, trained enough that its predictions are not coin flips."""
    folder = tmp_path_factory.mktemp("export-run")
    rows = [[t, "positive"] for t in POSITIVE] + [[t, "negative"] for t in NEGATIVE]
    train = write_csv(folder / "train.csv", ["text", "label"], rows)
    write_csv(folder / "test.csv", ["text", "label"], rows[::2])
    llmkit.finetune(
        None, ["model=tiny-bert", f"data.train={train}", f"output_dir={folder / 'run'}", *TRAINING]
    )
    return folder / "run"


@pytest.fixture(scope="module")
def onnx_fp32(run: Path) -> Path:
    return export(run, run.parent / "onnx", "onnx")


def logits(model, folder: Path, texts: list[str]):
    import torch
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**encoded).logits


def torch_model(run: Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(run).eval()


def exported_model(folder: Path):
    from llmkit.inference.predict import task_for_model
    from llmkit.models.exported import load_exported

    return load_exported(task_for_model(folder), folder)


def predicted(run_cli, model: Path, data: Path) -> list[dict]:
    result = run_cli("predict", "--model", model, "--input", data)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- what works ----------------------------------------------------------------------------------------
def test_onnx_fp32_gives_the_runs_logits_and_keeps_its_labels_tokenizer_recipe_and_card(
    run: Path, onnx_fp32: Path
) -> None:
    texts = [*TEXTS[:3], "ok"]  # another batch and length than the export traced: the axes are dynamic
    expected = logits(torch_model(run), run, texts)
    got = logits(exported_model(onnx_fp32), onnx_fp32, texts)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4
    names = {path.name for path in onnx_fp32.iterdir()}
    assert {ONNX_FILE, "config.json", "tokenizer.json", "recipe.yaml", "README.md", EXPORT_FILE} <= names
    config = json.loads((onnx_fp32 / "config.json").read_text())
    assert set(config["id2label"].values()) == {"positive", "negative"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    card = (onnx_fp32 / "README.md").read_text()
    assert card.startswith("---\n") and "## Exported model" in card and "onnxruntime.InferenceSession" in card
    assert "## The run it was exported from: " in card
    manifest = json.loads((onnx_fp32 / EXPORT_FILE).read_text())
    assert manifest["check"]["agree"] == manifest["check"]["items"] == 8


def test_int8_onnx_is_smaller_and_agrees_with_fp32_on_most_rows(run: Path, onnx_fp32: Path) -> None:
    int8 = export(run, run.parent / "onnx-int8", "onnx", "int8")
    assert (int8 / ONNX_FILE).stat().st_size < 0.8 * (onnx_fp32 / ONNX_FILE).stat().st_size
    expected = logits(torch_model(run), run, TEXTS).argmax(-1)
    got = logits(exported_model(int8), int8, TEXTS).argmax(-1)
    assert (got == expected).float().mean() >= 0.9


def test_predict_and_evaluate_read_the_exports_as_the_run(run: Path, onnx_fp32: Path, run_cli) -> None:
    test = run.parent / "test.csv"
    expected = predicted(run_cli, run, test)
    for folder in (onnx_fp32, export(run, run.parent / "torch-int8", "torch", "int8")):
        got = predicted(run_cli, folder, test)
        assert [r["predicted_label"] for r in got] == [r["predicted_label"] for r in expected], folder
    fp32 = predicted(run_cli, onnx_fp32, test)
    assert all(
        abs(a["predicted_score"] - b["predicted_score"]) < 1e-4 for a, b in zip(fp32, expected, strict=True)
    )
    result = run_cli("evaluate", run, onnx_fp32, "--data", test, "--resamples", "0", "-o", run.parent / "ev")
    assert result.exit_code == 0, result.stderr
    scores = json.loads((run.parent / "ev" / "evaluation.json").read_text())
    first, second = (model["metrics"] for model in scores["models"])
    assert first["eval_accuracy"] == second["eval_accuracy"]
    assert abs(first["eval_loss"] - second["eval_loss"]) < 2e-3  # the run in bf16 where the CPU has it


def test_torch_int8_loads_back_with_weights_only_and_fp16_onnx_runs(run: Path) -> None:
    folder = export(run, run.parent / "torch-int8-b", "torch", "int8")
    assert (folder / TORCH_INT8_FILE).is_file() and not list(folder.glob("*.safetensors"))
    got = logits(exported_model(folder), folder, TEXTS).argmax(-1)
    assert (got == logits(torch_model(run), run, TEXTS).argmax(-1)).float().mean() >= 0.9
    half = export(run, run.parent / "onnx-fp16", "onnx", "fp16")
    assert (
        logits(exported_model(half), half, TEXTS) - logits(torch_model(run), run, TEXTS)
    ).abs().max() < 0.02


def test_token_classification_export_predicts_the_runs_entities(tmp_path: Path, run_cli) -> None:
    from tests.test_ner import rows, write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", rows(16))
    test = write_jsonl(tmp_path / "test.jsonl", rows(4, 1))
    out = tmp_path / "ner"
    llmkit.finetune(
        {"task": "ner", "model": "tiny-bert"}, [f"data.train={train}", f"output_dir={out}", *TRAINING]
    )
    folder = export(out, tmp_path / "ner-onnx", "onnx")
    expected = predicted(run_cli, out, test)
    got = predicted(run_cli, folder, test)
    for mine, theirs in zip(got, expected, strict=True):  # the same entities, scores to rounding
        pairs = list(zip(mine["predicted_entities"], theirs["predicted_entities"], strict=True))
        assert all(
            {**a, "score": 0} == {**b, "score": 0} and abs(a["score"] - b["score"]) < 1e-4 for a, b in pairs
        )
    assert any(row["predicted_entities"] for row in got)
    result = run_cli("evaluate", out, folder, "--data", test, "--resamples", "0", "-o", tmp_path / "ev")
    assert result.exit_code == 0, result.stderr
    first, second = (
        m["metrics"] for m in json.loads((tmp_path / "ev" / "evaluation.json").read_text())["models"]
    )
    # the run is scored in bf16 where the CPU has it (as its validation was), the export in fp32
    assert first["eval_f1"] == second["eval_f1"] and abs(first["eval_loss"] - second["eval_loss"]) < 2e-3
    assert json.loads((folder / EXPORT_FILE).read_text())["task"] == "token-classification"


def test_multi_label_keeps_its_thresholds_and_a_lora_run_exports_merged(tmp_path: Path, run_cli) -> None:
    from tests.test_problem_types import emotion_rows, write_jsonl

    train = write_jsonl(tmp_path / "emotions.jsonl", emotion_rows())
    out = tmp_path / "multi"
    lora = ["peft.method=lora", "peft.r=4"]
    overrides = [
        f"data.train={train}",
        "data.label=labels",
        "data.threshold=validation",
        f"output_dir={out}",
        *TRAINING,
        *lora,
    ]
    llmkit.finetune({"task": "classification", "model": "tiny-bert"}, overrides)
    assert (out / "adapter_config.json").is_file()
    folder = export(out, tmp_path / "multi-onnx", "onnx")
    config = json.loads((folder / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["label_thresholds"]
    expected = predicted(run_cli, out, train)
    got = predicted(run_cli, folder, train)
    assert [r["predicted_labels"] for r in got] == [r["predicted_labels"] for r in expected]


# -- what is refused -----------------------------------------------------------------------------------
def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_export_refuses_bad_input_in_one_line(
    run: Path, onnx_fp32: Path, tmp_path: Path, run_cli, monkeypatch
) -> None:
    one_line_error(run_cli("export", tmp_path / "nowhere", "-o", tmp_path / "x"), "no such folder")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    one_line_error(run_cli("export", tmp_path / "notes", "-o", tmp_path / "x"), "not a model folder")
    one_line_error(run_cli("export", onnx_fp32, "-o", tmp_path / "x"), "exported model already")
    masked = tmp_path / "masked"
    shutil.copytree(run, masked, ignore=shutil.ignore_patterns("checkpoint-*", "*.png"))
    (masked / "recipe.yaml").write_text(
        (run / "recipe.yaml").read_text().replace("classification", "fill-mask")
    )
    one_line_error(
        run_cli("export", masked, "-o", tmp_path / "x"), "fill-mask", "classification and token-cl"
    )
    one_line_error(run_cli("export", run, "-o", tmp_path / "x", "--format", "torch"), "takes int8")
    one_line_error(run_cli("export", run, "-o", tmp_path / "x", "--format", "tflite"), "onnx or torch")
    one_line_error(run_cli("export", run, "-o", onnx_fp32), "already exists", "--overwrite")
    one_line_error(
        run_cli("export", run, "-o", tmp_path / "notes", "--overwrite"), "only a folder llmkit export"
    )
    assert (tmp_path / "notes" / "a.txt").is_file()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    one_line_error(run_cli("export", run, "-o", tmp_path / "x"), "onnxruntime", ".[export]")
    one_line_error(run_cli("predict", "-m", onnx_fp32, "-i", run.parent / "test.csv"), ".[export]")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_overwrite_replaces_an_export_and_training_or_explain_on_one_is_refused(
    run: Path, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "exported"
    assert run_cli("export", run, "-o", out, "-f", "torch", "-q", "int8").exit_code == 0
    result = run_cli("export", run, "-o", out, "--quantize", "int8", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / EXPORT_FILE).read_text())["format"] == "onnx"
    assert not (out / TORCH_INT8_FILE).exists()
    explain = run_cli("predict", "-m", out, "-i", run.parent / "test.csv", "--explain")
    one_line_error(explain, "--explain", "PyTorch model", str(run.resolve()))
    train = run_cli(
        "finetune",
        f"model={out}",
        f"data.train={run.parent / 'train.csv'}",
        "data.validation=null",
        f"output_dir={tmp_path / 'r'}",
    )
    one_line_error(train, "exported model", "PyTorch model")
