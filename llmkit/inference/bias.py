"""The counterfactual bias probe of `llmkit audit RUN`: swap identity terms in the evaluation rows and count,
per group of terms, how often the run's prediction changes.

Each evaluation row that holds a term of a group (``llmkit.data.counterfactual``: given names by gender,
pronouns, nationalities, religions; the shipped list or ``--bias-terms``) gets its counterfactual texts; the
model predicts the rows and their counterfactuals as `llmkit predict` does (``Task.predict``). A flip is a
counterfactual whose predicted class differs from its row's. Per group: the flip rate (flips per
counterfactual) with a 95 % bootstrap interval that resamples rows (a row's counterfactuals go together),
the mean shift of the predicted class's probability where the class stayed, and examples of flips.
Single-label classification only; the text column is probed (a pair's second text is left as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.data.counterfactual import TermGroup, counterfactuals, load_terms
from llmkit.data.files import Split

#: Evaluation rows probed at most (the first ones).
BIAS_ROWS = 1000
RESAMPLES = 1000
CONFIDENCE = 0.95
EXAMPLES = 5


def bias_probe(run: Path, split: Split, terms: str | Path | None, limit: int, seed: int) -> dict[str, Any]:
    """The probe on the first ``limit`` rows of ``split`` with the run's model, or why it was not run."""
    from llmkit.core.progress import quiet_library_progress
    from llmkit.inference.predict import task_for_model
    from llmkit.models.resolve import check_weights, load_for_inference, load_tokenizer
    from llmkit.tasks.classification import ClassificationTask

    groups = load_terms(terms)  # a bad term file is an error before the model loads
    task = task_for_model(run)
    if not isinstance(task, ClassificationTask) or task.verbalizer is not None:
        return {"checked": False, "why": f"not checked for task {task.name} (classification runs only)"}
    with quiet_library_progress(errors_only=True):
        tokenizer = load_tokenizer(run)
        model = load_for_inference(task, run, **check_weights(run, exported=True))
    if task.inference_problem(model) != "single_label":
        return {"checked": False, "why": "not checked for this problem (single-label classification only)"}
    rows = split.dataset.select(range(min(limit, len(split.dataset)))).to_list()
    column = task.data["text"]
    original = task.predict(model, tokenizer, rows)
    result: dict[str, Any] = {
        "checked": True,
        "split": split.role,
        "rows": len(rows),
        "column": column,
        "terms": str(terms) if terms is not None else "the shipped list (llmkit/data/identity_terms.yaml)",
        "groups": {},
    }
    for group in groups:
        result["groups"][group.name] = group_flips(task, model, tokenizer, rows, original, group, split, seed)
    return result


def group_flips(
    task: Any,
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    original: list[dict[str, Any]],
    group: TermGroup,
    split: Split,
    seed: int,
) -> dict[str, Any]:
    """One group's flip rate, interval, score shift and examples."""
    from llmkit.tasks.classification import PREDICTED_LABEL, PREDICTED_SCORE

    column = task.data["text"]
    made = [
        (index, text, swapped)
        for index, row in enumerate(rows)
        for text, swapped in counterfactuals(str(row[column] or ""), group)
    ]
    found: dict[str, Any] = {"kind": group.kind, "rows_with_terms": len({index for index, _, _ in made})}
    found["counterfactuals"] = len(made)
    if not made:
        return {**found, "flip_rate": None, "interval": None, "mean_score_shift": None, "examples": []}
    predicted = task.predict(model, tokenizer, [{**rows[index], column: text} for index, text, _ in made])
    flips: dict[int, list[bool]] = {}
    shifts, examples = [], []
    for (index, text, swapped), prediction in zip(made, predicted, strict=True):
        before = original[index]
        flipped = prediction[PREDICTED_LABEL] != before[PREDICTED_LABEL]
        flips.setdefault(index, []).append(flipped)
        if not flipped:
            shifts.append(prediction[PREDICTED_SCORE] - before[PREDICTED_SCORE])
        elif len(examples) < EXAMPLES:
            examples.append(
                {
                    "where": split.where(index),
                    "text": rows[index][column],
                    "counterfactual": text,
                    "swapped": swapped,
                    "prediction": _shown(before),
                    "counterfactual_prediction": _shown(prediction),
                }
            )
    rate, low, high = flip_rate(list(flips.values()), seed)
    return {
        **found,
        "flips": sum(sum(row) for row in flips.values()),
        "flip_rate": rate,
        "interval": [low, high],
        "mean_score_shift": round(sum(shifts) / len(shifts), 4) + 0.0 if shifts else None,  # no -0.0
        "examples": examples,
    }


def flip_rate(
    flips: list[list[bool]], seed: int, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Flips / counterfactuals, and its percentile bootstrap interval over rows (each row's counterfactuals
    resampled together: they share the row's text, so they are not independent)."""
    import numpy as np

    flipped = np.array([sum(row) for row in flips], dtype=np.float64)
    made = np.array([len(row) for row in flips], dtype=np.float64)
    rate = float(flipped.sum() / made.sum())
    picks = np.random.default_rng(seed).integers(0, len(flips), size=(resamples, len(flips)))
    rates = flipped[picks].sum(axis=1) / made[picks].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(rates, [tail, 100 - tail])
    return round(rate, 4), round(float(low), 4), round(float(high), 4)


def _shown(prediction: dict[str, Any]) -> str:
    from llmkit.tasks.classification import PREDICTED_LABEL, PREDICTED_SCORE

    return f"{prediction[PREDICTED_LABEL]} ({prediction[PREDICTED_SCORE]:.2f})"
