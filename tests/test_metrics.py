"""llmkit's offline evaluate modules agree with hand-computed values and with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from llmkit.metrics import load_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_hand_computed_binary_case() -> None:
    # references 1 1 0 0, predictions 1 0 0 0: TP=1 FN=1 TN=2 FP=0
    result = load_metrics("accuracy", "f1", "matthews_correlation").compute(
        predictions=[1, 0, 0, 0], references=[1, 1, 0, 0]
    )
    assert result["accuracy"] == pytest.approx(0.75)
    # class 1: F1 = 2*1/(2*1+0+1) = 2/3; class 0: F1 = 2*2/(2*2+1+0) = 4/5; macro = (2/3 + 4/5) / 2
    assert result["f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 0) / sqrt(1*2*2*3)
    assert result["matthews_correlation"] == pytest.approx(2 / np.sqrt(12))


def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    references = rng.integers(0, 4, size=300)
    predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, 4, size=300))
    result = load_metrics("accuracy", "f1", "matthews_correlation").compute(
        predictions=predictions, references=references
    )
    assert result["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(references, predictions))
    assert result["f1"] == pytest.approx(sklearn_metrics.f1_score(references, predictions, average="macro"))
    assert result["matthews_correlation"] == pytest.approx(
        sklearn_metrics.matthews_corrcoef(references, predictions)
    )


def test_constant_predictions_give_zero_mcc() -> None:
    result = load_metrics("matthews_correlation").compute(predictions=[1, 1, 1], references=[0, 1, 1])
    assert result["matthews_correlation"] == 0.0
