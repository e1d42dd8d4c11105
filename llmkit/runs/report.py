"""Run reports: what a run records beside its model, and the report, plots and model card made from it.

At the end of a run ``llmkit.training.spine`` saves the Trainer's log history (``log_history.json``) and
``run_stats.json`` (data statistics, timing, a few sample predictions) next to ``metrics.json``,
``manifest.json`` and ``recipe.yaml``. :func:`write_report` turns those files alone into ``report.md``,
PNG plots under ``plots/`` and a Hugging Face model card (``README.md``), so ``llmkit report DIR``
can regenerate them at any time, on any machine, without the model or the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmkit.core.markdown import format_value, table
from llmkit.runs.folder import (
    LOG_HISTORY_FILE,
    MODEL_CARD_FILE,
    REPORT_FILE,
    RunRecord,
    describe_data_source,
    headline_metric,
    quality_metrics,
    read_run,
)

if TYPE_CHECKING:
    from llmkit.data.files import Split
    from llmkit.tasks import Task

#: Sample predictions shown in the report (from the validation split, else test, else train).
SAMPLE_ROWS = 3
#: GRPO's completions sampled during training: the report shows the last this many, each prompt's end.
MAX_COMPLETION_ROWS = 24
PROMPT_TAIL = 150
#: Token statistics come from at most this many encoded examples per split.
STATISTICS_ROWS = 5000


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
        "rows": {role: split.size for role, split in splits.items()},
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
# -- writing --------------------------------------------------------------------------------------
def write_report(output_dir: str | Path) -> list[Path]:
    """Write report.md, the plots and the model card of a finished run; returns the files written."""
    from llmkit.runs.model_card import render_model_card
    from llmkit.runs.plots import matplotlib_missing, training_series, write_plots
    from llmkit.tasks import get_task_class

    run = read_run(output_dir)
    task_cls = get_task_class(str(run.recipe.get("task", "classification")), where=f"{run.output_dir}")
    series = training_series(run.log_history or [], headline_metric(run, task_cls))
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


def headline(run: RunRecord, headline_metric: str) -> tuple[str, Any] | None:
    """The run's headline score: the task's metric on the test split, else validation, else train loss."""
    for key in (f"test_{headline_metric}", f"eval_{headline_metric}", "eval_loss", "train_loss"):
        if key in run.metrics:
            return key, run.metrics[key]
    return None


def render_report(run: RunRecord, task_cls: type[Task], plots: list[Path], skipped: str | None) -> str:
    """report.md: headline, metrics, plots, timing, data, sample predictions, recipe, environment."""
    recipe = run.recipe
    lines = [f"# Run report: {run.name}", ""]
    top = headline(run, headline_metric(run, task_cls))
    summary = f"Task **{recipe.get('task')}**, model `{run.model_name}`"
    if run.pretraining:
        summary += " (pre-trained from scratch)"
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

    lines += pretraining_lines(run)
    lines += distillation_lines(run)

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

    lines += completion_lines(run)

    lines += ["## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", ""]
    rerun = f"llmkit finetune {run.output_dir / 'recipe.yaml'} output_dir=runs/again"
    lines += [f"Rerun it with `{rerun}`.", ""]
    versions = run.manifest.get("versions") or {}
    if versions:
        shown = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
        lines += ["## Environment", "", f"{shown}; {run.manifest.get('world_size', 1)} process(es).", ""]
    return "\n".join(lines)


def completion_lines(run: RunRecord) -> list[str]:
    """GRPO: completions sampled during training, a few per logging step, with each reward they got."""
    sampled = run.stats.get("completions") or []
    if not sampled:
        return []
    labels = list(dict.fromkeys(label for sample in sampled for label in sample.get("rewards", {})))
    rows = [
        [
            sample.get("step", ""),
            "…" + str(sample.get("prompt", ""))[-PROMPT_TAIL:],
            sample.get("completion", ""),
            *(format_value(sample.get("rewards", {}).get(label, "")) for label in labels),
        ]
        for sample in sampled[-MAX_COMPLETION_ROWS:]
    ]
    shown = "the last " if len(sampled) > MAX_COMPLETION_ROWS else ""
    intro = (
        f"Completions sampled in training ({shown}{len(rows)} of {len(sampled)} kept), with their rewards."
    )
    return [
        "## Sampled completions",
        "",
        intro,
        "",
        *table(["step", "prompt", "completion", *labels], rows),
        "",
    ]


def timing_rows(run: RunRecord) -> list[list[str]]:
    from llmkit.core.progress import format_seconds

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


def pretraining_lines(run: RunRecord) -> list[str]:
    """A from-scratch run's model (size, seed) and tokenizer (training time, vocabulary statistics)."""
    built = run.pretraining
    if not built:
        return []
    lines = ["## Pre-training from scratch", ""]
    settings = ", ".join(f"{key} {value}" for key, value in built.get("config", {}).items())
    lines.append(
        f"- model: `{built['name']}`, {built['model_class']} ({settings}): {built['parameters']:,} "
        f"parameters, initialised with seed {built['init_seed']}"
    )
    tokenizer = built.get("tokenizer") or {}
    if tokenizer.get("trained"):
        case = "lower-cased" if tokenizer.get("lowercase") else "cased"
        lines.append(
            f"- tokenizer: {tokenizer['type']}, {case}, {tokenizer['vocab_size']:,} tokens "
            f"({tokenizer['vocab_size_asked']:,} asked), trained on the training split "
            f"({tokenizer['training_texts']:,} texts, {tokenizer['training_characters']:,} characters) in "
            f"{tokenizer['training_seconds']:.1f} s"
        )
    elif tokenizer:
        lines.append(
            f"- tokenizer: that of `{tokenizer.get('from')}` ({tokenizer.get('vocab_size', '?'):,} tokens)"
        )
    if tokenizer.get("words_measured"):
        lines.append(
            f"- on {tokenizer['words_measured']:,} words of {tokenizer['texts_measured']:,} training texts: "
            f"{tokenizer['pieces_per_word']:.2f} pieces per word, {tokenizer['whole_word_share']:.1%} of "
            f"words one piece, {tokenizer['unknown_share']:.2%} unknown pieces; longest tokens: "
            f"{', '.join(f'`{token}`' for token in tokenizer.get('longest_tokens', []))}"
        )
    return [*lines, ""]


