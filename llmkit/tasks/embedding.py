"""Sentence embeddings (a bi-encoder) trained with sentence-transformers, through llmkit's spine.

The data's shape picks what the model learns and how it is judged:

* **pairs** -- ``data.anchor`` and ``data.positive`` (a question and its passage, two paraphrases):
  MultipleNegativesRankingLoss, each other row's positive in the batch serving as a negative (with
  sentence-transformers' NO_DUPLICATES batch sampler, so a batch never holds a text twice); scored by
  retrieval: each anchor queries the split's passages (its positives, deduplicated), MRR@10, Recall@1/@10,
  NDCG@10.
* **triplets** -- plus ``data.negative`` (a hard negative, also put in the retrieval corpus): the same loss,
  or ``data.loss: triplet``.
* **scored pairs** -- plus ``data.score`` (STS-B's 0-5, any scale): CoSENTLoss (or ``angle``), scored by the
  Pearson and Spearman correlation of the cosine similarity with the scores.

``data.negative`` and ``data.score`` name optional columns: used when the training file has them (a name
other than the default must be there); null never uses them. ``data.loss`` overrides the choice.

How it fits the spine: ``load_model`` returns a ``SentenceTransformer`` (a sentence-transformers folder as it
is; a plain encoder gets mean pooling), ``trainer_class`` is sentence-transformers' own
``SentenceTransformerTrainer`` (a transformers Trainer) bound to the chosen loss, ``encode`` only puts the
text columns in the order the loss reads them (anchor, positive, negative, score), and ``collator`` tokenizes
them batch by batch as sentence-transformers' collator does. Evaluation runs inside the trainer's evaluation
loop on whichever split it is given, so training's ``eval_*``, ``test_*`` and `llmkit evaluate` share one
path. The saved run folder is a sentence-transformers folder: ``SentenceTransformer(run_dir)`` loads it as it
is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from llmkit.core.errors import LlmkitError, missing_package
from llmkit.data.files import Split, column_values, numbers_from_text, require_columns, require_text
from llmkit.tasks.base import AuditColumns, Task

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

#: data.loss values -> the sentence-transformers loss class name
LOSSES = {
    "multiple_negatives_ranking": "MultipleNegativesRankingLoss",
    "cosent": "CoSENTLoss",
    "angle": "AnglELoss",
    "triplet": "TripletLoss",
}
SCORE_LOSSES = ("cosent", "angle")
#: The columns ``encode`` gives sentence-transformers, in the order its losses read them (``score`` is the
#: label column of its collator).
ANCHOR, POSITIVE, NEGATIVE, SCORE = "anchor", "positive", "negative", "score"
#: Prediction key: the cosine similarity of a row's two texts.
SIMILARITY = "similarity"
ENCODE_BATCH_SIZE = 64
#: What retrieval metrics average over (and `llmkit evaluate` resamples): each distinct anchor of the split.
QUERIES = "queries (distinct anchors)"
#: What correlations are computed over (and resampled): the rows, each a scored pair.
ROWS = "rows"


class EmbeddingTask(Task):
    name = "embedding"
    default_model = "minilm-l6"
    pipeline_task = "feature-extraction"
    headline_metric = "spearman"
    other_headline_metrics = ("mrr_at_10",)  # pairs and triplets are scored by retrieval
    target_columns = (POSITIVE,)
    prediction_keys = (SIMILARITY,)
    #: the batches hold ``anchor_input_ids`` ..., not the ``input_ids`` the Trainer counts tokens in
    training_defaults: ClassVar[dict[str, Any]] = {"include_num_input_tokens_seen": "no"}
    peft_refusal = (
        "it trains the whole sentence-transformers model, and saving an adapter inside one is not built yet"
    )
    data_defaults: ClassVar[dict[str, Any]] = {
        "anchor": ANCHOR,  # the first text: a query, a sentence (STS-B: sentence1)
        "positive": POSITIVE,  # its match: the passage answering it, a paraphrase (STS-B: sentence2)
        "negative": NEGATIVE,  # optional hard negative (triplets): used when the file has the column
        "score": SCORE,  # optional similarity score (scored pairs): used when the file has the column
        # auto (pairs/triplets: multiple_negatives_ranking; scores: cosent) | multiple_negatives_ranking |
        # cosent | angle | triplet
        "loss": "auto",
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        if data["loss"] != "auto" and data["loss"] not in LOSSES:
            raise LlmkitError(f"data.loss must be one of auto, {', '.join(LOSSES)}, got {data['loss']!r}")
        #: the optional columns this data has (settled by check_data from the training split)
        self.negative: str | None = None
        self.score: str | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None  # for validate's token counts only

    # -- data -------------------------------------------------------------------------------------
    def text_columns(self) -> dict[str, str]:
        columns = {"anchor": self.data["anchor"], "positive": self.data["positive"]}
        if self.negative:
            columns["negative"] = self.negative
        return columns

    def audit_columns(self) -> AuditColumns:
        """A row is its anchor and positive text (a pair copied between splits leaks as a class row does)."""
        return AuditColumns((self.data["anchor"], self.data["positive"]))

    def check_inputs(self, split: Split) -> None:
        """The two texts a similarity is predicted for."""
        columns = {"anchor": self.data["anchor"], "positive": self.data["positive"]}
        require_columns(split, columns)
        for recipe_key, column in columns.items():
            require_text(split, column, recipe_key)

    def check_data(self, splits: dict[str, Split]) -> None:
        """Every split has the training split's columns; scores are numbers; the loss fits the data."""
        train = splits["train"]
        self.negative = self._optional_column(train, "negative")
        self.score = self._optional_column(train, "score")
        for split in splits.values():
            require_columns(split, {**self.text_columns(), "score": self.score})
            for recipe_key, column in self.text_columns().items():
                require_text(split, column, recipe_key)
            if self.score:
                self._check_scores(split)
        self.data["loss"] = self.loss_name()  # the saved recipe says what was trained

    def _optional_column(self, train: Split, key: str) -> str | None:
        """data.negative / data.score: the column when the training file has it; a name the user chose
        must be there; null: never."""
        column = self.data[key]
        if column is None or column in train.dataset.column_names:
            return column
        if column == self.data_defaults[key]:
            return None
        require_columns(train, {key: column})  # raises, naming the file and its columns
        return None

    def _check_scores(self, split: Split) -> None:
        """Scored pairs: every score is a finite number (CSV text such as "3.8" is read as one)."""
        column = self.score
        numbers_from_text(split, column)
        for index, value in enumerate(column_values(split.dataset, column)):
            if as_score(value) is None:
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: score {value!r} in column '{column}' (data.score) "
                    f"is not a number; give every row a number, or set data.score=null to train on pairs"
                )

    def loss_name(self) -> str:
        """``data.loss``, or for ``auto`` the data's own: CoSENT for scored pairs, else in-batch negatives."""
        loss = self.data["loss"]
        if loss == "auto":
            return "cosent" if self.score else "multiple_negatives_ranking"
        if loss in SCORE_LOSSES and not self.score:
            raise LlmkitError(
                f"data.loss {loss} learns from similarity scores, and the training file has no score "
                f"column (data.score={self.data['score']}); name it with data.score, or use "
                f"multiple_negatives_ranking"
            )
        if loss not in SCORE_LOSSES and self.score:
            raise LlmkitError(
                f"data.loss {loss} learns from pairs without scores, and the training file has scores in "
                f"column '{self.score}'; use cosent or angle, or set data.score=null to ignore the scores"
            )
        if loss == "triplet" and not self.negative:
            raise LlmkitError(
                "data.loss triplet needs a negative text per row, and the training file has no column "
                f"'{self.data['negative']}' (data.negative); name it, or use multiple_negatives_ranking"
            )
        return loss

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        shape = "scored pairs" if self.score else "triplets" if self.negative else "pairs"
        return [f"embedding data: {shape}, loss {self.loss_name()}"]

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def encoding_state(self) -> dict[str, Any]:
        return {"negative": self.negative, "score": self.score}

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        """The texts (and scores) under the names and in the order sentence-transformers' losses read them;
        its collator tokenizes them batch by batch (``collator``)."""
        from datasets import Dataset

        columns = {ANCHOR: self.data["anchor"], POSITIVE: self.data["positive"]}
        if self.negative:
            columns[NEGATIVE] = self.negative
        encoded: dict[str, list[Any]] = {name: column_values(dataset, c) for name, c in columns.items()}
        if self.score and self.score in dataset.column_names:
            encoded[SCORE] = [as_score(value) for value in column_values(dataset, self.score)]
        return Dataset.from_dict(encoded)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """sentence-transformers' collator: each text column tokenized as ``column_input_ids`` ..., the score
        as ``label``, truncated at ``data.max_length`` as the model's own ``encode`` truncates."""
        from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

        max_length = self.data["max_length"]

        def tokenize(texts: list[str], **_: Any) -> dict[str, Any]:
            return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

        return SentenceTransformerDataCollator(preprocess_fn=tokenize)

    def example_lengths(self, encoded: Dataset) -> list[int]:
        """Tokens of each row's longest text (validate's statistics)."""
        if self.tokenizer is None:
            return [0] * len(encoded)
        texts = [name for name in (ANCHOR, POSITIVE, NEGATIVE) if name in encoded.column_names]
        tokenized = [self.tokenizer(column_values(encoded, name))["input_ids"] for name in texts]
        counts = [[len(ids) for ids in column] for column in tokenized]
        return [max(row) for row in zip(*counts, strict=True)]

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        lines = []
        for name in (ANCHOR, POSITIVE, NEGATIVE):
            ids = batch.get(f"{name}_input_ids")
            if ids is not None:
                lines.append(f"{name} ({len(ids[0])} tokens): {tokenizer.decode(ids[0])!r}")
        if "label" in batch:
            lines.append(f"score: {float(batch['label'][0]):g}")
        return lines

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        """sentence-transformers is an extra: say how to install it before any data is encoded."""
        require_sentence_transformers()

    def auto_class(self) -> type:
        from transformers import AutoModel

        return AutoModel

    def load_model(self, path: Path, **load_options: Any) -> Any:
        """A ``SentenceTransformer``: the folder's own modules, or (a plain encoder) the encoder with mean
        pooling; its texts are cut at ``data.max_length`` tokens, which the saved folder keeps."""
        require_sentence_transformers()
        from llmkit.models.sentence_classifier import load_sentence_transformer

        # None (llmkit embed on a folder): the folder's own limit
        return load_sentence_transformer(path, self.data["max_length"], **load_options)

    def loss_targets(self) -> tuple[str, ...]:
        """sentence-transformers' losses are means over the batch's rows: the Trainer divides by the
        accumulation steps itself."""
        return ()

    def arguments_class(self) -> type:
        from sentence_transformers import SentenceTransformerTrainingArguments

        return SentenceTransformerTrainingArguments

    def trainer_class(self) -> type:
        return embedding_trainer(self)

    def build_loss(self, model: Any) -> Any:
        from sentence_transformers.sentence_transformer import losses

        return getattr(losses, LOSSES[self.loss_name()])(model)

    # -- evaluation ---------------------------------------------------------------------------------
    def scored_units(self, model: Any, dataset: Dataset, batch_size: int) -> ScoredUnits:
        """Scored pairs: each pair's cosine similarity and score (Pearson/Spearman); pairs and triplets: each
        distinct anchor's retrieval outcomes, searching the split's positives (and negatives)."""
        from llmkit.metrics.ranking import retrieval_outcomes

        texts = {name: column_values(dataset, name) for name in dataset.column_names}
        if SCORE in texts:
            similarities = self.similarities(model, texts[ANCHOR], texts[POSITIVE], batch_size)
            return ScoredUnits(
                "rows", {SIMILARITY: np.asarray(similarities), SCORE: np.asarray(texts[SCORE])}
            )
        passages = list(dict.fromkeys(texts[POSITIVE] + texts.get(NEGATIVE, [])))
        queries = list(dict.fromkeys(texts[ANCHOR]))
        where = {passage: index for index, passage in enumerate(passages)}
        relevant: dict[str, set[int]] = {query: set() for query in queries}
        for query, positive in zip(texts[ANCHOR], texts[POSITIVE], strict=True):
            relevant[query].add(where[positive])
        query_vectors = self.embed(model, queries, batch_size)
        passage_vectors = self.embed(model, passages, batch_size)
        similarities = query_vectors @ passage_vectors.T
        return ScoredUnits(QUERIES, retrieval_outcomes(similarities, [relevant[query] for query in queries]))

    def embedding_metrics(self, model: Any, dataset: Dataset, batch_size: int) -> dict[str, float]:
        """The split's metrics (``scored_units`` over all its units)."""
        return self.scored_units(model, dataset, batch_size).metrics()

    def embed(self, model: Any, texts: list[str], batch_size: int = ENCODE_BATCH_SIZE) -> Any:
        """Unit-length embeddings (NumPy), so a dot product is the cosine similarity."""
        return model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def similarities(
        self, model: Any, first: list[str], second: list[str], batch_size: int = ENCODE_BATCH_SIZE
    ) -> list[float]:
        """The cosine similarity of each pair of texts."""
        left, right = self.embed(model, first, batch_size), self.embed(model, second, batch_size)
        return [float(value) for value in (left * right).sum(axis=1)]

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: Any, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The cosine similarity of each row's two texts (``data.anchor``, ``data.positive``)."""
        if not rows:
            return []
        model.eval()
        first = [row[self.data["anchor"]] for row in rows]
        second = [row[self.data["positive"]] for row in rows]
        return [{SIMILARITY: round(value, 6)} for value in self.similarities(model, first, second)]

    def report_samples(
        self, model: Any, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        samples = []
        for row, prediction in zip(rows, self.predict(model, tokenizer, rows), strict=True):
            sample = {
                "input": f"{row[self.data['anchor']]} / {row[self.data['positive']]}",
                "prediction": f"{prediction[SIMILARITY]:.3f}",
            }
            if self.score and row.get(self.score) is not None:
                sample["reference"] = str(row[self.score])
            samples.append(sample)
        return samples


@dataclass
class ScoredUnits:
    """One evaluation's outcome per unit, the metrics computed from them: for scored pairs each row's cosine
    similarity and score (Pearson and Spearman of all rows), for retrieval each distinct query's outcomes
    (their means). `llmkit evaluate` recomputes the metrics on bootstrap resamples of the units."""

    unit: str  # ROWS (scored pairs) or QUERIES (retrieval)
    values: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return len(next(iter(self.values.values())))

    def metrics(self, indices: np.ndarray | None = None) -> dict[str, float]:
        """The metrics of the units at ``indices`` (all of them when None; repeats count as drawn)."""
        from llmkit.metrics.ranking import similarity_correlations

        chosen = {key: values if indices is None else values[indices] for key, values in self.values.items()}
        if self.unit != QUERIES:
            return similarity_correlations(chosen[SIMILARITY], chosen[SCORE])
        return {key: float(values.mean()) if len(values) else 0.0 for key, values in chosen.items()}

    @property
    def on_counts(self) -> Callable[[np.ndarray], dict[str, np.ndarray]] | None:
        """Retrieval: the metrics of many resamples at once, from a resamples x units matrix of draw
        counts; None for correlations, which are no means."""
        if self.unit != QUERIES:
            return None

        def means(counts: np.ndarray) -> dict[str, np.ndarray]:
            drawn = np.maximum(counts.sum(axis=1), 1.0)
            return {key: (counts @ values) / drawn for key, values in self.values.items()}

        return means


def require_sentence_transformers() -> Any:
    try:
        import sentence_transformers
    except ImportError:
        raise missing_package("task embedding", "sentence-transformers", "embedding") from None
    return sentence_transformers


def as_score(value: Any) -> float | None:
    """A score as a float (a number, or text that is one: a CSV cell the column's other cells keep as
    text); None for anything else, NaN and infinities included."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def embedding_trainer(task: EmbeddingTask) -> type:
    """sentence-transformers' Trainer with the task's loss (NO_DUPLICATES batches for in-batch negatives)
    and the task's metrics added to every evaluation, on the split being evaluated."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    class EmbeddingTrainer(SentenceTransformerTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            model = kwargs["model"]
            if task.loss_name() == "multiple_negatives_ranking":
                kwargs["args"].batch_sampler = BatchSamplers.NO_DUPLICATES
            super().__init__(*args, loss=task.build_loss(model), **kwargs)

        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """None: llmkit writes the run's model card (README.md) from its report, and
            sentence-transformers' callback would embed sample rows at every start of training."""

        def evaluation_loop(
            self,
            dataloader: Any,
            description: str,
            prediction_loss_only: bool | None = None,
            ignore_keys: list[str] | None = None,
            metric_key_prefix: str = "eval",
        ) -> Any:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            batch_size = self.args.per_device_eval_batch_size
            self.scored_units = task.scored_units(self.model, dataloader.dataset, batch_size)
            scores = self.scored_units.metrics()
            output.metrics.update({f"{metric_key_prefix}_{key}": value for key, value in scores.items()})
            return output

    return EmbeddingTrainer
