"""Matthews correlation coefficient, binary and multi-class (an offline evaluate module).

Uses the multi-class generalisation (Gorodkin 2004) computed from the confusion matrix; it
reduces to the usual binary MCC for two classes and is 0 when a marginal is constant.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "MCC in [-1, 1]: 1 perfect, 0 no better than chance, -1 total disagreement."
_KWARGS = """
predictions (list of int): predicted label ids.
references (list of int): true label ids.
Returns: {"matthews_correlation": float in [-1, 1]}.
"""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        labels, encoded = np.unique(np.concatenate([references, predictions]), return_inverse=True)
        true_ids, predicted_ids = encoded[: references.size], encoded[references.size :]
        confusion = np.zeros((labels.size, labels.size), dtype=np.float64)
        np.add.at(confusion, (true_ids, predicted_ids), 1)
        total = confusion.sum()
        correct = np.trace(confusion)
        true_counts = confusion.sum(axis=1)
        predicted_counts = confusion.sum(axis=0)
        numerator = correct * total - true_counts @ predicted_counts
        denominator = np.sqrt(
            (total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts)
        )
        return {"matthews_correlation": 0.0 if denominator == 0 else float(numerator / denominator)}
