"""`llmkit evaluate`'s error analysis as Markdown, a confusion-matrix image and the models' comparison chart.

It takes the analysis as plain data (what evaluation.json holds: per-class or per-entity-type scores, a
confusion matrix, the worst rows, the weakest slices) and only renders it; the numbers are computed in
:mod:`llmkit.evaluate`. The image is drawn with matplotlib's object API on the Agg canvas, as the run plots
are; without matplotlib the report says so and goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.markdown import format_value, table
from llmkit.plots import matplotlib_missing

#: Slices shown per grouping in the Markdown (evaluation.json keeps them all).
SHOWN_SLICES = 5
#: Metrics drawn in the comparison chart (the first ones the models share; evaluation.md has them all).
CHARTED_METRICS = 8


def write_confusion_matrix(confusion: dict[str, Any], path: Path) -> str | None:
    """Draw the confusion matrix (gold rows, predicted columns, counts in the cells) to ``path``; returns
    why it was skipped, or None when it was drawn."""
    missing = matplotlib_missing()
    if missing is not None:
        return missing
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, matrix = confusion["labels"], confusion["matrix"]
    side = min(2.0 + 0.5 * len(labels), 16.0)
    figure = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title("Confusion matrix")
    if len(labels) <= 20:
        largest = max((max(row) for row in matrix), default=0)
        for gold, row in enumerate(matrix):
            for predicted, count in enumerate(row):
                colour = "white" if count > largest / 2 else "black"
                axes.text(predicted, gold, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.savefig(path)
    return None


def analysis_markdown(model: str, analysis: dict[str, Any]) -> list[str]:
    """One model's error analysis: its breakdown table, the confusion matrix, worst rows, weakest slices."""
    lines = [f"## Error analysis: {model}", ""]
    for key, heading in (("per_class", "Per class"), ("per_type", "Per entity type")):
        if analysis.get(key):
            lines += [f"### {heading}", "", *breakdown_table(analysis[key]), ""]
    if "confusion" in analysis:
        lines += confusion_lines(analysis["confusion"], analysis.get("confusion_image"))
    if analysis.get("worst"):
        lines += worst_lines(analysis["worst"], analysis.get("worst_by", "error"))
    if analysis.get("slices"):
        lines += slice_lines(analysis["slices"], analysis.get("slice_metric", "score"))
    return lines


def breakdown_table(scores: dict[str, dict[str, Any]]) -> list[str]:
    """Precision, recall, F1 and support per class (or entity type), in the given order."""
    columns = ["precision", "recall", "f1", "support"]
    body = [[name, *(format_value(values.get(c, "-")) for c in columns)] for name, values in scores.items()]
    return table(["", *columns], body)


def confusion_lines(confusion: dict[str, Any], image: dict[str, str] | None) -> list[str]:
    labels = confusion["labels"]
    lines = ["### Confusion matrix (rows: gold, columns: predicted)", ""]
    if image and image.get("file"):
        lines += [f"![confusion matrix]({image['file']})", ""]
    elif image and image.get("skipped"):
        lines += [f"(image skipped: {image['skipped']})", ""]
    if len(labels) <= 20:
        body = [[gold, *row] for gold, row in zip(labels, confusion["matrix"], strict=True)]
        lines += [*table(["gold \\ predicted", *labels], body), ""]
    return lines


def worst_lines(worst: list[dict[str, Any]], worst_by: str) -> list[str]:
    body = [[w["row"], w["input"], w["gold"], w["prediction"], format_value(w["error"])] for w in worst]
    return [
        f"### Worst {len(worst)} rows (by {worst_by})",
        "",
        *table(["row", "input", "gold", "prediction", worst_by], body),
        "",
    ]


def slice_lines(slices: dict[str, list[dict[str, Any]]], metric: str) -> list[str]:
    """Per grouping (label, input length, a named column), its weakest slices by the headline metric."""
    lines = [f"### Weakest slices (by {metric})", ""]
    body = []
    for grouping, groups in slices.items():
        for group in groups[:SHOWN_SLICES]:
            body.append([grouping, group["value"], group["rows"], format_value(group[metric])])
    return [*lines, *table(["slice by", "value", "rows", metric], body), ""]


__all__ = ["analysis_markdown", "write_confusion_matrix"]


def write_comparison_chart(models: list[dict[str, Any]], path: Path) -> str | None:
    """Several models' shared scores as grouped horizontal bars with their bootstrap intervals (the
    ``models`` entries of evaluation.json); returns why it was skipped, or None when it was drawn."""
    missing = matplotlib_missing()
    if missing is not None:
        return missing
    metrics = charted_metrics(models)
    if not metrics:
        return "the models share no score to compare (loss-only tasks are compared in the table)"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = 0.8 / len(models)
    figure = Figure(figsize=(8.0, 1.2 + 0.45 * len(metrics) * len(models)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for number, model in enumerate(models):
        positions = [row + (number - (len(models) - 1) / 2) * height for row in range(len(metrics))]
        values = [model["metrics"][key] for key in metrics]
        bounds = [
            model["intervals"].get(key, [value, value]) for key, value in zip(metrics, values, strict=True)
        ]
        errors = [
            [value - low for value, (low, _) in zip(values, bounds, strict=True)],
            [high - value for value, (_, high) in zip(values, bounds, strict=True)],
        ]
        axes.barh(positions, values, height=height, xerr=errors, capsize=3, label=model["model"])
    axes.set_yticks(range(len(metrics)), [key.removeprefix("eval_") for key in metrics])
    axes.invert_yaxis()
    axes.set_xlabel("score (bars: 95 % bootstrap interval)")
    axes.set_title("Models on the same rows")
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path)
    return None


def charted_metrics(models: list[dict[str, Any]]) -> list[str]:
    """The scores every model has, losses and perplexities left out (another scale)."""
    shared = [key for key in models[0]["metrics"] if all(key in model["metrics"] for model in models)]
    scores = [
        key
        for key in shared
        if isinstance(models[0]["metrics"][key], (int, float))
        and not key.endswith(("loss", "perplexity", "_rows", "_samples", "_windows"))
    ]
    return scores[:CHARTED_METRICS]
