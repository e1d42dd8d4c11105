"""Sequence classification: single texts or text pairs; one class, several labels, or a score per row.

``data.problem`` says which (``auto`` reads it from the training labels, and says on stderr what it chose):

* ``single_label`` -- one class per row, softmax over the classes; accuracy, macro F1, MCC.
* ``multi_label`` -- a set of labels per row (a list, or a delimited string with ``data.label_separator``),
  one sigmoid per label, a label is predicted when its probability reaches ``data.threshold`` (one for all
  labels, or ``validation``: each label's own, chosen on the validation split once training ends and saved
  in the model's config as ``label_thresholds``); micro and macro F1, F1 per label and subset accuracy.
* ``regression`` -- a number per row, one output trained with mean squared error; Pearson, Spearman, MSE.

Label names are inferred from the training data (strings as they are, integers in numeric order,
optionally named by ``data.label_names`` or by a dataset's ClassLabel column) and written into the model's
``id2label``/``label2id`` with the config's ``problem_type``, so
``transformers.pipeline("text-classification", model=output_dir)`` answers with the real names and applies
softmax, sigmoid or nothing as the problem needs.

A new head's output bias starts at the training labels' base rates (``data.head_bias: prior``, the default
for multi-label): with 28 sigmoids starting at probability 0.5, the first few hundred steps only push every
label down to its rate, and those large early gradients also disturb the encoder (GoEmotions with MiniLM:
test macro-F1 0.075 after 300 steps from a zero bias, 0.285 from the prior; docs/results.md).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.data.files import (
    Split,
    column_values,
    join_lists,
    numbers_from_text,
    require_columns,
    require_text,
)
from llmkit.tasks.base import AuditColumns, Task, argmax_logits, length_ordered_batches
from llmkit.tasks.zero_shot import (
    check_chat_template,
    load_verbalizer_model,
    prompt_ids,
    require_causal_lm_for_verbalizer,
    zero_shot_settings,
)

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREDICT_BATCH_SIZE = 64
#: Prediction keys, beside the input row (whose own ``label`` may be the gold one).
PREDICTED_LABEL, PREDICTED_SCORE = "predicted_label", "predicted_score"
PREDICTED_LABELS, PROBABILITIES = "predicted_labels", "probabilities"  # multi-label
PROBLEMS = ("auto", "single_label", "multi_label", "regression")
HEAD_BIASES = ("auto", "prior", "zero")
AUGMENTATIONS = ("counterfactual",)
#: data.threshold: each label's threshold chosen on the validation split after training
CHOSEN_ON_VALIDATION = "validation"
#: the thresholds tried for each label: 0.01 to 0.04, then steps of 0.05 to 0.95 (a label on 1 % of the rows
#: may be best at 0.02; a finer grid elsewhere fits a rare label's few validation rows too closely)
THRESHOLD_GRID = (0.01, 0.02, 0.03, 0.04, *(round(0.05 * step, 2) for step in range(1, 20)))
#: data.problem -> the config's ``problem_type``, which picks the loss and the pipeline's function
PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}
#: data.problem -> how a student is compared with its teacher (``Task.distillation_loss``)
DISTILLATION_LOSSES = {"single_label": "kl", "multi_label": "bce", "regression": "mse"}
PREDICTION_KEYS = {
    "single_label": (PREDICTED_LABEL, PREDICTED_SCORE),
    "multi_label": (PREDICTED_LABELS, PROBABILITIES),
    "regression": (PREDICTED_SCORE,),
}


class ClassificationTask(Task):
    name = "classification"
    default_model = "minilm-l6"
    pipeline_task = "text-classification"
    prediction_keys = (PREDICTED_LABEL, PREDICTED_SCORE)
    predicts_from_logits = True
    headline_metric = "accuracy"
    distills = True
    teacher_cache_items = "row"
    other_headline_metrics = ("f1_macro", "spearman")  # multi-label, regression
    training_defaults: ClassVar[dict[str, Any]] = {
        # batches of similar lengths: SST-2 averages 13 tokens, a random batch of 32 pads to ~40
        "train_sampling_strategy": "group_by_length",
    }
    data_defaults: ClassVar[dict[str, Any]] = {
        "text": "text",  # the text column
        "text_pair": None,  # the second text column of pair tasks (NLI, paraphrase, similarity)
        "label": "label",  # the label column: strings or integers (a number or a list for other problems)
        "label_names": None,  # names of integer labels, in id order, e.g. [negative, positive]
        "problem": "auto",  # auto | single_label | multi_label | regression
        # multi-label: a label is predicted when its probability reaches this; validation = each label's
        # own, the one with the best F1 on the validation split after training (saved in config.json)
        "threshold": 0.5,
        "label_separator": None,  # multi-label: split text cells such as "joy,love" at this string
        # a new head's output bias: prior = the training labels' base rates (multi-label: each label's
        # log-odds; single-label: each class's log share; regression: the mean score); zero = as
        # transformers initialises it; auto = prior for multi-label, zero otherwise
        "head_bias": "auto",
        # zero-shot with a causal LM (llmkit evaluate / predict; nothing is trained): label -> the words
        # that answer for it, e.g. {negative: [" negative"], positive: [" positive"]}; each label is scored
        # by the log-likelihood of its words after data.prompt (docs/tasks/classification.md)
        "verbalizer": None,
        "prompt": None,  # with data.verbalizer: the prompt, {text} (and {text_pair}) filled in per row
        "chat_prompt": False,  # with data.verbalizer: render the prompt as a user turn of the chat template
        # few-shot: train on N rows per class, sampled (seeded by data.shots_seed) from the training rows
        # left once validation is carved off; single-label only
        "shots": None,
        "shots_seed": 42,  # which rows data.shots samples; the same seed gives the same rows to any method
        # with a distill section: a file of extra training rows without labels (read as data.train is, its
        # text columns; a label column is ignored), learned from the teacher's outputs alone
        "unlabelled": None,
        # counterfactual: add each training row's counterfactuals (identity terms swapped, as the bias probe
        # of `llmkit audit RUN` swaps them) with the row's label, so that the model learns that the terms
        # do not decide it; made from data.text, after data.shots
        "augment": None,
        "augment_terms": None,  # a YAML file of term groups added to the shipped ones (as --bias-terms)
    }

    data_words: ClassVar[dict[str, tuple[str, ...]]] = {"threshold": (CHOSEN_ON_VALIDATION,)}

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        if data["problem"] not in PROBLEMS:
            raise LlmkitError(f"data.problem must be one of {', '.join(PROBLEMS)}, got {data['problem']!r}")
        threshold = data["threshold"]
        if threshold != CHOSEN_ON_VALIDATION and (
            not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1
        ):
            raise LlmkitError(
                f"data.threshold must be a probability between 0 and 1 or {CHOSEN_ON_VALIDATION}, "
                f"got {threshold!r}"
            )
        if data["head_bias"] not in HEAD_BIASES:
            raise LlmkitError(
                f"data.head_bias must be one of {', '.join(HEAD_BIASES)}, got {data['head_bias']!r}"
            )
        separator = data["label_separator"]
        if separator is not None and (not isinstance(separator, str) or not separator):
            raise LlmkitError(
                f"data.label_separator must be a non-empty string (e.g. ','), got {separator!r}"
            )
        check_shots(data)
        if data["augment"] not in (None, *AUGMENTATIONS):
            raise LlmkitError(
                f"data.augment must be {' or '.join(AUGMENTATIONS)} (or null), got {data['augment']!r}"
            )
        terms = data["augment_terms"]
        if terms is not None and (not isinstance(terms, str) or not terms.strip()):
            raise LlmkitError(f"data.augment_terms must be a YAML file's path (string), got {terms!r}")
        if terms is not None and not data["augment"]:
            raise LlmkitError(
                "data.augment_terms adds term groups to data.augment: counterfactual; set data.augment or "
                "remove data.augment_terms"
            )
        self.labels: list[Any] = []  # raw label values, index = class id
        self.label_names: list[str] = []
        # "auto" is resolved from the training labels by check_data (or from the model's config to predict)
        self.problem: str | None = None if data["problem"] == "auto" else data["problem"]
        self.problem_note = ""  # what auto chose and why, said by prepare_tokenizer
        self.head_prior: list[float] | None = None  # a new head's bias (data.head_bias), from check_data
        # data.threshold validation: each label's threshold, chosen after training or read from the model
        self.label_thresholds: list[float] | None = None
        self.prediction_keys = PREDICTION_KEYS.get(data["problem"]) or tuple(
            dict.fromkeys(key for keys in PREDICTION_KEYS.values() for key in keys)
        )
        # zero-shot (data.verbalizer): label -> words; the classes are its labels, in its order
        self.verbalizer = zero_shot_settings(data)
        if self.verbalizer is not None:
            self.problem = data["problem"] = "single_label"
            self.prediction_keys = PREDICTION_KEYS["single_label"]
            self.label_names = list(self.verbalizer)

    # -- data -------------------------------------------------------------------------------------
    def text_columns(self) -> dict[str, str]:
        columns = {"text": self.data["text"]}
        if self.data["text_pair"]:
            columns["text_pair"] = self.data["text_pair"]
        return columns

    def audit_columns(self) -> AuditColumns:
        """The text (and pair) compared; the label is a class, a label set, or a score (not distributed)."""
        kinds = {"single_label": "class", "multi_label": "classes"}
        return AuditColumns(
            tuple(self.text_columns().values()), self.data["label"], kinds.get(self.problem, "other")
        )

    def check_inputs(self, split: Split) -> None:
        require_columns(split, self.text_columns())
        for recipe_key, column in self.text_columns().items():
            join_lists(split, column, self.data["join_lists"])
            require_text(split, column, recipe_key)

    def check_data(self, splits: dict[str, Split]) -> None:
        if self.verbalizer is not None:
            raise LlmkitError(
                "data.verbalizer scores a causal LM zero-shot, with no training; run `llmkit evaluate "
                "MODEL --data FILE task=classification data.verbalizer=...` (or predict), or drop "
                "data.verbalizer to fine-tune a classifier"
            )
        label_column = self.data["label"]
        labelled = []
        for split in splits.values():
            self.check_inputs(split)
            if split.role != "test" or label_column in split.dataset.column_names:
                require_columns(split, {"label": label_column})
                labelled.append(split)
        self.problem = self._resolve_problem(splits["train"])
        self.data["problem"] = self.problem  # the saved recipe (and predict) say what was trained
        self.prediction_keys = PREDICTION_KEYS[self.problem]
        for split in splits.values():
            if self.problem != "multi_label":
                numbers_from_text(split, label_column)  # CSV "0"/"1" are the classes 0 and 1, as in JSON
        for split in labelled:
            if self.problem == "regression":
                self._check_scores(split)
            elif self.problem == "multi_label":
                self._check_label_sets(split)
            else:
                self._check_label_values(split)
        if self.data["shots"] is not None:
            self._check_shots_problem(splits["train"])
        if self.problem == "regression":
            self.labels, self.label_names = [], [str(label_column)]
        else:
            self._infer_labels(splits["train"])
            for split in labelled:
                if split.role != "train":
                    self._check_known_labels(split)
        self.head_prior = self._head_prior(splits["train"]) if self._starts_at_prior() else None
        chooses_thresholds = self.data["threshold"] == CHOSEN_ON_VALIDATION and self.problem == "multi_label"
        if chooses_thresholds and "validation" not in splits:
            raise LlmkitError(
                "data.threshold: validation chooses each label's threshold on the validation split, and "
                "this recipe has none; set data.validation (or data.validation_split) or a number"
            )

    def _check_shots_problem(self, train: Split) -> None:
        if self.problem != "single_label":
            raise LlmkitError(
                f"data.shots samples rows per class and works for single-label classification only, and "
                f"data.problem is {self.problem}; drop data.shots"
            )
        if train.stream is not None:
            raise LlmkitError("data.shots samples from the whole training file; set data.streaming=false")

    def select_training_rows(self, splits: dict[str, Split]) -> None:
        """``data.shots``: keep N training rows of each class, a seeded sample (in file order) of the rows
        left after data.deduplicate/drop_leaks, so a few-shot run sees what a user with N labelled examples
        would have; validation was carved off before. The label list is the one check_data read (every
        class keeps N rows); the head's prior, where used, is the shots' own."""
        if self.data["shots"] is None:
            return
        train = splits["train"]
        shots, column = self.data["shots"], self.data["label"]
        rows_of: dict[Any, list[int]] = {}
        for index, [label] in enumerate(self._row_labels(train)):
            rows_of.setdefault(label, []).append(index)
        for label in sorted(rows_of):
            if len(rows_of[label]) < shots:
                raise LlmkitError(
                    f"data.shots is {shots}, but class {label!r} has only {len(rows_of[label])} rows in "
                    f"column '{column}' of {train.origin}; lower data.shots or add rows"
                )
        generator = random.Random(self.data["shots_seed"])
        kept = sorted(index for label in sorted(rows_of) for index in generator.sample(rows_of[label], shots))
        train.keep_rows(kept)
        seed = self.data["shots_seed"]
        log(f"data.shots: {shots} training rows per class ({len(kept)} rows, data.shots_seed {seed})")
        self._refresh_head_prior(train)

    def augment_training_rows(self, splits: dict[str, Split]) -> dict[str, int]:
        """``data.augment: counterfactual``: each training row's counterfactuals (``data.text`` with identity
        terms swapped, as `llmkit audit RUN` probes a model) become rows with the row's label."""
        if not self.data["augment"]:
            return {}
        from llmkit.data.counterfactual import counterfactual_rows, load_terms

        train = splits["train"]
        groups = load_terms(self.data["augment_terms"], "data.augment_terms")
        column = self.data["text"]
        made = counterfactual_rows(column_values(train.dataset, column), groups)
        sources = {index for index, _ in made}
        before = len(train.dataset)
        train.add_variants([index for index, _ in made], column, [text for _, text in made])
        log(
            f"data.augment counterfactual: added {len(made)} training rows, identity terms swapped in "
            f"{len(sources)} of {before} rows"
        )
        self._refresh_head_prior(train)
        return {"train_counterfactuals_added": len(made)}

    def _refresh_head_prior(self, train: Split) -> None:
        """The training rows changed after check_data (shots, augmentation): a prior in use follows them."""
        if self.head_prior is not None:
            self.head_prior = self._head_prior(train)

    def _starts_at_prior(self) -> bool:
        head_bias = self.data["head_bias"]
        return head_bias == "prior" or (head_bias == "auto" and self.problem == "multi_label")

    def _head_prior(self, train: Split) -> list[float]:
        """The bias under which the untrained head predicts the training labels' base rates."""
        if self.problem == "regression":
            scores = [_score(value) for value in column_values(train.dataset, self.data["label"])]
            return [sum(scores) / len(scores)]
        rows = self._row_labels(train)
        counts = Counter(label for labels in rows for label in labels)
        # a label no training row has gets half a row's share: a finite bias, far below the others
        shares = [max(counts[label], 0.5) / len(rows) for label in self.labels]
        if self.problem == "multi_label":
            return [math.log(share / (1 - share)) if share < 1 else 10.0 for share in shares]
        return [math.log(share) for share in shares]

    def check_evaluation_data(self, split: Split, model_path: Path) -> None:
        """The trained problem and label list come from the model's config (``problem_type``, ``id2label``);
        the file's labels must be labels the model knows."""
        from llmkit.models.adaptation import config_label_names, model_config_dict

        if self.verbalizer is not None:
            self._check_verbalised_labels(split)
            return
        config = model_config_dict(model_path)
        by_type = {problem_type: problem for problem, problem_type in PROBLEM_TYPES.items()}
        self.problem = self.problem or by_type.get(config.get("problem_type") or "", "single_label")
        self.data["problem"] = self.problem
        self.prediction_keys = PREDICTION_KEYS[self.problem]
        self.check_inputs(split)
        label_column = self.data["label"]
        require_columns(split, {"label": label_column})
        if self.problem == "regression":
            self._check_scores(split)
            self.labels, self.label_names = [], [str(label_column)]
            return
        if self.problem == "multi_label":
            self._check_label_sets(split)
        else:
            numbers_from_text(split, label_column)
            self._check_label_values(split)
        self.label_names = config_label_names(config)
        if self.data["threshold"] == CHOSEN_ON_VALIDATION:
            self.label_thresholds = saved_thresholds(config, self.label_names, model_path)
        numbered = any(isinstance(label, int) for labels in self._row_labels(split) for label in labels)
        self.labels = list(self.label_names)
        if numbered:  # integer labels: the names are the numbers themselves, or name the ids 0..n-1
            as_numbers = all(name.lstrip("-").isdigit() for name in self.label_names)
            self.labels = [int(n) for n in self.label_names] if as_numbers else list(range(len(self.labels)))
        self._check_known_labels(split)

    def _check_verbalised_labels(self, split: Split) -> None:
        """Zero-shot: the classes are data.verbalizer's labels, in its order; the file's labels must be among
        them (integer labels are class ids in that order, unless the labels are numbers themselves)."""
        label_column = self.data["label"]
        self.check_inputs(split)
        require_columns(split, {"label": label_column})
        numbers_from_text(split, label_column)
        self._check_label_values(split)
        numbered = any(isinstance(label, int) for [label] in self._row_labels(split))
        names = self.label_names
        if numbered and all(name.lstrip("-").isdigit() for name in names):
            self.labels = [int(name) for name in names]
        else:
            self.labels = list(range(len(names))) if numbered else list(names)
        known = set(self.labels)
        for index, [value] in enumerate(self._row_labels(split)):
            if value not in known:
                ids = f"; integer labels are ids 0..{len(names) - 1} in its order" if numbered else ""
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label {value!r} in column '{label_column}' is "
                    f"not in data.verbalizer (labels: {', '.join(names)}{ids}); add it there"
                )

    def _resolve_problem(self, train: Split) -> str:
        """``data.problem``, or for ``auto`` what the training labels are: lists, fractions or classes."""
        if self.problem is not None:
            return self.problem
        values = [v for v in column_values(train.dataset, self.data["label"]) if v is not None]
        if any(isinstance(v, (list, tuple)) for v in values) or self.data["label_separator"]:
            separated = self.data["label_separator"]
            problem, why = (
                "multi_label",
                "data.label_separator is set" if separated else "the labels are lists",
            )
        elif _looks_like_scores(values):
            problem, why = "regression", "the labels are numbers with fractions"
        else:
            problem, why = "single_label", "one class per row"
        self.problem_note = (
            f"data.problem auto: {problem} ({why} in column '{self.data['label']}' of {train.origin}); "
            f"set data.problem to choose another"
        )
        return problem

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Say what ``data.problem: auto`` chose, once the data and the model have passed their checks
        (so that a bad input's error stays the only line on stderr); zero-shot: the chat template that
        ``data.chat_prompt`` renders with must be there."""
        if self.verbalizer is not None:
            check_chat_template(tokenizer, self.data, tokenizer.name_or_path)
        if self.problem_note:
            log(self.problem_note)
            self.problem_note = ""

    def _check_scores(self, split: Split) -> None:
        """Regression: every label is a number."""
        column = self.data["label"]
        for index, value in enumerate(column_values(split.dataset, column)):
            if _score(value) is None:
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label {value!r} in column '{column}' is not a "
                    f"number; regression (data.problem) needs a number in every row"
                )

    def _check_label_sets(self, split: Split) -> None:
        """Multi-label: every cell is a list of labels (or a delimited string), of one kind of label."""
        column = self.data["label"]
        kinds = set()
        for index, value in enumerate(column_values(split.dataset, column)):
            labels = self.label_set(value)
            if labels is None:
                hint = (
                    f"split at data.label_separator={self.data['label_separator']!r}"
                    if self.data["label_separator"]
                    else "or set data.label_separator (e.g. ',') for cells like 'joy,love'"
                )
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: label {value!r} in column '{column}' is neither a "
                    f"list of labels nor a delimited string; give a list (e.g. [joy, love]) {hint}"
                )
            kinds.update(str if isinstance(label, str) else int for label in labels)
        if len(kinds) > 1:
            raise LlmkitError(
                f"{split.origin}: label column '{column}' mixes strings and numbers; use one type of label"
            )

    def label_set(self, value: Any) -> list[Any] | None:
        """A multi-label cell as its labels (None: not a list of labels nor a delimited string)."""
        separator = self.data["label_separator"]
        if isinstance(value, str) and separator:
            return list(dict.fromkeys(part.strip() for part in value.split(separator) if part.strip()))
        if not isinstance(value, (list, tuple)):
            return None
        labels = [_as_label(label) for label in value]
        valid = all(
            (isinstance(label, str) and label.strip())
            or (isinstance(label, int) and not isinstance(label, bool))
            for label in labels
        )
        return list(dict.fromkeys(labels)) if valid else None

    def _check_label_values(self, split: Split) -> None:
        column = self.data["label"]
        kinds = set()
        for index, value in enumerate(column_values(split.dataset, column)):
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
        values = {label for labels in self._row_labels(train) for label in labels}
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
        if len(self.labels) < 2 and self.problem == "single_label":
            raise LlmkitError(
                f"{train.origin}: column '{self.data['label']}' has only one label ({self.label_names[0]!r});"
                f" classification needs at least two classes"
            )

    def _row_labels(self, split: Split) -> list[list[Any]]:
        """Each row's labels: a one-label list for single-label rows."""
        column = column_values(split.dataset, self.data["label"])
        if self.problem == "multi_label":
            return [self.label_set(value) or [] for value in column]
        return [[_as_label(value)] for value in column]

    def _check_known_labels(self, split: Split) -> None:
        known = set(self.labels)
        for index, labels in enumerate(self._row_labels(split)):
            for value in labels:
                if value not in known:
                    raise LlmkitError(
                        f"{split.origin} {split.where(index)}: label {value!r} in column "
                        f"'{self.data['label']}' never occurs in data.train (train labels: "
                        f"{', '.join(self.label_names)}); fix the label or add training examples"
                    )

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        text, pair = self.data["text"], self.data["text_pair"]
        label_column = self.data["label"]
        has_labels = label_column in dataset.column_names
        label_ids = {label: i for i, label in enumerate(self.labels)}
        max_length = self.data["max_length"]

        def encode_batch(batch: dict[str, list]) -> dict[str, list]:
            if self.verbalizer is not None:  # zero-shot: each row in its prompt
                encoded = self._prompts(tokenizer, batch[text], batch[pair] if pair else None)
            else:
                encoded = tokenizer(
                    batch[text], batch[pair] if pair else None, truncation=True, max_length=max_length
                )
            if has_labels:
                encoded["labels"] = [self.label_vector(value, label_ids) for value in batch[label_column]]
            return dict(encoded)

        return dataset.map(
            encode_batch, batched=True, remove_columns=dataset.column_names, keep_in_memory=True
        )

    def _prompts(
        self, tokenizer: PreTrainedTokenizerBase, texts: list[str], pairs: list[str] | None
    ) -> dict[str, list[list[int]]]:
        """Zero-shot inputs: each row rendered into data.prompt, as ids and their attention mask."""
        ids = [
            prompt_ids(tokenizer, self.data, text, pairs[i] if pairs else None)
            for i, text in enumerate(texts)
        ]
        return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}

    def label_vector(self, value: Any, label_ids: dict[Any, int]) -> Any:
        """What the model learns for one label cell: a class id, a score, or a 0/1 float per label."""
        if self.problem == "regression":
            return _score(value)
        if self.problem == "multi_label":
            vector = [0.0] * len(label_ids)
            for label in self.label_set(value) or []:
                vector[label_ids[label]] = 1.0
            return vector
        return label_ids[_as_label(value)]

    def encoding_state(self) -> dict[str, Any]:
        return {"labels": self.labels, "label_names": self.label_names, "problem": self.problem}

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def label_name(self, label_id: int) -> str:
        return self.label_names[label_id] if label_id < len(self.label_names) else str(label_id)

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        labels = batch.get("labels")
        if labels is None or self.problem == "single_label":
            return super().describe_example(batch, tokenizer)
        lines = super().describe_example({k: v for k, v in batch.items() if k != "labels"}, tokenizer)
        if self.problem == "regression":
            return [*lines, f"score: {float(labels[0]):g}"]
        named = [self.label_name(i) for i, on in enumerate(labels[0].tolist()) if on]
        return [*lines, f"labels: {', '.join(named) or '(none)'}"]

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        lines = []
        column = self.data["label"]
        for role, split in splits.items():
            if column not in split.dataset.column_names:
                continue
            if self.problem == "regression":
                scores = [_score(v) for v in column_values(split.dataset, column)]
                lines.append(
                    f"scores in {role}: mean {sum(scores) / len(scores):.3g}, "
                    f"min {min(scores):g}, max {max(scores):g}"
                )
                continue
            rows = self._row_labels(split)
            if self.problem == "multi_label":
                several = sum(len(labels) > 1 for labels in rows)
                lines.append(f"rows with 2+ labels in {role}: {several} of {len(rows)}")
            counts = Counter(label for labels in rows for label in labels)
            shown = ", ".join(
                f"{self.label_name(self.labels.index(k))}: {counts[k]}" for k in self.labels if k in counts
            )
            lines.append(f"labels in {role}: {shown}")
        return lines

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        """Zero-shot scoring needs a causal LM; a classifier folder is checked as it loads."""
        if self.verbalizer is not None:
            require_causal_lm_for_verbalizer(model_path)

    def auto_class(self) -> type:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        """The task's model; a head this load creates starts at the label prior (``data.head_bias``).
        Zero-shot (``data.verbalizer``): the causal LM wrapped as a classifier of the verbaliser's labels; a
        SetFit run's folder: its sentence-transformers body and linear head."""
        from llmkit.models.adaptation import from_pretrained
        from llmkit.models.sentence_classifier import is_sentence_classifier, load_sentence_classifier

        if self.verbalizer is not None:
            return load_verbalizer_model(path, self.verbalizer, **load_options)
        if is_sentence_classifier(path):  # a SetFit run: its body and head, as saved
            return load_sentence_classifier(path, **load_options)
        model, info = from_pretrained(
            self.auto_class(), path, output_loading_info=True, **self.model_kwargs(), **load_options
        )
        if self.head_prior is not None:
            new = set(info["missing_keys"]) | {mismatched[0] for mismatched in info["mismatched_keys"]}
            start_head_at_prior(model, new, self.head_prior)
        return model

    def peft_task_type(self) -> str | None:
        return "SEQ_CLS"  # peft then trains and saves the new classifier head in full

    def distillation_loss(self) -> str:
        """One class: the softened class distributions; several labels: the teacher's probabilities (the
        sigmoid of each label, as the hard loss's BCE); regression: the teacher's scores (as its MSE)."""
        return DISTILLATION_LOSSES[self.problem or "single_label"]

    def model_kwargs(self) -> dict[str, Any]:
        if not self.label_names:  # loading a trained classifier to predict: keep its own labels
            return {}
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: i for i, name in enumerate(self.label_names)},
            "problem_type": PROBLEM_TYPES[self.problem or "single_label"],
            "ignore_mismatched_sizes": True,  # a classifier checkpoint with other labels gets a new head
        }

    # -- evaluation ---------------------------------------------------------------------------------
    def compute_metrics(self):
        from llmkit.metrics import load_metrics

        if self.problem == "regression":
            scores = load_metrics("regression")
            return lambda prediction: scores.compute(
                predictions=prediction.predictions.reshape(-1), references=prediction.label_ids.reshape(-1)
            )
        if self.problem == "multi_label":
            return self._multi_label_metrics(load_metrics("multilabel"))
        metrics = load_metrics("accuracy", "f1", "matthews_correlation")

        def compute(eval_prediction) -> dict[str, float]:
            return metrics.compute(
                predictions=eval_prediction.predictions, references=eval_prediction.label_ids
            )

        return compute

    def _multi_label_metrics(self, metric: Any):
        """Micro/macro F1 and subset accuracy, plus ``f1_label_<name>`` for each label seen in the split."""

        def compute(eval_prediction) -> dict[str, float]:
            predicted = (eval_prediction.predictions >= self.thresholds()).astype("int8")
            scores = metric.compute(
                predictions=predicted, references=eval_prediction.label_ids.astype("int8")
            )
            per_label = scores.pop("f1_per_label")
            for index, value in enumerate(per_label):
                if not math.isnan(value):  # a label absent from the split and never predicted has no F1
                    scores[f"f1_label_{self.label_name(index)}"] = value
            return scores

        return compute

    def thresholds(self, model: PreTrainedModel | None = None) -> Any:
        """Multi-label: the threshold each label's probability must reach (a number for all, or an array).

        With ``data.threshold: validation`` the chosen ones: this run's, else those saved in ``model``'s
        config; evaluations inside training, before any are chosen, use 0.5.
        """
        import numpy as np

        if self.data["threshold"] != CHOSEN_ON_VALIDATION:
            return self.data["threshold"]
        if self.label_thresholds is None and model is not None:
            names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
            self.label_thresholds = saved_thresholds(model.config.to_dict(), names, "the model")
        return 0.5 if self.label_thresholds is None else np.asarray(self.label_thresholds)

    def after_training(self, trainer: Any, validation: Dataset | None) -> bool:
        """``data.threshold: validation``: choose each label's threshold on the validation split (best F1 on
        ``THRESHOLD_GRID``) and keep them in the model's config, which is saved with it."""
        if self.problem != "multi_label" or self.data["threshold"] != CHOSEN_ON_VALIDATION:
            return False
        output = trainer.predict(validation, metric_key_prefix="thresholds")
        self.label_thresholds = best_thresholds(output.predictions, output.label_ids)
        trainer.model.config.label_thresholds = dict(
            zip(self.label_names, self.label_thresholds, strict=True)
        )
        shown = ", ".join(f"{n} {t:g}" for n, t in zip(self.label_names, self.label_thresholds, strict=True))
        log(f"thresholds chosen on validation (data.threshold: validation): {shown}")
        return True

    def preprocess_logits_for_metrics(self):
        if self.problem == "regression":
            return _scores_from_logits
        if self.problem == "multi_label":
            return _probabilities_from_logits
        return argmax_logits

    # -- inference ----------------------------------------------------------------------------------
    def inference_problem(self, model: PreTrainedModel) -> str:
        """The trained problem: from the saved recipe, else from the model's config (a plain HF folder)."""
        if self.problem is not None:
            return self.problem
        by_type = {problem_type: problem for problem, problem_type in PROBLEM_TYPES.items()}
        return by_type.get(getattr(model.config, "problem_type", None) or "", "single_label")

    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        import torch

        texts = [row[self.data["text"]] for row in rows]
        pairs = [row[self.data["text_pair"]] for row in rows] if self.data["text_pair"] else None
        limits = {"truncation": True, "max_length": self.data["max_length"]}
        prompts = self._prompts(tokenizer, texts, pairs)["input_ids"] if self.verbalizer is not None else None
        lengths = (
            [len(ids) for ids in prompts or tokenizer(texts, pairs, **limits)["input_ids"]] if rows else []
        )
        model.eval()
        results: list[dict[str, Any]] = [{}] * len(rows)
        for batch in length_ordered_batches(lengths, PREDICT_BATCH_SIZE):
            if prompts is not None:  # zero-shot: the prompts as encode renders them, padded
                encoded = tokenizer.pad({"input_ids": [prompts[i] for i in batch]}, return_tensors="pt")
            else:
                encoded = tokenizer(
                    [texts[i] for i in batch],
                    [pairs[i] for i in batch] if pairs else None,
                    **limits,
                    padding=True,
                    return_tensors="pt",
                )
            encoded = encoded.to(model.device)
            with torch.no_grad():
                logits = model(**encoded).logits.float()
            for i, prediction in zip(batch, self.predictions_from_logits(model, logits), strict=True):
                results[i] = prediction
        return results

    def predictions_from_logits(self, model: PreTrainedModel, logits: Any) -> list[dict[str, Any]]:
        """Logits (a batch's, or an evaluation pass's) as prediction dicts: a score, the labels over the
        threshold, or the class and its probability."""
        problem, id2label = self.inference_problem(model), model.config.id2label
        if problem == "regression":
            return [{PREDICTED_SCORE: round(score, 6)} for score in logits[:, 0].float().tolist()]
        if problem == "multi_label":
            results = []
            thresholds = self.thresholds(model)
            for row in logits.float().sigmoid().tolist():
                probabilities = {id2label[i]: round(p, 6) for i, p in enumerate(row)}
                over = [id2label[i] for i, p in enumerate(row) if p >= _at(thresholds, i)]
                results.append({PREDICTED_LABELS: over, PROBABILITIES: probabilities})
            return results
        scores, ids = logits.float().softmax(dim=-1).max(dim=-1)
        return [
            {PREDICTED_LABEL: id2label[class_id], PREDICTED_SCORE: round(score, 6)}
            for score, class_id in zip(scores.tolist(), ids.tolist(), strict=True)
        ]

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        text, pair, label = self.data["text"], self.data["text_pair"], self.data["label"]
        samples = []
        for row, prediction in zip(rows, self.predict(model, tokenizer, rows), strict=True):
            sample = {"input": f"{row[text]} / {row[pair]}" if pair else str(row[text])}
            if PREDICTED_LABELS in prediction:
                sample["prediction"] = ", ".join(prediction[PREDICTED_LABELS]) or "(none)"
            elif PREDICTED_LABEL in prediction:
                sample["prediction"] = f"{prediction[PREDICTED_LABEL]} ({prediction[PREDICTED_SCORE]:.2f})"
            else:
                sample["prediction"] = f"{prediction[PREDICTED_SCORE]:.3f}"
            if row.get(label) is not None:
                sample["reference"] = self._reference(row[label])
            samples.append(sample)
        return samples

    def _reference(self, value: Any) -> str:
        """A gold label cell as the report shows it."""
        if self.problem == "regression":
            return str(value)
        names = []
        for label in self.label_set(value) or [] if self.problem == "multi_label" else [_as_label(value)]:
            names.append(self.label_name(self.labels.index(label)) if label in self.labels else str(label))
        return ", ".join(names) or "(none)"