def distillation_lines(run: RunRecord) -> list[str]:
    """A student's start (the layers it kept, ``model.init_from``) and its teacher (``distill:``)."""
    student, distilled = run.stats.get("student"), run.stats.get("distillation")
    if not student and not distilled:
        return []
    lines = ["## Student and teacher", ""]
    if student:
        lines.append(
            f"- student: layers {', '.join(str(n) for n in student['layers'])} of the "
            f"{student['source_layers']} of `{student['init_from']}` ({student['source_parameters']:,} -> "
            f"{student['parameters']:,} parameters)"
        )
    if distilled:
        soft = SOFT_LOSSES.get(distilled["soft_loss"], distilled["soft_loss"])
        parameters = distilled.get("teacher_parameters")
        size = "not loaded: its outputs were cached" if parameters is None else f"{parameters:,} parameters"
        lines.append(
            f"- teacher: `{distilled['teacher']}` ({size}); training "
            f"loss = {distilled['alpha']:g} x {soft} (temperature {distilled['temperature']:g}) + "
            f"{1 - distilled['alpha']:g} x the task's own loss; the validation loss is the task's own"
        )
        lines += teacher_cache_lines(distilled)
    else:
        lines.append("- no teacher: trained on the labels alone")
    return [*lines, ""]


def teacher_cache_lines(distilled: dict[str, Any]) -> list[str]:
    """Where the teacher's outputs came from (``distill.cache``) and the rows it alone taught."""
    cache = distilled.get("teacher_cache") or {}
    lines = []
    if cache.get("state") == "live":
        lines.append(f"- the teacher ran live on each batch ({cache.get('why', '')})")
    elif cache.get("state"):
        lines.append(
            f"- the teacher's outputs: cache {cache['state']} ({cache.get('rows', 0):,} rows, "
            f"{cache.get('bytes', 0):,} bytes in {cache.get('folder')})"
        )
    if distilled.get("unlabelled_rows"):
        lines.append(
            f"- {distilled['unlabelled_rows']:,} unlabelled rows (data.unlabelled) learned from it alone"
        )
    return lines


#: How a report names a distillation's soft loss (``llmkit.training.distillation``).
SOFT_LOSSES = {
    "kl": "the KL divergence from the teacher's softened distribution",
    "bce": "BCE against the teacher's probabilities",
    "mse": "the squared difference from the teacher's scores",
}


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
