"""Out-of-fold class probabilities from a short k-fold fine-tune of an encoder: the strongest of the audit's
label-noise signals (`llmkit audit --noise-finetune`).

Each fold's held-out rows are scored by a copy of the encoder fine-tuned for a few epochs on the other folds
(a linear head on the mean of its token states, cross-entropy on the given labels), so no row is scored by
a model that saw its label. A plain loop rather than the spine's ``Trainer``: the probe saves, logs and
evaluates nothing, so it needs no run folder; its batches come from the spine's length-grouped shuffled
sampler (``llmkit.training.sampling``), so short phrases are padded only to their batch's longest. The
word-embedding matrix stays frozen: it is half of MiniLM's weights, and freezing it made each fold about
15 % faster at about the same recall on the planted-noise benchmark (``benchmarks/audit_noise.py``, where
the settings below were chosen; docs/audit.md).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from llmkit.core.progress import log

EPOCHS = 2
LEARNING_RATE = 1e-4
BATCH_SIZE = 32
WARMUP_SHARE = 0.1
WEIGHT_DECAY = 0.01
MAX_LENGTH = 128
PREDICT_BATCH_SIZE = 128


class MeanPooledClassifier(torch.nn.Module):
    """Logits from a linear head on the mean of the encoder's token states (padding left out). Not SetFit's
    ``SentenceClassifier``, whose head reads the sentence-transformers body's output (unit length for
    all-MiniLM-L6-v2): the probe's settings were chosen with the plain mean."""

    def __init__(self, encoder: Any, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.head((states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1))


def finetuned_out_of_fold_probabilities(
    encoder: Any, tokenizer: Any, texts: list[str], ids: np.ndarray, seed: int, folds: int
) -> np.ndarray:
    """Each row's class probabilities from the encoder fine-tuned on the other ``folds - 1`` folds
    (stratified; the folds and each fold's training order follow ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    token_ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    classes = int(ids.max()) + 1
    probabilities = np.zeros((len(ids), classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (trained, held_out) in enumerate(splitter.split(np.zeros(len(ids)), ids)):
        log(f"audit: label noise, fine-tuning fold {fold + 1} of {folds} on {len(trained)} rows")
        torch.manual_seed(seed + fold)
        # a float32 copy where the loaded encoder is (inference may have put it on a GPU, in half precision)
        model = MeanPooledClassifier(copy.deepcopy(encoder).float(), classes).to(encoder.device)
        train_fold(model, tokenizer, token_ids, trained, ids, seed + fold)
        probabilities[held_out] = predict_rows(model, tokenizer, token_ids, held_out)
    return probabilities


def train_fold(
    model: MeanPooledClassifier,
    tokenizer: Any,
    token_ids: list[list[int]],
    rows: np.ndarray,
    ids: np.ndarray,
    seed: int,
) -> None:
    """AdamW with linear warmup and decay over ``EPOCHS`` passes of length-grouped batches."""
    from transformers import get_linear_schedule_with_warmup

    model.encoder.get_input_embeddings().weight.requires_grad_(False)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    lengths = np.array([len(row_ids) for row_ids in token_ids])
    batches = [batch for epoch in range(EPOCHS) for batch in epoch_batches(rows, lengths, seed, epoch)]
    schedule = get_linear_schedule_with_warmup(optimizer, round(WARMUP_SHARE * len(batches)), len(batches))
    device = model.head.weight.device
    model.train()
    for batch in batches:
        logits = model(**padded(tokenizer, token_ids, batch, device))
        torch.nn.functional.cross_entropy(logits, torch.as_tensor(ids[batch], device=device)).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()


def predict_rows(
    model: MeanPooledClassifier, tokenizer: Any, token_ids: list[list[int]], rows: np.ndarray
) -> np.ndarray:
    """Softmax probabilities of ``rows``, in their given order (batched by length)."""
    ordered = rows[np.argsort([len(token_ids[row]) for row in rows], kind="stable")]
    found: dict[int, np.ndarray] = {}
    device = model.head.weight.device
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ordered), PREDICT_BATCH_SIZE):
            batch = ordered[start : start + PREDICT_BATCH_SIZE]
            logits = model(**padded(tokenizer, token_ids, batch, device))
            scores = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            found.update(zip(batch.tolist(), scores, strict=True))
    return np.stack([found[row] for row in rows.tolist()])


def epoch_batches(rows: np.ndarray, lengths: np.ndarray, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's batches of ``rows``: similar lengths together, in random order (a new one each epoch)."""
    from llmkit.training.sampling import LengthGroupedShuffledSampler

    sampler = LengthGroupedShuffledSampler(lengths[rows].tolist(), BATCH_SIZE, seed=seed)
    sampler.set_epoch(epoch)
    ordered = rows[list(sampler)]
    return [ordered[start : start + BATCH_SIZE] for start in range(0, len(ordered), BATCH_SIZE)]


def padded(
    tokenizer: Any, token_ids: list[list[int]], batch: np.ndarray, device: torch.device
) -> dict[str, torch.Tensor]:
    """The batch's token ids padded to its longest row, with the attention mask, on ``device``."""
    inputs = tokenizer.pad({"input_ids": [token_ids[row] for row in batch]}, return_tensors="pt")
    return {key: inputs[key].to(device) for key in ("input_ids", "attention_mask")}
