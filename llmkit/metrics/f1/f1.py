"""F1 for any number of classes, macro-averaged by default (an offline evaluate module).

Macro: the unweighted mean of per-class F1 over every label that occurs in the references or
the predictions, so rare classes count as much as frequent ones.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), per class, averaged."
_KWARGS = """
predictions (list of int): predicted label ids.
references (list of int): true label ids.
average (str): "macro" (default), "micro" or "binary" (F1 of pos_label).
pos_label (int): the positive class for average="binary" (default 1).
Returns: {"f1": float in [0, 1]}.
"""


def per_class_f1(predictions, references, label):
    true_positive = np.sum((predictions == label) & (references == label))
    false_positive = np.sum((predictions == label) & (references != label))
    false_negative = np.sum((predictions != label) & (references == label))
    denominator = 2 * true_positive + false_positive + false_negative
    return 0.0 if denominator == 0 else 2 * true_positive / denominator


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="macro", pos_label=1):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if average == "binary":
            return {"f1": float(per_class_f1(predictions, references, pos_label))}
        if average == "micro":
            return {"f1": float((predictions == references).mean()) if predictions.size else 0.0}
        if average != "macro":
            raise ValueError(f"average must be 'macro', 'micro' or 'binary', got {average!r}")
        labels = np.union1d(predictions, references)
        if labels.size == 0:
            return {"f1": 0.0}
        return {"f1": float(np.mean([per_class_f1(predictions, references, label) for label in labels]))}
