"""Run reports: what a run records beside its model, and the report, plots and model card made from it.

At the end of a run ``llmkit.train`` saves the Trainer's log history (``log_history.json``) and
``run_stats.json`` (data statistics, timing, a few sample predictions) next to ``metrics.json``,
``manifest.json`` and ``recipe.yaml``. :func:`write_report` turns those files alone into ``report.md``,
PNG plots under ``plots/`` and a Hugging Face model card (``README.md``), so ``llmkit report DIR``
can regenerate them at any time, on any machine, without the model or the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.data import Split
    from llmkit.tasks import Task

LOG_HISTORY_FILE = "log_history.json"
RUN_STATS_FILE = "run_stats.json"
REPORT_FILE = "report.md"
MODEL_CARD_FILE = "README.md"
#: Sample predictions shown in the report (from the validation split, else test, else train).
SAMPLE_ROWS = 3
#: Token statistics come from at most this many encoded examples per split.
STATISTICS_ROWS = 5000
#: Metric keys that are timings, not quality: they go to the report's timing section.
TIMING_SUFFIXES = ("_runtime", "_per_second")


# -- recording (during a run) ---------------------------------------------------------------------
def data_statistics(task: Task, splits: dict[str, Split], encoded: dict[str, Any], max_length: int) -> dict:
    """Rows per split, token lengths of the encoded examples, and the task's summary (label counts...)."""
    import numpy as np

    tokens = {}
    for role, dataset in encoded.items():
        if "input_ids" not in dataset.column_names:
            continue
        sample = dataset.select(range(min(STATISTICS_ROWS, len(dataset))))
        lengths = np.array([len(ids) for ids in sample["input_ids"]]) if len(sample) else np.array([0])
        tokens[role] = {
            "examples": len(dataset),
            "measured": len(sample),
            "mean": round(float(lengths.mean()), 1),
            "median": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "at_max_length": int((lengths >= max_length).sum()) if len(sample) else 0,
        }
    return {
        "rows": {role: len(split.dataset) for role, split in splits.items()},
        "max_length": max_length,
        "tokens": tokens,
        "summary": task.data_summary(splits),
    }


def sample_predictions(task: Task, model: Any, tokenizer: Any, splits: dict[str, Split]) -> list[dict]:
    """The trained model's answers on the first few held-out rows (training rows if none are held out)."""
    role = next(role for role in ("validation", "test", "train") if role in splits)
    dataset = splits[role].dataset
    rows = dataset.select(range(min(SAMPLE_ROWS, len(dataset)))).to_list()
    return [{"split": role, **sample} for sample in task.report_samples(model, tokenizer, rows)]


# -- reading (any time later) ---------------------------------------------------------------------
@dataclass
class RunRecord:
    """Everything a finished run's folder says about it; optional files are empty when absent."""

    output_dir: Path
    recipe: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    log_history: list[dict[str, Any]] | None
    stats: dict[str, Any]

    @property
    def name(self) -> str:
        return self.output_dir.resolve().name


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmkitError(f"{path}: cannot be read ({exc}); rerun the training or remove the file") from None


