"""Training curves from the Trainer's log history: loss, learning rate and the task's headline metric.

The series are computed first (plain data, written beside the images as ``plot_data.json``) and drawn
second, with matplotlib's object API on the Agg canvas: no pyplot state, no GUI backend, and matplotlib
is imported only here, only when plots are drawn. Without matplotlib the run goes on and the report says
the plots were skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.core.errors import install_hint

PLOTS_DIR = "plots"
PLOT_DATA_FILE = "plot_data.json"

#: (step, value) pairs of one curve.
Points = list[tuple[int, float]]


@dataclass
class Series:
    """One plot: a title, a y-axis label and named curves (e.g. train and eval loss)."""

    name: str  # file stem: loss -> plots/loss.png
    title: str
    ylabel: str
    lines: dict[str, Points] = field(default_factory=dict)
    xlabel: str = "step"  # what the points' first numbers count (llmkit sweep: trials)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "ylabel": self.ylabel,
            "lines": {label: [list(point) for point in points] for label, points in self.lines.items()},
        }


def points(log_history: list[dict[str, Any]], key: str) -> Points:
    """The logged (step, value) pairs of ``key`` by step; NaN/inf and non-numbers are left out.

    One point per step, the last logged: the evaluation after training repeats the last step's.
    """
    found: dict[int, float] = {}
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[int(entry.get("step", 0))] = float(value)
    return sorted(found.items())


def training_series(log_history: list[dict[str, Any]], headline_metric: str) -> list[Series]:
    """The plots a run gets: loss (train and eval), learning rate, and ``eval_<headline_metric>``.

    Perplexity is not logged during training; it is exp(eval loss) at each evaluation. Plots with no
    logged point are left out (a run without validation data has no eval curves).
    """
    loss = Series("loss", "Loss", "loss", {"train": points(log_history, "loss")})
    loss.lines["eval"] = points(log_history, "eval_loss")
    series = [
        loss,
        Series(
            "learning_rate", "Learning rate", "learning rate", {"train": points(log_history, "learning_rate")}
        ),
    ]
    if headline_metric != "loss":
        metric = points(log_history, f"eval_{headline_metric}")
        if not metric and headline_metric == "perplexity":
            metric = [(step, math.exp(min(value, 50.0))) for step, value in points(log_history, "eval_loss")]
        label = headline_metric.replace("_", " ")
        series.append(Series(headline_metric, label.capitalize(), label, {"eval": metric}))
    series += reward_series(log_history)
    for item in series:
        item.lines = {label: line for label, line in item.lines.items() if line}
    return [item for item in series if item.lines]


def reward_series(log_history: list[dict[str, Any]]) -> list[Series]:
    """GRPO: the mean reward of the sampled completions (the weighted total and each reward's, logged by TRL
    as ``reward`` and ``rewards/<name>/mean``) beside the evaluations' greedy ones; the completion lengths."""
    means = {
        key for entry in log_history for key in entry if key.startswith("rewards/") and key.endswith("/mean")
    }
    names = sorted(key.removeprefix("rewards/").removesuffix("/mean") for key in means)
    reward = Series("reward", "Reward", "mean reward", {"train": points(log_history, "reward")})
    reward.lines["eval"] = points(log_history, "eval_reward")
    for name in names:
        reward.lines[f"train {name}"] = points(log_history, f"rewards/{name}/mean")
    length = Series("completion_length", "Completion length", "tokens")
    length.lines["train"] = points(log_history, "completions/mean_length")
    length.lines["eval"] = points(log_history, "eval_completion_length")
    return [reward, length]


def matplotlib_missing() -> str | None:
    """Why plots cannot be drawn here (one line), or None when matplotlib is importable."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed ({install_hint('matplotlib', 'report')})"
    return None


def build_figure(series: Series) -> Any:
    """A matplotlib Figure of one series (steps, or the series' own x, on x), attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, line in series.lines.items():
        steps = [step for step, _ in line]
        values = [value for _, value in line]
        axes.plot(steps, values, marker="o" if len(line) < 30 else None, markersize=3, label=label)
    axes.set_title(series.title)
    axes.set_xlabel(series.xlabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and trials are counted
    axes.set_ylabel(series.ylabel)
    axes.grid(True, alpha=0.3)
    if series.name == "learning_rate":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if len(series.lines) > 1:
        axes.legend()
    return figure


def write_plots(output_dir: Path, series: list[Series]) -> list[Path]:
    """Draw each series to ``plots/<name>.png`` and write the plotted numbers to ``plots/plot_data.json``."""
    folder = output_dir / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    written = []
    for item in series:
        path = folder / f"{item.name}.png"
        build_figure(item).savefig(path)
        written.append(path)
    data = {item.name: item.to_dict() for item in series}
    (folder / PLOT_DATA_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return written
