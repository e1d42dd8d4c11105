"""Run reports: plots of the logged steps, report.md with the final metrics, the model card, `llmkit report`,
TensorBoard on/off, and progress output that does not flood a log."""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
from pathlib import Path

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.runs.plots import PLOT_DATA_FILE, build_figure, training_series
from llmkit.runs.report import format_value, write_report
from tests.conftest import NEGATIVE, POSITIVE, write_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sentiment_recipe(folder: Path, output_dir: Path, **training) -> dict:
    rows = [[t, "positive"] for t in POSITIVE] + [[t, "negative"] for t in NEGATIVE]
    folder.mkdir(parents=True, exist_ok=True)
    train = write_csv(folder / "train.csv", ["text", "label"], rows[:8] + rows[10:18])
    validation = write_csv(folder / "validation.csv", ["text", "label"], rows[8:10] + rows[18:20])
    return {
        "task": "classification",
        "model": "tiny-bert",
        "data": {"train": str(train), "validation": str(validation)},
        "training": {
            "max_steps": 7,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "logging_steps": 2,
            "eval_strategy": "steps",
            "eval_steps": 3,
            **training,
        },
        "output_dir": str(output_dir),
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny-bert classification run with several logged and evaluated steps (shared, read-only)."""
    base = tmp_path_factory.mktemp("report-run")
    return llmkit.finetune(sentiment_recipe(base / "data", base / "out")).output_dir


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def logged_steps(log_history: list[dict], key: str) -> list[int]:
    return sorted({entry["step"] for entry in log_history if key in entry})


def test_plots_are_valid_pngs_of_the_logged_steps(run_dir: Path) -> None:
    from matplotlib.image import imread

    history = json.loads((run_dir / "log_history.json").read_text())
    plot_data = json.loads((run_dir / "plots" / PLOT_DATA_FILE).read_text())
    assert set(plot_data) == {"loss", "learning_rate", "accuracy"}
    for name in plot_data:
        path = run_dir / "plots" / f"{name}.png"
        width, height = png_size(path)
        assert width > 100 and height > 100 and path.stat().st_size > 1000
        assert imread(path).shape[:2] == (height, width)  # the whole image decodes

    expected = {
        ("loss", "train"): logged_steps(history, "loss"),
        ("loss", "eval"): logged_steps(history, "eval_loss"),
        ("learning_rate", "train"): logged_steps(history, "learning_rate"),
        ("accuracy", "eval"): logged_steps(history, "eval_accuracy"),
    }
    assert expected[("loss", "train")] == [2, 4, 6]  # logging_steps=2 over 7 steps
    assert expected[("loss", "eval")] == [3, 6, 7]  # eval_steps=3, plus the evaluation after training
    for (name, line), steps in expected.items():
        assert [step for step, _ in plot_data[name]["lines"][line]] == steps, (name, line)
    losses = {entry["step"]: entry["loss"] for entry in history if "loss" in entry}
    assert [value for _, value in plot_data["loss"]["lines"]["train"]] == [losses[s] for s in (2, 4, 6)]

    # the figure itself draws those points
    for series in training_series(history, "accuracy"):
        figure = build_figure(series)
        drawn = {line.get_label(): list(line.get_xdata()) for line in figure.axes[0].get_lines()}
        assert drawn == {label: [s for s, _ in points] for label, points in series.lines.items()}


def test_final_weights_are_evaluated_once(run_dir: Path) -> None:
    """transformers evaluates at the last step of a step-evaluated run; llmkit takes those scores instead of
    a second pass over the same weights (a whole dev set for QA)."""
    history = json.loads((run_dir / "log_history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = [entry for entry in history if "eval_runtime" in entry and entry["step"] == 7]
    assert len(final) == 1
    assert metrics["eval_accuracy"] == final[0]["eval_accuracy"]
    assert metrics["eval_loss"] == final[0]["eval_loss"]


def test_final_evaluation_is_redone_when_the_weights_may_differ() -> None:
    from types import SimpleNamespace

    from llmkit.training.spine import final_step_evaluation

    history = [{"loss": 0.5, "step": 7}, {"eval_loss": 0.4, "eval_runtime": 1.0, "epoch": 1.0, "step": 7}]
    steps = SimpleNamespace(eval_strategy="steps", load_best_model_at_end=False)
    assert final_step_evaluation(history, 7, steps) == {"eval_loss": 0.4, "eval_runtime": 1.0}
    assert final_step_evaluation(history, 8, steps) is None  # the last evaluation was of earlier weights
    best = SimpleNamespace(eval_strategy="steps", load_best_model_at_end=True)  # the best checkpoint's
    assert final_step_evaluation(history, 7, best) is None
    assert (
        final_step_evaluation(history, 7, SimpleNamespace(eval_strategy="no", load_best_model_at_end=False))
        is None
    )


def test_report_carries_final_metrics_data_timing_and_samples(run_dir: Path) -> None:
    report = (run_dir / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_matthews_correlation"):
        assert f"| {key} | {format_value(metrics[key])} |" in report
    assert f"eval_accuracy **{format_value(metrics['eval_accuracy'])}**" in report  # the headline
    for name in ("loss", "learning_rate", "accuracy"):
        assert f"(plots/{name}.png)" in report
    assert f"| training | {metrics['train_runtime']:.1f} s |" in report
    assert "| optimizer steps | 7 |" in report
    assert "| train | 16 | 16 |" in report and "| validation | 4 | 4 |" in report
    assert "- labels in train: negative: 8, positive: 8" in report
    samples = json.loads((run_dir / "run_stats.json").read_text())["samples"]
    assert len(samples) == 3 and {s["reference"] for s in samples} <= {"positive", "negative"}
    assert f"| {samples[0]['input']} | {samples[0]['prediction']} | {samples[0]['reference']} |" in report
    assert "```yaml\ntask: classification" in report


def test_model_card_has_front_matter_and_loads_in_a_pipeline(run_dir: Path) -> None:
    from huggingface_hub import ModelCard
    from transformers import pipeline

    card = ModelCard.load(run_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-classification"
    assert "llmkit" in card.data.tags
    assert card.data.metrics == ["accuracy", "f1", "matthews_correlation"]
    assert card.data.to_dict().get("base_model") is None  # tiny-bert is built locally, not from the hub
    assert 'pipeline("text-classification", model=' in card.text
    assert "| step | epoch | training loss | validation loss | accuracy |" in card.text

    classify = pipeline("text-classification", model=str(run_dir))
    assert classify("a wonderful film")[0]["label"] in {"positive", "negative"}


def test_report_command_regenerates_from_the_files(run_cli, run_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run_dir, tmp_path / "copy" / run_dir.name)  # same name, same title
    before = (copy / "report.md").read_text(), (copy / "README.md").read_text()
    shutil.rmtree(copy / "plots")
    (copy / "report.md").unlink()
    (copy / "README.md").unlink()
    for heavy in ("model.safetensors", "tokenizer.json"):
        (copy / heavy).unlink()  # files alone: the model is not needed

    result = run_cli("report", copy)
    assert result.exit_code == 0, result.stderr
    assert {Path(line).name for line in result.stdout.split()} == {
        "report.md",
        "README.md",
        "loss.png",
        "learning_rate.png",
        "accuracy.png",
    }
    after = (copy / "report.md").read_text(), (copy / "README.md").read_text()
    rerun = "llmkit finetune {}/recipe.yaml"  # the report's rerun line names the folder it is in
    assert after == (before[0].replace(rerun.format(run_dir), rerun.format(copy)), before[1])
    png_size(copy / "plots" / "loss.png")

    not_a_run = run_cli("report", tmp_path)
    assert not_a_run.exit_code == 2
    assert not_a_run.stderr.strip() == (
        f"error: {tmp_path}: not a finished llmkit run (no metrics.json or recipe.yaml); give the "
        f"output_dir of a run that `llmkit finetune` completed"
    )


def test_without_matplotlib_the_report_says_plots_were_skipped(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = shutil.copytree(run_dir, tmp_path / "copy")
    shutil.rmtree(copy / "plots")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    written = write_report(copy)
    assert [path.name for path in written] == ["report.md", "README.md"]
    report = (copy / "report.md").read_text()
    assert "Plots skipped: matplotlib is not installed" in report
    assert "plots/" not in report and not (copy / "plots").exists()
    assert "| eval_accuracy |" in report


def test_tensorboard_events_are_written_when_installed(run_dir: Path) -> None:
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(path.stat().st_size > 0 for path in events)


def test_report_to_auto_explicit_and_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.integrations

    from llmkit.training.arguments import report_targets

    assert report_targets("auto", "recipe r") == ("none", True)
    assert report_targets("none", "recipe r") == ("none", False)
    assert report_targets(["tensorboard", "wandb"], "recipe r") == (["wandb"], True)
    monkeypatch.setattr(transformers.integrations, "is_tensorboard_available", lambda: False)
    assert report_targets("auto", "recipe r") == ("none", False)
    with pytest.raises(
        LlmkitError, match=r"training\.report_to asks for tensorboard, which is not installed"
    ):
        report_targets("tensorboard", "recipe r")


def test_quiet_run_without_tensorboard_prints_a_few_lines_and_no_bars(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a terminal (captured stderr): no tqdm bars, throttled lines, and no TensorBoard noise."""
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "is_tensorboard_available", lambda: False)
    monkeypatch.setattr("llmkit.core.progress.TRAINING_LINE_SECONDS", 3600)  # however slow the machine is
    recipe = sentiment_recipe(
        tmp_path / "data", tmp_path / "out", max_steps=40, logging_steps=1, eval_steps=20
    )
    llmkit.finetune(recipe)
    captured = capsys.readouterr()
    assert not (tmp_path / "out" / "tensorboard").exists()
    assert "\r" not in captured.err and "it/s]" not in captured.err and "%|" not in captured.err
    assert "tensorboard" not in captured.err.lower() and "warning" not in captured.err.lower()
    assert "{'loss'" not in captured.out  # transformers' PrinterCallback would print each log dict
    steps = [line for line in captured.err.splitlines() if line.startswith("llmkit: step ")]
    # 40 logged steps: the first line, then one an hour at most, and the last step's
    assert [line.split(":")[1] for line in steps] == [" step 1/40", " step 40/40"], captured.err
    assert captured.err.count("llmkit: eval at step 20: ") == 1


