"""Next-sentence prediction (BERT's second pre-training objective) for the fill-mask task.

Each row of the data is a document whose lines are its sentences (a ``.txt`` file read with
``data.txt_unit: paragraph``: a blank line between documents; or a text column with line breaks). Pairs are
consecutive lines of a document; in half of them, drawn at random, the second sentence is replaced by a line
of another document of the same split. Labels follow ``BertForPreTraining``: 0 = B continues A, 1 = B is
random. The pairs are drawn once with a fixed seed (the masks are re-drawn every epoch by the collator).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError
from llmkit.data.files import column_values

if TYPE_CHECKING:
    from llmkit.data.files import Split

IS_NEXT, IS_RANDOM = 0, 1
PAIR_SEED = 0
LABEL = "next_sentence_label"


def sentences(document: str) -> list[str]:
    """A document's sentences: its non-blank lines."""
    return [line.strip() for line in document.splitlines() if line.strip()]


def check_documents(split: Split, column: str, txt_unit: str) -> None:
    """Documents to pair sentences from: several per split, some of two lines or more; else one line."""
    is_txt = split.hub is None and split.path.suffix.lower() == ".txt"
    if is_txt and txt_unit == "line":
        raise LlmkitError(
            f"data.next_sentence needs documents, and {split.origin} is read one line per row "
            f"(data.txt_unit=line); set data.txt_unit=paragraph (documents separated by a blank line)"
        )
    documents = column_values(split.dataset, column)
    if len(documents) < 2:
        if is_txt:
            raise LlmkitError(
                f"{split.origin} has no document boundaries (no blank line between documents), so "
                f"next-sentence prediction has no other document to draw a random second sentence from; put "
                f"a blank line between documents (one sentence a line), or set data.next_sentence=false"
            )
        raise LlmkitError(
            f"{split.origin} holds one document; next-sentence prediction draws its random second sentences "
            f"from other documents: give at least two (for a carved validation split: more rows or a larger "
            f"data.validation_split), or set data.next_sentence=false"
        )
    if not any(len(sentences(document)) >= 2 for document in documents if isinstance(document, str)):
        raise LlmkitError(
            f"{split.origin}: no document has two lines, so there are no consecutive sentences to pair; give "
            f"documents one sentence a line{' separated by blank lines' if is_txt else ''}"
        )


def sentence_pairs(documents: Sequence[str], seed: int = PAIR_SEED) -> dict[str, list[Any]]:
    """``{first, second, next_sentence_label}``: each pair of consecutive lines, half with B from another
    document."""
    split = [sentences(document) for document in documents]
    rng = random.Random(seed)
    others = [index for index, lines in enumerate(split) if lines]
    first, second, labels = [], [], []
    for index, lines in enumerate(split):
        for position in range(len(lines) - 1):
            first.append(lines[position])
            if rng.random() < 0.5:
                second.append(lines[position + 1])
                labels.append(IS_NEXT)
                continue
            other = rng.choice(others)
            while other == index:
                other = rng.choice(others)
            second.append(rng.choice(split[other]))
            labels.append(IS_RANDOM)
    return {"first": first, "second": second, LABEL: labels}


def pretraining_logits(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics`` for ``BertForPreTraining``: per batch, the predicted tokens and
    next-sentence labels, and each row's masked-LM loss sum and masked-token count (for the perplexity)."""
    import torch.nn.functional as F

    prediction_logits, relationship_logits = logits[0], logits[1]
    token_labels = labels[0] if isinstance(labels, (tuple, list)) else labels
    losses = F.cross_entropy(
        prediction_logits.float().transpose(1, 2), token_labels, ignore_index=-100, reduction="none"
    )
    return (
        prediction_logits.argmax(dim=-1),
        relationship_logits.argmax(dim=-1),
        losses.sum(dim=1),
        (token_labels != -100).sum(dim=1),
    )


def pretraining_metrics(predictions: Any, label_ids: Any) -> dict[str, float]:
    """Masked accuracy, next-sentence accuracy, and the masked-LM loss and perplexity without the NSP loss."""
    import math

    tokens, relationships, loss_sums, counts = predictions
    token_labels, relationship_labels = label_ids
    masked = token_labels != -100
    hits = tokens[masked] == token_labels[masked]
    mlm_loss = float(loss_sums.sum() / max(int(counts.sum()), 1))
    return {
        # no masked token in the rows (a small resample in llmkit evaluate): nan, not a numpy warning
        "masked_accuracy": float(hits.mean()) if hits.size else math.nan,
        "next_sentence_accuracy": float((relationships == relationship_labels).mean()),
        "masked_lm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 50.0)),
    }


def pretraining_loss_terms(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """The batch's masked-LM loss (a mean over the masked positions only, as for plain fill-mask) and its
    next-sentence loss (a mean over the pairs), keyed by the column each averages over.

    ``model`` is a ``BertForPreTraining``: its encoder gives the token states and the pooled [CLS] state;
    the vocabulary logits are computed only where a label is, which halves a step of a small model. The
    pre-training loss is their sum; over an accumulated step each term counts by its own items.
    """
    import torch.nn.functional as F

    labels = inputs["labels"]
    encoder_inputs = {key: value for key, value in inputs.items() if key not in ("labels", LABEL)}
    hidden, pooled = model.base_model(**encoder_inputs)[:2]
    selected = labels != -100
    heads = model.cls
    token_logits = heads.predictions(hidden[selected])
    masked_lm = F.cross_entropy(token_logits.float(), labels[selected], reduction="sum")
    masked_lm = masked_lm / selected.sum().clamp(min=1)
    return {"labels": masked_lm, LABEL: next_sentence_loss(heads.seq_relationship(pooled), inputs)}


def loss_terms_of(prediction_logits: Any, relationship_logits: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """:func:`pretraining_loss_terms` from a ``BertForPreTraining``'s outputs (every position's logits)."""
    import torch.nn.functional as F

    logits, labels = prediction_logits.float(), inputs["labels"].view(-1)
    masked_lm = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels, reduction="sum")
    masked_lm = masked_lm / labels.ne(-100).sum().clamp(min=1)  # no masked token: 0, not 0/0 (NaN gradient)
    return {"labels": masked_lm, LABEL: next_sentence_loss(relationship_logits, inputs)}


def next_sentence_loss(relationship_logits: Any, inputs: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(relationship_logits.float(), inputs[LABEL].view(-1))
