"""Multi-label scores from 0/1 label vectors: micro and macro F1, per-label F1, subset accuracy (offline).

Each row is a vector with one 0/1 entry per label (predicted: probability over the threshold). Micro F1
pools every (row, label) decision; macro F1 is the unweighted mean of per-label F1 over the labels that
occur in the references or the predictions (a label absent from both is left out, as in llmkit's f1);
subset accuracy counts the rows whose whole label set is right.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Micro/macro F1, per-label F1 and subset (exact-match) accuracy for multi-label predictions."
_KWARGS = """
predictions (list of list of int): 0/1 per label, one vector per row.
references (list of list of int): 0/1 per label, one vector per row.
Returns: {"f1_micro": float, "f1_macro": float, "subset_accuracy": float,
          "f1_per_label": list of float (NaN for a label absent from both)}.
"""


def f1_from_counts(true_positive, false_positive, false_negative):
    denominator = 2 * true_positive + false_positive + false_negative
    return np.where(denominator == 0, np.nan, 2 * true_positive / np.maximum(denominator, 1))


class Multilabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int8")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=bool)
        references = np.asarray(references, dtype=bool)
        if predictions.size == 0:
            return {"f1_micro": 0.0, "f1_macro": 0.0, "subset_accuracy": 0.0, "f1_per_label": []}
        true_positive = (predictions & references).sum(axis=0)
        false_positive = (predictions & ~references).sum(axis=0)
        false_negative = (~predictions & references).sum(axis=0)
        per_label = f1_from_counts(true_positive, false_positive, false_negative)
        micro = f1_from_counts(true_positive.sum(), false_positive.sum(), false_negative.sum())
        occurring = per_label[~np.isnan(per_label)]
        return {
            "f1_micro": 0.0 if np.isnan(micro) else float(micro),
            "f1_macro": float(occurring.mean()) if occurring.size else 0.0,
            "subset_accuracy": float((predictions == references).all(axis=1).mean()),
            "f1_per_label": [float(value) for value in per_label],
        }
