"""Sequence classification: single texts or text pairs, any number of classes.

Label names are inferred from the training data (strings as they are, integers in numeric order,
optionally named by ``data.label_names`` or by a dataset's ClassLabel column) and written into the model's
``id2label``/``label2id``, so ``transformers.pipeline("text-classification", model=output_dir)`` answers
with the real names.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.data import Split, numbers_from_text, require_columns, require_text
from llmkit.errors import LlmkitError
from llmkit.tasks.base import Task, argmax_logits

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREDICT_BATCH_SIZE = 64
#: Prediction keys, beside the input row (whose own ``label`` may be the gold one).
PREDICTED_LABEL, PREDICTED_SCORE = "predicted_label", "predicted_score"


class ClassificationTask(Task):
    name = "classification"
    default_model = "minilm-l6"
    pipeline_task = "text-classification"
    prediction_keys = (PREDICTED_LABEL, PREDICTED_SCORE)
    headline_metric = "accuracy"
    # One loss per sequence: averaging a token count across devices would double the reported DDP loss.
    training_defaults: ClassVar[dict[str, Any]] = {
        "average_tokens_across_devices": False,
        # batches of similar lengths: SST-2 averages 13 tokens, a random batch of 32 pads to ~40
        "train_sampling_strategy": "group_by_length",
    }
    data_defaults: ClassVar[dict[str, Any]] = {
        "text": "text",
        "text_pair": None,
        "label": "label",
        "label_names": None,
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.labels: list[Any] = []  # raw label values, index = class id
        self.label_names: list[str] = []

    # -- data -------------------------------------------------------------------------------------
    def text_columns(self) -> dict[str, str]:
        columns = {"text": self.data["text"]}
        if self.data["text_pair"]:
            columns["text_pair"] = self.data["text_pair"]
        return columns

    def check_inputs(self, split: Split) -> None:
        require_columns(split, self.text_columns())
        for recipe_key, column in self.text_columns().items():
            require_text(split, column, recipe_key)

    def check_data(self, splits: dict[str, Split]) -> None:
        label_column = self.data["label"]
        for split in splits.values():
            self.check_inputs(split)
            numbers_from_text(split, label_column)  # CSV "0"/"1" are the classes 0 and 1, as in JSON
            if split.role != "test" or label_column in split.dataset.column_names:
                require_columns(split, {"label": label_column})
                self._check_label_values(split)
        self._infer_labels(splits["train"])
        for role in ("validation", "test"):
            if role in splits and label_column in splits[role].dataset.column_names:
                self._check_known_labels(splits[role])

    def _check_label_values(self, split: Split) -> None:
        column = self.data["label"]
        kinds = set()
        for index, value in enumerate(split.dataset[column]):
            if (
                value is None
                or (isinstance(value, str) and not value.strip())
                or (isinstance(value, float) and math.isnan(value))
            ):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label column '{column}' is empty; "
                    f"give every row a label or remove it"
                )
            if isinstance(value, float) and not value.is_integer():
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label {value!r} in column '{column}' is not a "
                    f"class; classification needs string or integer labels"
                )
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label {value!r} in column '{column}' is not a "
                    f"string or integer"
                )
            kinds.add(str if isinstance(value, str) else int)
        if len(kinds) > 1:
            raise LlmkitError(
                f"{split.origin}: label column '{column}' mixes strings and numbers; use one type of label"
            )

    def _infer_labels(self, train: Split) -> None:
        values = {_as_label(v) for v in train.dataset[self.data["label"]]}
        names = self.data["label_names"]
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise LlmkitError("data.label_names must be a list of strings, e.g. [negative, positive]")
        named_by = "data.label_names"
        if names is None and (class_names := _class_label_names(train.dataset, self.data["label"])):
            names, named_by = class_names, "the dataset's ClassLabel names"
        if names and all(isinstance(v, int) for v in values):
            bad = sorted(v for v in values if not 0 <= v < len(names))
            if bad:
                raise LlmkitError(
                    f"{train.origin}: label {bad[0]} has no name in {named_by} "
                    f"({len(names)} names for ids 0..{len(names) - 1}); add names or fix the labels"
                )
            self.labels, self.label_names = list(range(len(names))), list(names)
        elif names:
            unknown = sorted(v for v in values if v not in names)
            if unknown:
                raise LlmkitError(
                    f"{train.origin}: label {unknown[0]!r} is not in data.label_names {names}; add it there"
                )
            self.labels, self.label_names = list(names), list(names)
        else:
            self.labels = sorted(values)
            self.label_names = [str(v) for v in self.labels]
        if len(self.labels) < 2:
            raise LlmkitError(
                f"{train.origin}: column '{self.data['label']}' has only one label ({self.label_names[0]!r});"
                f" classification needs at least two classes"
            )

    def _check_known_labels(self, split: Split) -> None:
        known = set(self.labels)
        for index, value in enumerate(split.dataset[self.data["label"]]):
            if _as_label(value) not in known:
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label {value!r} never occurs in data.train "
                    f"(train labels: {', '.join(self.label_names)}); fix the label or add training examples"
                )

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        text, pair = self.data["text"], self.data["text_pair"]
        label_column = self.data["label"]
        has_labels = label_column in dataset.column_names
        label_ids = {label: i for i, label in enumerate(self.labels)}
        max_length = self.data["max_length"]

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(
                batch[text], batch[pair] if pair else None, truncation=True, max_length=max_length
            )
            if has_labels:
                encoded["labels"] = [label_ids[_as_label(v)] for v in batch[label_column]]
            return dict(encoded)

        return dataset.map(
            encode_batch, batched=True, remove_columns=dataset.column_names, keep_in_memory=True
        )

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def label_name(self, label_id: int) -> str:
        return self.label_names[label_id] if label_id < len(self.label_names) else str(label_id)

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        lines = []
        column = self.data["label"]
        for role, split in splits.items():
            if column in split.dataset.column_names:
                counts = Counter(_as_label(v) for v in split.dataset[column])
                shown = ", ".join(
                    f"{self.label_name(self.labels.index(k))}: {counts[k]}"
                    for k in self.labels
                    if k in counts
                )
                lines.append(f"labels in {role}: {shown}")
        return lines

    # -- model ------------------------------------------------------------------------------------
    def auto_class(self) -> type:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def peft_task_type(self) -> str | None:
        return "SEQ_CLS"  # peft then trains and saves the new classifier head in full

    def model_kwargs(self) -> dict[str, Any]:
        if not self.label_names:  # loading a trained classifier to predict: keep its own labels
            return {}
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: i for i, name in enumerate(self.label_names)},
            "ignore_mismatched_sizes": True,  # a classifier checkpoint with other labels gets a new head
        }

    # -- evaluation ---------------------------------------------------------------------------------
    def compute_metrics(self):
        from llmkit.metrics import load_metrics

        metrics = load_metrics("accuracy", "f1", "matthews_correlation")

        def compute(eval_prediction) -> dict[str, float]:
            return metrics.compute(
                predictions=eval_prediction.predictions, references=eval_prediction.label_ids
            )

        return compute

    def preprocess_logits_for_metrics(self):
        return argmax_logits

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        import torch

        text, pair = self.data["text"], self.data["text_pair"]
        model.eval()
        results = []
        for start in range(0, len(rows), PREDICT_BATCH_SIZE):
            batch = rows[start : start + PREDICT_BATCH_SIZE]
            encoded = tokenizer(
                [row[text] for row in batch],
                [row[pair] for row in batch] if pair else None,
                truncation=True,
                max_length=self.data["max_length"],
                padding=True,
                return_tensors="pt",
            ).to(model.device)
            with torch.no_grad():
                probabilities = model(**encoded).logits.float().softmax(dim=-1)
            scores, ids = probabilities.max(dim=-1)
            for score, class_id in zip(scores.tolist(), ids.tolist(), strict=True):
                results.append(
                    {PREDICTED_LABEL: model.config.id2label[class_id], PREDICTED_SCORE: round(score, 6)}
                )
        return results

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        text, pair, label = self.data["text"], self.data["text_pair"], self.data["label"]
        samples = []
        for row, prediction in zip(rows, self.predict(model, tokenizer, rows), strict=True):
            sample = {
                "input": f"{row[text]} / {row[pair]}" if pair else str(row[text]),
                "prediction": f"{prediction[PREDICTED_LABEL]} ({prediction[PREDICTED_SCORE]:.2f})",
            }
            if row.get(label) is not None:
                value = _as_label(row[label])
                known = value in self.labels
                sample["reference"] = self.label_name(self.labels.index(value)) if known else str(value)
            samples.append(sample)
        return samples


def _class_label_names(dataset: Dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel column (hub datasets, saved datasets), which become id2label."""
    from datasets import ClassLabel

    feature = dataset.features.get(column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _as_label(value: Any) -> Any:
    """Integral floats (1.0, from a JSON or Parquet column) count as the integer class 1."""
    return int(value) if isinstance(value, float) else value