def test_disable_tqdm_follows_the_terminal_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit.recipe.loader import load_recipe
    from llmkit.training.arguments import training_arguments

    recipe = sentiment_recipe(tmp_path, tmp_path / "out")
    assert training_arguments(load_recipe(recipe), tmp_path, has_eval=True).disable_tqdm is True
    monkeypatch.setattr("llmkit.training.arguments.interactive", lambda: True)
    assert training_arguments(load_recipe(recipe), tmp_path, has_eval=True).disable_tqdm is False
    explicit = load_recipe(recipe, ["training.disable_tqdm=true"])
    assert training_arguments(explicit, tmp_path, has_eval=True).disable_tqdm is True


def test_fill_mask_and_generation_reports(tmp_path: Path) -> None:
    """Each task's headline metric is plotted and its samples pose a real question."""
    from huggingface_hub import ModelCard
    from transformers import pipeline

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(POSITIVE + NEGATIVE) + "\n", encoding="utf-8")
    quick = {"max_steps": 4, "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2}
    fill = llmkit.finetune(
        {
            "task": "fill-mask",
            "model": "tiny-bert",
            "data": {"train": str(text), "validation_split": 0.2},
            "training": quick,
            "output_dir": str(tmp_path / "fill"),
        }
    ).output_dir
    plot_data = json.loads((fill / "plots" / PLOT_DATA_FILE).read_text())
    assert [step for step, _ in plot_data["masked_accuracy"]["lines"]["eval"]] == [2, 4]
    samples = json.loads((fill / "run_stats.json").read_text())["samples"]
    assert samples and all("[MASK]" in s["input"] and s["reference"] for s in samples)
    assert ModelCard.load(fill / "README.md").data.pipeline_tag == "fill-mask"
    assert pipeline("fill-mask", model=str(fill))("the food was [MASK].")

    generate = llmkit.finetune(
        {
            "task": "generation",
            "model": "tiny-gpt2",
            "data": {"train": str(text), "validation_split": 0.2, "txt_unit": "line", "max_length": 32},
            "training": quick,
            "output_dir": str(tmp_path / "gen"),
        }
    ).output_dir
    history = json.loads((generate / "log_history.json").read_text())
    plot_data = json.loads((generate / "plots" / PLOT_DATA_FILE).read_text())
    eval_losses = {entry["step"]: entry["eval_loss"] for entry in history if "eval_loss" in entry}
    assert plot_data["perplexity"]["lines"]["eval"] == [  # exp(eval loss) at each evaluated step
        [step, pytest.approx(math.exp(loss))] for step, loss in sorted(eval_losses.items())
    ]
    report = (generate / "report.md").read_text()
    assert "(plots/perplexity.png)" in report and "## Sample predictions" in report
    assert ModelCard.load(generate / "README.md").data.pipeline_tag == "text-generation"
    assert pipeline("text-generation", model=str(generate))("a wonderful", max_new_tokens=3)
