"""Scores of an embedding model from its similarities: correlation with gold scores (STS) and retrieval
ranks (a query's relevant passages among a corpus).

Plain NumPy/SciPy on a similarity matrix, so the same numbers come out of training, `llmkit evaluate` and a
hand computation; no model and no `evaluate` module are involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The cut-offs of the retrieval metrics: MRR@10, Recall@1, Recall@10, NDCG@10.
RECALL_AT = (1, 10)
RANK_CUTOFF = 10


def similarity_correlations(similarities: Sequence[float], scores: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation of the model's similarities with the gold scores (STS-B's 0-5)."""
    from scipy.stats import pearsonr, spearmanr

    predicted, gold = np.asarray(similarities, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(gold) == 0:
        return {"pearson": 0.0, "spearman": 0.0}  # a constant has no correlation (SciPy: NaN and a warning)
    return {
        "pearson": float(pearsonr(predicted, gold).statistic),
        "spearman": float(spearmanr(predicted, gold).statistic),
    }


def retrieval_outcomes(similarities: np.ndarray, relevant: Sequence[set[int]]) -> dict[str, np.ndarray]:
    """Each query's reciprocal rank (0 beyond rank 10), NDCG@10 (binary relevance) and Recall@1/@10: rows of
    ``similarities`` are queries, columns corpus passages; ``relevant[q]`` holds query q's relevant columns.

    Ties are broken by column order (a stable sort), so the numbers do not depend on the platform's sort."""
    similarities = np.asarray(similarities, dtype=np.float64).reshape(len(relevant), -1)
    order = np.argsort(-similarities, axis=1, kind="stable")[:, : max(RANK_CUTOFF, *RECALL_AT)]
    outcomes: dict[str, list[float]] = {"mrr_at_10": [], "ndcg_at_10": []}
    outcomes.update({f"recall_at_{k}": [] for k in RECALL_AT})
    for ranked, wanted in zip(order.tolist(), relevant, strict=True):
        hits = [column in wanted for column in ranked]
        first = next((rank for rank, hit in enumerate(hits[:RANK_CUTOFF], start=1) if hit), None)
        outcomes["mrr_at_10"].append(1.0 / first if first else 0.0)
        gain = sum(1.0 / np.log2(rank + 1) for rank, hit in enumerate(hits[:RANK_CUTOFF], start=1) if hit)
        ideal = sum(1.0 / np.log2(rank + 1) for rank in range(1, min(len(wanted), RANK_CUTOFF) + 1))
        outcomes["ndcg_at_10"].append(gain / ideal)
        for k in RECALL_AT:
            outcomes[f"recall_at_{k}"].append(sum(hits[:k]) / len(wanted))
    return {key: np.asarray(values, dtype=np.float64) for key, values in outcomes.items()}


def retrieval_scores(similarities: np.ndarray, relevant: Sequence[set[int]]) -> dict[str, float]:
    """Means over the queries of :func:`retrieval_outcomes`: MRR@10, NDCG@10, Recall@1, Recall@10."""
    outcomes = retrieval_outcomes(similarities, relevant)
    return {key: float(values.mean()) if len(values) else 0.0 for key, values in outcomes.items()}
