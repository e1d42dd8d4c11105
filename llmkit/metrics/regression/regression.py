"""Pearson and Spearman correlation and mean squared error of predicted scores (an offline evaluate module).

Spearman is Pearson's correlation of the ranks, ties sharing their mean rank (scipy.stats.spearmanr), as in
GLUE's STS-B. A constant prediction or reference has no correlation: both are reported as 0.
"""

import datasets
import evaluate
import numpy as np
from scipy import stats

_DESCRIPTION = "Pearson r, Spearman rho and mean squared error between predicted and true scores."
_KWARGS = """
predictions (list of float): predicted scores.
references (list of float): true scores.
Returns: {"pearson": float, "spearman": float, "mse": float}.
"""


def correlation(kind, predictions, references):
    """The coefficient, or 0.0 where it is undefined (fewer than two rows, a constant column)."""
    if predictions.size < 2 or np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return 0.0
    return float(kind(predictions, references)[0])


class Regression(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references, dtype=np.float64)
        return {
            "pearson": correlation(stats.pearsonr, predictions, references),
            "spearman": correlation(stats.spearmanr, predictions, references),
            "mse": float(np.mean((predictions - references) ** 2)) if predictions.size else 0.0,
        }
