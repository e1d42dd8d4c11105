"""Token classification (named-entity recognition): a tag for every word of a sentence.

Rows hold a list of words (``data.tokens``) and a list of tags of the same length (``data.tags``): strings
(IOB2 such as ``B-PER``/``I-PER``/``O``), or integers named by ``data.label_names``; CoNLL files are read
by :mod:`llmkit.data.files`. Each word's first sub-token carries its tag and the others are masked out of the
loss (``data.label_all_tokens`` tags them all, as ``run_ner.py`` can, B- turned into I-). The tag names become
the model's ``id2label``, so ``transformers.pipeline("token-classification", aggregation_strategy="simple")``
answers with entity types. Scores are seqeval's entity precision, recall and F1, overall and per type, on
words: each word counts once, with the tag predicted at its first sub-token, whatever ``label_all_tokens``
is (CoNLL's word-level F1, as ``run_ner.py`` reports it without label_all_tokens). ``predict`` reads the same
sub-token: ``encode`` keeps each word's first sub-token (``WORD_STARTS``) and ``prepare_evaluation``
leaves labels only there on the evaluated splits.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError
from llmkit.data.files import CONLL_UNIT, Split, column_values, require_columns, require_text, shown_value
from llmkit.tasks.base import AuditColumns, Task, argmax_logits, length_ordered_batches

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREDICT_BATCH_SIZE = 32
PREDICTED_ENTITIES = "predicted_entities"
#: Bookkeeping column of an encoded split: the position of each word's first sub-token (the one scored).
WORD_STARTS = "word_starts"
#: A plain text's words for prediction: letters/digits with inner dots, apostrophes and hyphens ("U.S",
#: "don't", "Baden-Baden"), or one other non-space character (CoNLL splits punctuation off words).
WORD = re.compile(r"\w+(?:[.'’-]\w+)*|[^\w\s]")
IGNORED = -100


class TokenClassificationTask(Task):
    name = "token-classification"
    default_model = "minilm-l6"
    pipeline_task = "token-classification"
    headline_metric = "f1"
    distills = True
    teacher_cache_items = "token"
    prediction_keys = (PREDICTED_ENTITIES,)
    data_defaults: ClassVar[dict[str, Any]] = {
        "tokens": "tokens",
        "tags": "ner_tags",
        "text": "text",  # predict: a plain-text column, when rows have no token list
        "label_names": None,
        "label_all_tokens": False,
        "tag_column": None,  # CoNLL files: the tag column (1-based, the token is 1); null: the last
        "txt_unit": CONLL_UNIT,
        "max_length": 256,
    }
    training_defaults: ClassVar[dict[str, Any]] = {
        "train_sampling_strategy": "group_by_length",
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.label_names: list[str] = []
        self.integer_tags = False  # tags are ids into label_names

    # -- data -------------------------------------------------------------------------------------
    def audit_columns(self) -> AuditColumns:
        """The token list (compared as its words joined) and its tag list (compared whole)."""
        return AuditColumns((self.data["tokens"],), self.data["tags"], "sequence")

    def check_inputs(self, split: Split) -> None:
        """A list of words, or (for prediction) a text column."""
        tokens, text = self.data["tokens"], self.data["text"]
        if tokens not in split.dataset.column_names and text in split.dataset.column_names:
            require_text(split, text, "text")
            return
        require_columns(split, {"tokens": tokens})
        for index, words in enumerate(column_values(split.dataset, tokens)):
            if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: column '{tokens}' (data.tokens) must be a "
                    f'non-empty list of words, got {shown_value(words)}; e.g. ["EU", "rejects"]'
                )

    def check_data(self, splits: dict[str, Split]) -> None:
        tags = self.data["tags"]
        for split in splits.values():
            self.check_inputs(split)
            if split.role != "test" or tags in split.dataset.column_names:
                require_columns(split, {"tags": tags})
                self._check_tag_lists(split)
        self._infer_labels(splits["train"])
        for role in ("validation", "test"):
            if role in splits and tags in splits[role].dataset.column_names:
                self._check_known_tags(splits[role])

    def check_evaluation_data(self, split: Split, model_path: Path) -> None:
        """The tag names come from the trained model's ``id2label``, in id order."""
        from llmkit.models.adaptation import config_label_names, model_config_dict

        self.check_inputs(split)
        require_columns(split, {"tags": self.data["tags"]})
        self._check_tag_lists(split)
        self.label_names = config_label_names(model_config_dict(model_path))
        tags = column_values(split.dataset, self.data["tags"])
        self.integer_tags = any(isinstance(tag, int) for row in tags for tag in row)
        self._check_known_tags(split)

    def _check_tag_lists(self, split: Split) -> None:
        tokens, tags = self.data["tokens"], self.data["tags"]
        for index, (words, row_tags) in enumerate(
            zip(column_values(split.dataset, tokens), column_values(split.dataset, tags), strict=True)
        ):
            if not isinstance(row_tags, list):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: column '{tags}' (data.tags) is "
                    f'{shown_value(row_tags)}, not a list; give one tag per word, e.g. ["B-ORG", "O"]'
                )
            if len(row_tags) != len(words):
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: {len(words)} words in '{tokens}' but "
                    f"{len(row_tags)} tags in '{tags}'; give exactly one tag per word"
                )
            bad = [tag for tag in row_tags if isinstance(tag, bool) or not isinstance(tag, (str, int))]
            if bad:
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: tag {bad[0]!r} in column '{tags}' is not a "
                    f"string or integer; use tag names (B-PER) or ids named by data.label_names"
                )

    def _infer_labels(self, train: Split) -> None:
        """Tag names: data.label_names for integer tags, else the training tags (O first, then by type)."""
        values = {tag for row in column_values(train.dataset, self.data["tags"]) for tag in row}
        names = self.data["label_names"]
        if names is None:
            names = _class_label_names(train.dataset, self.data["tags"])
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise LlmkitError("data.label_names must be a list of tag names, e.g. [O, B-PER, I-PER]")
        if any(isinstance(v, int) for v in values):
            if not names:
                raise LlmkitError(
                    f"{train.origin}: column '{self.data['tags']}' holds integer tags; name them with "
                    f"data.label_names (in id order, e.g. [O, B-PER, I-PER, ...]) or use tag strings"
                )
            bad = sorted(v for v in values if not isinstance(v, int) or not 0 <= v < len(names))
            if bad:
                raise LlmkitError(
                    f"{train.origin}: tag {bad[0]!r} has no name in data.label_names ({len(names)} names for "
                    f"ids 0..{len(names) - 1}); add names or fix the tags"
                )
            self.label_names, self.integer_tags = list(names), True
        elif names:
            unknown = sorted(v for v in values if v not in names)
            if unknown:
                raise LlmkitError(
                    f"{train.origin}: tag {unknown[0]!r} is not in data.label_names; add it there"
                )
            self.label_names = list(names)
        else:
            self.label_names = sorted(values, key=lambda tag: (tag != "O", tag[2:], tag))
        if len(self.label_names) < 2:
            raise LlmkitError(
                f"{train.origin}: column '{self.data['tags']}' has only the tag {self.label_names[0]!r}; "
                f"token classification needs at least two tags"
            )

    def _check_known_tags(self, split: Split) -> None:
        known = set(range(len(self.label_names))) if self.integer_tags else set(self.label_names)
        for index, row_tags in enumerate(column_values(split.dataset, self.data["tags"])):
            unknown = next((tag for tag in row_tags if tag not in known), None)
            if unknown is not None:
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: tag {unknown!r} in column "
                    f"'{self.data['tags']}' never occurs in data.train (train tags: "
                    f"{', '.join(self.label_names)}); fix the tag or add training examples"
                )

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        tokens, tags = self.data["tokens"], self.data["tags"]
        has_tags = tags in dataset.column_names
        tag_ids = {name: i for i, name in enumerate(self.label_names)}
        inside = inside_tag_ids(self.label_names) if self.data["label_all_tokens"] else None

        def tag_id(tag: Any) -> int:
            return tag if isinstance(tag, int) else tag_ids[tag]

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(
                batch[tokens], is_split_into_words=True, truncation=True, max_length=self.data["max_length"]
            )
            word_ids = [encoded.word_ids(i) for i in range(len(batch[tokens]))]
            columns = {**encoded, WORD_STARTS: [list(first_sub_tokens(ids).values()) for ids in word_ids]}
            if has_tags:
                columns["labels"] = [
                    word_labels(ids, [tag_id(t) for t in row], inside)
                    for ids, row in zip(word_ids, batch[tags], strict=True)
                ]
            return columns

        return dataset.map(
            encode_batch, batched=True, remove_columns=dataset.column_names, keep_in_memory=True
        )

    def prepare_evaluation(self, role: str, split: Split, encoded: Dataset) -> Dataset:
        """Scores count words, not sub-tokens: an evaluated split keeps each word's label on its first
        sub-token only (the one ``predict`` reads), so label_all_tokens changes training, never the F1."""
        if role != "train" and "labels" in encoded.column_names:
            encoded = encoded.map(
                lambda row: {"labels": labels_at(row["labels"], row[WORD_STARTS])}, keep_in_memory=True
            )
        return encoded.remove_columns(WORD_STARTS)

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def label_name(self, label_id: int) -> str:
        return self.label_names[label_id] if 0 <= label_id < len(self.label_names) else str(label_id)

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """The sub-tokens that carry loss, each with the tag it learns."""
        pieces = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
        labels = batch["labels"][0].tolist() if "labels" in batch else []
        tagged = [
            f"{piece}/{self.label_name(label)}"
            for piece, label in zip(pieces, labels, strict=False)
            if label != IGNORED
        ]
        return [f"tagged sub-tokens ({len(tagged)} of {len(pieces)}): {' '.join(tagged)}"]

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        lines = []
        for role, split in splits.items():
            if self.data["tags"] in split.dataset.column_names:
                rows = column_values(split.dataset, self.data["tags"])
                entities = [entity for row in rows for entity in self._spans(row)]
                types = sorted({kind for kind, _, _ in entities})
                counts = ", ".join(f"{kind}: {sum(e[0] == kind for e in entities)}" for kind in types)
                lines.append(f"entities in {role}: {counts or 'none'}")
        return lines

    def _spans(self, row_tags: list[Any]) -> list[tuple[str, int, int]]:
        names = [self.label_name(t) if isinstance(t, int) else t for t in row_tags]
        return entity_spans(names)

    # -- model ------------------------------------------------------------------------------------
    def peft_task_type(self) -> str | None:
        return "TOKEN_CLS"  # peft then trains and saves the new head in full

    def auto_class(self) -> type:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def distillation_loss(self) -> str:
        return "kl"  # each labelled token's softened tag distribution

    def model_kwargs(self) -> dict[str, Any]:
        if not self.label_names:  # loading a trained tagger to predict: keep its own tags
            return {}
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: i for i, name in enumerate(self.label_names)},
            "ignore_mismatched_sizes": True,
        }

    # -- evaluation ---------------------------------------------------------------------------------
    def compute_metrics(self):
        from llmkit.metrics import load_metrics

        metric = load_metrics("seqeval")

        def compute(eval_prediction) -> dict[str, float]:
            predictions, references = self.scored_tags(eval_prediction.predictions, eval_prediction.label_ids)
            scores = metric.compute(predictions=predictions, references=references)
            flat = {key: scores[key] for key in ("precision", "recall", "f1", "accuracy")}
            for kind, values in scores["per_type"].items():
                flat.update({f"{kind}_{key}": value for key, value in values.items() if key != "number"})
            return flat

        return compute

    def scored_tags(self, predictions: Any, label_ids: Any) -> tuple[list[list[str]], list[list[str]]]:
        """Each row's predicted and gold tags at its scored positions (the first sub-token of each word), as
        seqeval scores them; `llmkit evaluate` resamples and analyses the same lists."""
        import numpy as np

        names = self.label_names
        predicted_tags, gold_tags = [], []
        for predicted, gold in zip(predictions, label_ids, strict=True):
            kept = np.asarray(gold) != IGNORED
            predicted_tags.append([names[int(i)] for i in np.asarray(predicted)[kept]])
            gold_tags.append([names[int(i)] for i in np.asarray(gold)[kept]])
        return predicted_tags, gold_tags

    def preprocess_logits_for_metrics(self):
        return argmax_logits

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each row's entities: type, text, character start and end (in the text, or in the words joined
        by spaces) and score (the mean probability of its words' tags)."""
        words = [self.row_words(row) for row in rows]
        results: list[dict[str, Any]] = [{}] * len(rows)
        for batch in length_ordered_batches([len(spans) for _, spans in words], PREDICT_BATCH_SIZE):
            tagged = self._tag_words(model, tokenizer, [words[i] for i in batch])
            for i, (tags, scores) in zip(batch, tagged, strict=True):
                text, spans = words[i]
                results[i] = {PREDICTED_ENTITIES: entities_in(text, spans, tags, scores)}
        return results

    def row_words(self, row: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
        """A row's text and its words' character spans: a token list joined by spaces, or a text split."""
        words = row.get(self.data["tokens"])
        if isinstance(words, list):
            text, spans, position = " ".join(words), [], 0
            for word in words:
                spans.append((position, position + len(word)))
                position += len(word) + 1
            return text, spans
        text = row.get(self.data["text"]) or ""
        return text, [match.span() for match in WORD.finditer(text)]

    def _tag_words(self, model, tokenizer, batch) -> list[tuple[list[str], list[float]]]:
        """Each word's tag and probability, read at its first sub-token (words past max_length: O)."""
        import torch

        words = [[text[a:b] for a, b in spans] or [""] for text, spans in batch]
        encoded = tokenizer(
            words,
            is_split_into_words=True,
            truncation=True,
            max_length=self.data["max_length"],
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            probabilities = model(**encoded.to(model.device)).logits.float().softmax(dim=-1)
        scores, ids = probabilities.max(dim=-1)
        tagged = []
        for row, (_, spans) in enumerate(batch):
            tags, row_scores = ["O"] * len(spans), [1.0] * len(spans)
            for word, position in first_sub_tokens(encoded.word_ids(row)).items():
                if word >= len(spans):  # the placeholder of a row without words
                    continue
                tags[word] = model.config.id2label[int(ids[row, position])]
                row_scores[word] = float(scores[row, position])
            tagged.append((tags, row_scores))
        return tagged

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        samples = []
        for row, prediction in zip(rows, self.predict(model, tokenizer, rows), strict=True):
            text, spans = self.row_words(row)
            found = prediction[PREDICTED_ENTITIES]
            sample = {
                "input": text,
                "prediction": "; ".join(f"{e['text']} ({e['type']})" for e in found) or "(no entities)",
            }
            row_tags = row.get(self.data["tags"])
            if isinstance(row_tags, list) and len(row_tags) == len(spans):
                gold = self._spans(row_tags)
                sample["reference"] = (
                    "; ".join(f"{text[spans[a][0] : spans[b - 1][1]]} ({kind})" for kind, a, b in gold)
                    or "(no entities)"
                )
            samples.append(sample)
        return samples


def word_labels(word_ids: list[int | None], tags: list[int], inside: list[int] | None = None) -> list[int]:
    """Sub-token labels: each word's tag on its first sub-token; special tokens -100, and so are the word's
    other sub-tokens, unless ``inside`` (label_all_tokens: :func:`inside_tag_ids`) gives their tag."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORED)
        elif word != previous:
            labels.append(tags[word])
        else:
            labels.append(IGNORED if inside is None else inside[tags[word]])
        previous = word
    return labels


def inside_tag_ids(label_names: list[str]) -> list[int]:
    """For each tag id, the tag a word's later sub-tokens learn with label_all_tokens: B-X becomes I-X
    (where I-X is a tag), as run_ner.py does, so a word is one entity however many pieces it has."""
    ids = {name: index for index, name in enumerate(label_names)}
    return [
        ids.get(f"I-{name[2:]}", index) if name.startswith("B-") else index
        for index, name in enumerate(label_names)
    ]


def first_sub_tokens(word_ids: list[int | None]) -> dict[int, int]:
    """Word -> the position of its first sub-token, where prediction reads the word's tag and evaluation
    scores it (a word cut off by truncation, or one the tokenizer drops, has none)."""
    starts: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            starts.setdefault(word, position)
    return starts


def labels_at(labels: list[int], positions: list[int]) -> list[int]:
    """``labels`` with every position but ``positions`` set to -100."""
    kept = [IGNORED] * len(labels)
    for position in positions:
        kept[position] = labels[position]
    return kept


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) of each entity in IOB tags; an I- tag that follows another type or O
    starts a new entity (as seqeval reads IOB1/IOB2)."""
    spans: list[tuple[str, int, int]] = []
    kind, begin = None, 0
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-") if "-" in tag else (tag, "", "")
        continues = prefix == "I" and tag_type == kind
        if kind is not None and not continues:
            spans.append((kind, begin, index))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, begin = tag_type, index
    return spans


def entities_in(
    text: str, spans: list[tuple[int, int]], tags: list[str], scores: list[float]
) -> list[dict[str, Any]]:
    """Entities as {type, text, start, end, score}, character offsets into ``text``."""
    found = []
    for kind, first, end in entity_spans(tags):
        start, stop = spans[first][0], spans[end - 1][1]
        score = sum(scores[first:end]) / (end - first)
        found.append(
            {"type": kind, "text": text[start:stop], "start": start, "end": stop, "score": round(score, 6)}
        )
    return found


def _class_label_names(dataset: Dataset, column: str) -> list[str] | None:
    """The names of a list-of-ClassLabel column (hub datasets such as CoNLL-2003 store tag ids)."""
    from datasets import ClassLabel

    feature = dataset.features.get(column)
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return list(inner.names) if isinstance(inner, ClassLabel) else None
