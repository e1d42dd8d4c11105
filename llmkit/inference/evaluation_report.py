"""`llmkit evaluate`'s error analysis as Markdown, a confusion-matrix image, the models' comparison chart
and explanations.html.

It takes the analysis as plain data (what evaluation.json holds: per-class or per-entity-type scores, a
confusion matrix, the worst rows and, with --explain, their word attributions, the weakest slices) and only
renders it; the numbers are computed in :mod:`llmkit.inference.evaluate` and :mod:`llmkit.inference.explain`.
The image is drawn with matplotlib's object API on the Agg canvas, as the run plots are; without matplotlib
the report says so and goes on.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from llmkit.core.markdown import format_value, md_cell, table
from llmkit.runs.plots import matplotlib_missing

#: Slices shown per grouping in the Markdown (evaluation.json keeps them all).
SHOWN_SLICES = 5
#: Metrics drawn in the comparison chart (the first ones the models share; evaluation.md has them all).
CHARTED_METRICS = 8
#: Words marked per explanation in the Markdown: the strongest by |score|.
MARKED_WORDS = 3
#: Markdown marks of a marked word: for the explained target, and against it.
FOR_TARGET, AGAINST_TARGET = "**{}**⁺", "~~{}~~⁻"
#: explanations.html backgrounds (RGB): for the explained target, and against it.
GREEN, RED = (22, 163, 74), (220, 38, 38)


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
    if analysis.get("explained_by"):
        lines += explanation_lines(analysis["worst"], analysis["explained_by"])
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


def explanation_lines(worst: list[dict[str, Any]], method: str) -> list[str]:
    """Each worst row's explanation as its words with the strongest marked (NER: one line per entity)."""
    lines = [
        "### Why: the worst rows explained",
        "",
        f"Word attributions by {method}, to the prediction after the arrow (NER: each entity's tag). "
        f"{FOR_TARGET.format('word')}: one of the {MARKED_WORDS} words that weigh most for it, "
        f"{AGAINST_TARGET.format('word')}: against it. Every word's score (their |scores| sum to 1) is in "
        f"evaluation.json and, coloured, in explanations.html. δ: how far, in logits, the scores miss the "
        f"change the words make to the prediction (from the input with its words padded out); near 0 is "
        f"an accurate integral. The scores explain what this model reads, not what is true of the text.",
        "",
    ]
    for entry in worst:
        explanation = entry.get("explanation")
        if isinstance(explanation, dict):
            lines.append(f"- row {entry['row']} → {explained_text(explanation)}")
        elif isinstance(explanation, list):
            lines.append(f"- row {entry['row']}:{'' if explanation else ' (no entities predicted)'}")
            lines += [f"  - {md_cell(one['entity'])} → {explained_text(one)}" for one in explanation]
    return [*lines, ""]


def explained_text(explanation: dict[str, Any]) -> str:
    """``target (δ delta): the words``, the strongest ones marked for or against the target."""
    words = explanation["words"]
    strongest = sorted(range(len(words)), key=lambda i: -abs(words[i][1]))[:MARKED_WORDS]
    shown = []
    for index, (word, score) in enumerate(words):
        text = markdown_escaped(word)
        if index in strongest and score:
            text = (FOR_TARGET if score > 0 else AGAINST_TARGET).format(text)
        shown.append(text)
    return f"{md_cell(explanation['target'])} (δ {explanation['delta']:.4g}): {' '.join(shown)}"


def markdown_escaped(word: str) -> str:
    """A word as literal Markdown text, on one line (pipes too, as a table cell needs)."""
    return re.sub(r"([\\`*_~\[\]<>|#])", r"\\\1", " ".join(word.split()))


def explanations_html(title: str, models: list[tuple[str, dict[str, Any]]]) -> str:
    """A self-contained page: per model, each worst row's words on a background green for the target, red
    against it, stronger for a larger share of the row's evidence; hovering a word shows its score."""
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.9}"
        ".words span{padding:0.1em 0.15em;border-radius:0.2em}.meta{color:#555;margin-bottom:0}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for model, analysis in models:
        parts.append(
            f"<h2>{html.escape(model)}</h2><p>{html.escape(analysis['explained_by'])}: green words "
            "push toward the explained target, red ones against it; the stronger the colour, the "
            "larger the word's share of the evidence (hover for its score).</p>"
        )
        for entry in analysis["worst"]:
            parts += row_html(entry)
    return "\n".join([*parts, "</body></html>"]) + "\n"


def row_html(entry: dict[str, Any]) -> list[str]:
    explanation = entry.get("explanation")
    explained = explanation if isinstance(explanation, list) else [explanation] if explanation else []
    meta = f"row {entry['row']} · gold {entry['gold']} · predicted {entry['prediction']}"
    parts = [f'<p class="meta">{html.escape(meta)}</p>']
    if not explained:
        parts.append("<p>(no entities predicted: nothing to explain)</p>")
    for one in explained:
        heading = f"{one.get('entity', '')} → {one['target']} (δ {one['delta']:.4g})".lstrip()
        parts.append(f'<p class="words"><b>{html.escape(heading)}</b>: {highlighted_html(one["words"])}</p>')
    return parts


def highlighted_html(words: list[list[Any]]) -> str:
    """Words as spans on a green (for) or red (against) background, opacity by |score| over the largest."""
    largest = max((abs(score) for _, score in words), default=0.0) or 1.0
    spans = []
    for word, score in words:
        red, green, blue = GREEN if score >= 0 else RED
        alpha = round(0.8 * abs(score) / largest, 3)
        spans.append(
            f'<span style="background:rgba({red},{green},{blue},{alpha})" title="{score:+.4f}">'
            f"{html.escape(str(word))}</span>"
        )
    return " ".join(spans)


def slice_lines(slices: dict[str, list[dict[str, Any]]], metric: str) -> list[str]:
    """Per grouping (label, input length, a named column), its weakest slices by the headline metric."""
    lines = [f"### Weakest slices (by {metric})", ""]
    body = []
    for grouping, groups in slices.items():
        for group in groups[:SHOWN_SLICES]:
            body.append([grouping, group["value"], group["rows"], format_value(group[metric])])
    return [*lines, *table(["slice by", "value", "rows", metric], body), ""]


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
    figure.legend(loc="outside lower center", fontsize=8)  # below the axes: never over a bar
    figure.savefig(path)
    return None


#: Reported beside the scores but not scores (counts, lengths, losses): another scale, left out of the chart.
NOT_CHARTED_ENDINGS = ("loss", "perplexity", "_rows", "_samples", "_windows", "gen_len")
NOT_CHARTED_STARTS = ("truncated_", "dropped_", "skipped_")


def charted_metrics(models: list[dict[str, Any]]) -> list[str]:
    """The scores every model has: counts, generated lengths, losses and perplexities left out."""
    shared = [key for key in models[0]["metrics"] if all(key in model["metrics"] for model in models)]
    scores = [
        key
        for key in shared
        if isinstance(models[0]["metrics"][key], (int, float))
        and not key.endswith(NOT_CHARTED_ENDINGS)
        and not key.removeprefix("eval_").startswith(NOT_CHARTED_STARTS)
    ]
    return scores[:CHARTED_METRICS]


__all__ = ["analysis_markdown", "explanations_html", "write_comparison_chart", "write_confusion_matrix"]
