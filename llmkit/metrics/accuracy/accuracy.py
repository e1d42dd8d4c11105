"""Accuracy: the share of predictions equal to their reference (an offline evaluate module)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy = correct predictions / all predictions."
_KWARGS = """
predictions (list of int): predicted label ids.
references (list of int): true label ids.
Returns: {"accuracy": float in [0, 1]}.
"""


class Accuracy(evaluate.Metric):
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
        if predictions.size == 0:
            return {"accuracy": 0.0}
        return {"accuracy": float((predictions == references).mean())}
