"""Learning curves for the side-by-side benchmarks: score at a third, two thirds and all of a budget.

The issues ask for the score at fractions of the training budget when a target is not reached. These
helpers give a Trainer (llmkit's or a plain one) evaluation points inside one schedule, read them back from
its log history, and stop a slower baseline part-way through the same schedule, so a point of its curve can
be compared with llmkit's at the same step.
"""

from __future__ import annotations


def curve_settings(steps: int, points: int) -> dict:
    """TrainingArguments that evaluate every ``steps / points`` steps (none for one point: the end only).

    The step is rounded up. transformers evaluates the last step too, and llmkit takes that evaluation as
    its final score, so the final weights are scored once.
    """
    if points <= 1:
        return {"eval_strategy": "no"}
    return {"eval_strategy": "steps", "eval_steps": -(-steps // points)}


def stop_at(step: int | None):
    """A callback that ends training after ``step`` steps; the schedule (warm-up, decay) keeps its length."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if step is not None and state.global_step >= step:
                control.should_training_stop = True
                control.should_evaluate = args.eval_strategy != "no"  # the figures at the stopping step

    return StopAt()


def curve_points(log_history: list[dict], metric: str, scale: float = 1.0) -> list[dict]:
    """The evaluations of a run: step, ``eval_{metric}`` (times ``scale``), seconds, and whether it ran
    inside ``train()`` (before the Trainer's closing entry of totals), where its time is not
    training time. A step scored twice keeps its first score."""
    # the closing entry has the run's totals (llmkit's per-step logs carry a running train_runtime too)
    totals = [i for i, entry in enumerate(log_history) if "train_samples_per_second" in entry]
    closing = totals[0] if totals else len(log_history)
    points: dict[int, dict] = {}
    for i, entry in enumerate(log_history):
        if f"eval_{metric}" in entry and entry["step"] not in points:
            points[entry["step"]] = {
                "step": entry["step"],
                metric: round(scale * entry[f"eval_{metric}"], 2),
                "eval_s": round(entry["eval_runtime"], 1),
                "inside_train": i < closing,
            }
    return list(points.values())


def training_seconds(train_runtime: float, points: list[dict]) -> float:
    """The Trainer's ``train_runtime`` less the evaluations it ran inside ``train()``."""
    return train_runtime - sum(point["eval_s"] for point in points if point["inside_train"])


def curve_text(points: list[dict], metric: str) -> str:
    return ", ".join(f"{point['step']}: {point[metric]}" for point in points)