def read_run(output_dir: str | Path) -> RunRecord:
    """Read a finished run's files; a folder that is not one is a one-line error."""
    from llmkit.train import MANIFEST_FILE, METRICS_FILE, RECIPE_FILE

    folder = Path(output_dir)
    if not folder.is_dir():
        raise LlmkitError(
            f"{folder}: no such folder; give the output_dir of a finished `llmkit finetune` run"
        )
    if not (folder / METRICS_FILE).exists() or not (folder / RECIPE_FILE).exists():
        raise LlmkitError(
            f"{folder}: not a finished llmkit run (no {METRICS_FILE} or {RECIPE_FILE}); give the output_dir "
            f"of a run that `llmkit finetune` completed"
        )
    try:
        recipe = yaml.safe_load((folder / RECIPE_FILE).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LlmkitError(f"{folder / RECIPE_FILE}: not valid YAML ({exc})") from None
    return RunRecord(
        output_dir=folder,
        recipe=recipe,
        metrics=_read_json(folder / METRICS_FILE, {}),
        manifest=_read_json(folder / MANIFEST_FILE, {}),
        log_history=_read_json(folder / LOG_HISTORY_FILE, None),
        stats=_read_json(folder / RUN_STATS_FILE, {}),
    )


# -- writing --------------------------------------------------------------------------------------
def write_report(output_dir: str | Path) -> list[Path]:
    """Write report.md, the plots and the model card of a finished run; returns the files written."""
    from llmkit.model_card import render_model_card
    from llmkit.plots import matplotlib_missing, training_series, write_plots
    from llmkit.tasks import get_task_class

    run = read_run(output_dir)
    task_cls = get_task_class(str(run.recipe.get("task", "classification")), where=f"{run.output_dir}")
    series = training_series(run.log_history or [], task_cls.headline_metric)
    if run.log_history is None:
        skipped = f"the folder has no {LOG_HISTORY_FILE} (a run from an older llmkit)"
    elif not series:
        skipped = "the run logged no step (training.logging_steps larger than the run?)"
    else:
        skipped = matplotlib_missing()
    plots = [] if skipped else write_plots(run.output_dir, series)

    report = run.output_dir / REPORT_FILE
    report.write_text(render_report(run, task_cls, plots, skipped), encoding="utf-8")
    card = run.output_dir / MODEL_CARD_FILE
    card.write_text(render_model_card(run, task_cls, plots), encoding="utf-8")
    return [report, card, *plots]


def quality_metrics(metrics: dict[str, Any], with_train_loss: bool = True) -> dict[str, Any]:
    """Scores (losses, accuracies, ...) without timings and counters."""
    prefixes = ("eval_", "test_", "train_loss") if with_train_loss else ("eval_", "test_")
    return {
        key: value
        for key, value in metrics.items()
        if key.startswith(prefixes) and not key.endswith(TIMING_SUFFIXES)
    }


def headline(run: RunRecord, headline_metric: str) -> tuple[str, Any] | None:
    """The run's headline score: the task's metric on the test split, else validation, else train loss."""
    for key in (f"test_{headline_metric}", f"eval_{headline_metric}", "eval_loss", "train_loss"):
        if key in run.metrics:
            return key, run.metrics[key]
    return None


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def md_cell(text: Any, limit: int = 160) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped, long text cut."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in rows]


def render_report(run: RunRecord, task_cls: type[Task], plots: list[Path], skipped: str | None) -> str:
    """report.md: headline, metrics, plots, timing, data, sample predictions, recipe, environment."""
    recipe = run.recipe
    model = recipe.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model
    lines = [f"# Run report: {run.name}", ""]
    top = headline(run, task_cls.headline_metric)
    summary = f"Task **{recipe.get('task')}**, model `{model_name}`"
    if top:
        summary += f"; {top[0]} **{format_value(top[1])}**"
    if run.manifest.get("finished"):
        summary += f"; finished {run.manifest['finished']}"
    lines += [summary + ".", ""]

    lines += ["## Metrics", ""]
    scores = quality_metrics(run.metrics)
    lines += table(["metric", "value"], [[key, format_value(value)] for key, value in scores.items()])
    lines.append("")

    lines += ["## Training curves", ""]
    if skipped:
        lines += [f"Plots skipped: {skipped}.", ""]
    else:
        for path in plots:
            lines += [f"![{path.stem.replace('_', ' ')}](plots/{path.name})", ""]

    lines += ["## Timing", ""]
    lines += table(["", ""], timing_rows(run))
    lines.append("")

    lines += ["## Data", ""]
    lines += data_lines(run)

    samples = run.stats.get("samples") or []
    lines += ["## Sample predictions", ""]
    if samples:
        lines += [
            f"The trained model on the first {len(samples)} rows of the {samples[0]['split']} split.",
            "",
        ]
        lines += table(
            ["input", "prediction", "reference"],
            [[s.get("input", ""), s.get("prediction", ""), s.get("reference", "")] for s in samples],
        )
    else:
        lines.append("None recorded.")
    lines.append("")

    lines += ["## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", ""]
    rerun = f"llmkit finetune {run.output_dir / 'recipe.yaml'} output_dir=runs/again"
    lines += [f"Rerun it with `{rerun}`.", ""]
    versions = run.manifest.get("versions") or {}
    if versions:
        shown = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
        lines += ["## Environment", "", f"{shown}; {run.manifest.get('world_size', 1)} process(es).", ""]
    return "\n".join(lines)


def timing_rows(run: RunRecord) -> list[list[str]]:
    from llmkit.progress import format_seconds

    metrics, timing = run.metrics, run.stats.get("timing") or {}
    rows = []
    if "train_runtime" in metrics:
        rows.append(["training", format_seconds(float(metrics["train_runtime"]))])
    for key, label in (
        ("train_samples_per_second", "training samples / s"),
        ("train_steps_per_second", "training steps / s"),
    ):
        if key in metrics:
            rows.append([label, f"{metrics[key]:.2f}"])
    if run.log_history:
        steps = max((int(entry.get("step", 0)) for entry in run.log_history), default=0)
        rows.append(["optimizer steps", str(steps)])
    if "epoch" in metrics:
        rows.append(["epochs", f"{metrics['epoch']:.2f}"])
    for key, label in (
        ("prepare_seconds", "reading data, tokenizing, loading the model"),
        ("evaluate_seconds", "final evaluation"),
        ("total_seconds", "whole run"),
    ):
        if key in timing:
            rows.append([label, format_seconds(float(timing[key]))])
    return rows


def data_lines(run: RunRecord) -> list[str]:
    data = run.stats.get("data") or {}
    rows = data.get("rows") or run.manifest.get("rows") or {}
    tokens = data.get("tokens") or {}
    if not rows:
        return ["Not recorded.", ""]
    limit = data.get("max_length", "max_length")
    table_rows = []
    for role, count in rows.items():
        stats = tokens.get(role)
        if stats:
            table_rows.append(
                [
                    role,
                    count,
                    stats["examples"],
                    stats["mean"],
                    f"{stats['median']:g}",
                    f"{stats['p95']:g}",
                    stats["max"],
                    f"{stats['at_max_length']} of {stats['measured']}",
                ]
            )
        else:
            table_rows.append([role, count, "", "", "", "", "", ""])
    header = ["split", "rows", "examples", "tokens mean", "median", "p95", "max", f"at max_length ({limit})"]
    lines = table(header, table_rows)
    lines += ["", *[f"- {line}" for line in data.get("summary", [])]]
    for path, info in (run.manifest.get("data_files") or {}).items():
        lines.append(
            f"- `{path}`: {info.get('bytes', '?')} bytes, sha256 {str(info.get('sha256', ''))[:12]}…"
        )
    for role, source in (run.manifest.get("data_sources") or {}).items():
        lines.append(f"- {role}: {describe_data_source(source)}, {rows.get(role, '?')} rows")
    return [*lines, ""]


def describe_data_source(source: dict[str, Any]) -> str:
    """A manifest's dataset record as text: dataset `id` (config, revision) split 'x', commit, carved."""
    from llmkit.hub_data import HubSource

    hub = HubSource.from_record(source)
    text = f"dataset `{hub.dataset}`{hub.describe()[len(hub.dataset) :]}"
    text += f", commit {hub.commit[:12]}" if hub.commit else ""
    return text + (" (carved from train)" if source.get("carved") else "")
