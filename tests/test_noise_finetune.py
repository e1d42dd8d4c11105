"""`llmkit audit --noise-finetune`: the k-fold fine-tune probe (``llmkit.training.out_of_fold``) on a tiny
model — its batches, its out-of-fold answers on a planted flip, the audit and CLI wiring, and its error."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llmkit.core.errors import LlmkitError
from llmkit.inference.audit import finetuned_probabilities, load_embedder
from llmkit.training import out_of_fold
from tests.conftest import write_csv

FILLERS = ["film", "story with a cast", "movie about two friends and a dog", "plot", "ending of the book"]


def keyword_rows(count: int) -> tuple[list[str], np.ndarray]:
    """Texts whose first word alone decides the label (good: 1, bad: 0), of varied lengths."""
    labels = np.arange(count) % 2
    texts = [f"{'good' if label else 'bad'} {FILLERS[i % len(FILLERS)]}" for i, label in enumerate(labels)]
    return texts, labels


def test_epoch_batches_hold_each_row_once_with_similar_lengths() -> None:
    rows = np.arange(100, 300)  # a fold's rows: indices into all rows' lengths
    lengths = np.random.default_rng(0).integers(1, 60, size=300)
    batches = out_of_fold.epoch_batches(rows, lengths, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == rows.tolist()
    again = out_of_fold.epoch_batches(rows, lengths, seed=1, epoch=1)
    assert [b.tolist() for b in again] != [b.tolist() for b in batches]  # a new order each epoch
    assert all(len(batch) <= out_of_fold.BATCH_SIZE for batch in batches)
    # 200 rows fit one window: sorted by length, so no two batches' length ranges overlap
    ranges = sorted((lengths[batch].min(), lengths[batch].max()) for batch in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in itertools.pairwise(ranges))


def test_the_probe_scores_a_planted_flip_against_its_given_label(monkeypatch) -> None:
    """Trained on the other folds, the model reads the keyword: the flipped row's given label gets a low
    probability, the others' given labels high ones."""
    monkeypatch.setattr(out_of_fold, "EPOCHS", 20)
    monkeypatch.setattr(out_of_fold, "LEARNING_RATE", 3e-3)
    texts, ids = keyword_rows(60)
    ids[7] = 1 - ids[7]
    embedder = load_embedder("tiny-bert")
    probabilities = finetuned_probabilities(embedder, texts, ids, seed=0)
    assert probabilities.shape == (60, 2) and np.allclose(probabilities.sum(axis=1), 1)
    given = probabilities[np.arange(60), ids]
    assert given[7] < 0.1
    assert (np.delete(given, 7) > 0.5).mean() >= 0.9


def test_the_audit_flag_adds_the_finetune_to_the_method(tmp_path: Path, run_cli) -> None:
    texts, ids = keyword_rows(24)
    names = ["negative", "positive"]  # the default recipe's labels
    rows = [[text, names[label]] for text, label in zip(texts, ids, strict=True)]
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    args = ["audit", "model=tiny-bert", f"data.train={train}", "--no-near", "--output", str(tmp_path / "a")]
    result = run_cli(*args, "--noise-finetune")
    assert result.exit_code == 0, result.stderr
    noise = json.loads((tmp_path / "a" / "audit.json").read_text())["label_noise"]
    assert noise["checked"] and "and a 3-fold fine-tune of the model, averaged" in noise["method"]
    assert noise["rows"] == 24


def test_a_model_without_a_transformer_encoder_is_a_one_line_error() -> None:
    embedder = SimpleNamespace(model=[object()], folder=Path("static-embeddings"))
    with pytest.raises(LlmkitError, match="--noise-finetune: static-embeddings has no transformer encoder"):
        finetuned_probabilities(embedder, ["a", "b"], np.array([0, 1]), seed=0)


def test_the_probe_trains_float32_copies_and_leaves_the_loaded_model_as_it_was(monkeypatch) -> None:
    """Inference may load the model in half precision (on a GPU): each fold trains a float32 copy, and the
    embedding model the audit loaded keeps its weights and dtype."""
    import torch

    monkeypatch.setattr(out_of_fold, "EPOCHS", 1)
    texts, ids = keyword_rows(12)
    embedder = load_embedder("tiny-bert")
    encoder = embedder.model[0].auto_model.to(torch.bfloat16)
    before = {name: value.clone() for name, value in encoder.state_dict().items()}
    probabilities = finetuned_probabilities(embedder, texts, ids, seed=0)
    assert probabilities.dtype == np.float64 and np.isfinite(probabilities).all()
    after = encoder.state_dict()
    assert all(
        after[name].dtype == torch.bfloat16 and torch.equal(after[name], before[name]) for name in before
    )


def test_a_model_it_cannot_finetune_fails_before_the_embedding(monkeypatch) -> None:
    """The label-noise step checks the model it would fine-tune before it spends the embedding's minutes."""
    import llmkit.inference.audit as audit_module
    from llmkit.data.audit import AuditRows
    from llmkit.tasks.base import AuditColumns

    class NoEncoder:
        model, folder = [object()], Path("static-embeddings")

        def vectors(self, texts: list[str]) -> np.ndarray:
            raise AssertionError("embedded before the check")

    monkeypatch.setattr(audit_module, "load_embedder", lambda model: NoEncoder())
    texts = ["good film", "bad film"] * 3
    train = AuditRows("train", texts, texts, ["1", "0"] * 3, [2] * 6, str)
    with pytest.raises(LlmkitError, match="has no transformer encoder"):
        audit_module.label_noise_step(
            [train], AuditColumns(("text",), "label", "class"), True, 100, "static", 0, finetune=True
        )