def check_shots(data: dict[str, Any]) -> None:
    """``data.shots`` is a positive number of rows per class (or null), ``data.shots_seed`` an integer."""
    shots, seed = data["shots"], data["shots_seed"]
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 1):
        raise LlmkitError(f"data.shots must be a positive number of rows per class or null, got {shots!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise LlmkitError(f"data.shots_seed must be an integer, got {seed!r}")


def best_thresholds(probabilities: Any, gold: Any) -> list[float]:
    """Each label's threshold with the best F1 on these rows (the lowest of equals); 0.5 for a label with
    no positive row, whose F1 is 0 at every threshold."""
    import numpy as np

    probabilities, gold = np.asarray(probabilities), np.asarray(gold) == 1
    scores = []
    for threshold in THRESHOLD_GRID:
        chosen = probabilities >= threshold
        true_positive = (chosen & gold).sum(axis=0)
        scores.append(2 * true_positive / np.maximum(chosen.sum(axis=0) + gold.sum(axis=0), 1))
    best = np.asarray(THRESHOLD_GRID)[np.argmax(np.stack(scores), axis=0)]
    return [float(t) if gold[:, i].any() else 0.5 for i, t in enumerate(best)]


def saved_thresholds(config: dict[str, Any], names: list[str], origin: Any) -> list[float]:
    """The per-label thresholds a ``data.threshold: validation`` run saved in its model's config."""
    saved = config.get("label_thresholds") or {}
    missing = [name for name in names if name not in saved]
    if missing:
        raise LlmkitError(
            f"{origin}: data.threshold is validation, but the model's config.json has no label_thresholds "
            f"for {missing[0]!r} (only a run trained with it saves them); set data.threshold to a probability"
        )
    return [float(saved[name]) for name in names]


def _at(thresholds: Any, index: int) -> float:
    return float(thresholds) if isinstance(thresholds, (int, float)) else float(thresholds[index])


def start_head_at_prior(model: PreTrainedModel, new_weights: set[str], prior: list[float]) -> None:
    """Set the bias of the head's output layer (the last linear layer with one output per label) when this
    load created it; a trained head keeps its own. A head without a bias (GPT-2's ``score``) is left alone."""
    import torch

    outputs = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.out_features == len(prior)
    ]
    if not outputs:
        return
    name, layer = outputs[-1]
    if layer.bias is None or f"{name}.bias" not in new_weights:
        return
    with torch.no_grad():
        layer.bias.copy_(torch.tensor(prior, dtype=layer.bias.dtype))
    log(f"the new head's bias starts at the training labels' base rates (data.head_bias; {name}.bias)")


def _class_label_names(dataset: Dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel column (hub datasets, saved datasets), which become id2label."""
    from datasets import ClassLabel

    feature = dataset.features.get(column)
    inner = getattr(feature, "feature", None)  # a list of ClassLabel ids (multi-label, e.g. go_emotions)
    if isinstance(inner, ClassLabel):
        return list(inner.names)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _as_label(value: Any) -> Any:
    """Integral floats (1.0, from a JSON or Parquet column) count as the integer class 1."""
    return int(value) if isinstance(value, float) else value


def _score(value: Any) -> float | None:
    """A regression label as a float (numbers, and text that is one); None when it is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def _looks_like_scores(values: list[Any]) -> bool:
    """Numbers with fractions (3.8, "0.25") in at least half the rows: a score to regress, not classes."""
    scores = [score for score in map(_score, values) if score is not None]
    return len(scores) * 2 >= len(values) > 0 and any(not score.is_integer() for score in scores)


def _scores_from_logits(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics`` for regression: the one output per row."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits[..., 0]


def _probabilities_from_logits(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics`` for multi-label: each label's sigmoid probability."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.float().sigmoid()
