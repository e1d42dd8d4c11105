"""Metrics as ``evaluate`` modules shipped inside llmkit, loaded from local paths (no hub access).

Each folder here is a standard evaluate module (``<name>/<name>.py``); ``load_metrics`` loads
them with ``evaluate.load(<path>)`` and combines them with ``evaluate.combine``.

May import: core
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").exists())


def metric_path(name: str) -> str:
    path = METRICS_DIR / name
    if not (path / f"{name}.py").exists():
        raise ValueError(f"llmkit ships no metric '{name}'; available: {', '.join(available_metrics())}")
    return str(path)


def load_metrics(*names: str) -> Any:
    """``evaluate.combine`` of llmkit's local metric modules, e.g. ``load_metrics("accuracy", "f1")``."""
    import evaluate

    return evaluate.combine([evaluate.load(metric_path(name)) for name in names])
