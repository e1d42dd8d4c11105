"""The protocol every task honours; ``llmkit.training.spine`` runs any task through the same spine.

A task answers five questions: which Auto class loads the model, how rows become model inputs,
which collator batches them, which metrics judge them, and how a trained model predicts on new rows.
Everything else (reading data, resolving models, TrainingArguments, saving) is shared.

The order in which ``llmkit.training.spine.run`` calls a task's hooks (``llmkit validate``: 1-5 on some
train rows):

1. ``check_data(splits)``: every split as read, before anything is written; then the recipe's fixes drop
   training rows (``data.deduplicate``, ``data.drop_leaks``), ``select_training_rows(splits)`` keeps the
   ones the run trains on (classification's ``data.shots``) and ``augment_training_rows(splits)`` adds rows
   made from them (classification's ``data.augment``), all through ``checked_splits``;
2. ``check_model(model_path)``: the resolved model folder (a task may read the model family here); with
   ``model.from_scratch`` the folder is built first (``llmkit.models.scratch``) from
   ``pretraining_texts(train)`` (the tokenizer's training text) and ``scratch_model_class(config)`` (the
   freshly initialised weights);
3. ``prepare_tokenizer(tokenizer)``: on every run, since the encodings may come from the cache;
4. ``encode(dataset, tokenizer)``: once per split, skipped when the tokenization cache has the split
   (the cache key holds ``encoding_state()``, so everything ``encode`` reads must be set by now);
5. ``collator(tokenizer)``;
6. ``encoding_metrics(role, encoded)`` and ``prepare_evaluation(role, split, encoded)``: every split,
   freshly encoded or from the cache;
7. ``load_model(path)``; with a ``peft:`` section ``llmkit.models.adaptation`` wraps it, asking
   ``peft_task_type()`` and ``adapter_modules_to_save(model)``; with a ``distill:`` section the teacher
   loads through ``auto_class()`` and ``model_kwargs()`` (its folder checked by ``check_model`` and against
   them right after step 3, the loaded teacher by ``check_loaded_model``) and ``distillation_loss()`` says
   how the student learns from it; then the Trainer from
   ``trainer_class``/``arguments_class`` with ``compute_metrics`` and ``preprocess_logits_for_metrics``;
8. after training: ``report_samples`` and, for an unlabelled test split, ``predict``.

A task with ``streams = True`` can train on ``data.streaming``: its training split is then read as training
goes (``llmkit.training.streaming``), and ``check_data({"train": chunk})`` is called again for each chunk of
rows and ``encode_chunks`` on the checked chunks; both must work on any chunk (no state that only the whole
split could settle). ``encode_chunks`` encodes each chunk with ``encode`` unless a task joins rows into
examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.data.audit import drop_training_rows
from llmkit.data.files import stream_texts

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from llmkit.data.files import Split


#: Fill-mask, generation and summarization compute vocabulary logits only where there are labels, by calling
#: the model's parts directly: a compiled wrapper is bypassed (for fill-mask it breaks the head lookup).
FAST_LOSS_COMPILE_REFUSAL = (
    "its loss computes vocabulary logits only at labelled positions by calling the model's parts directly, "
    "which a compiled model would bypass"
)


@dataclass(frozen=True)
class LengthLimit:
    """What `llmkit validate` counts the examples' lengths against: the recipe key and its tokens, what
    happens to a longer example, and whether an example exactly at the limit counts (a truncated one is cut
    to the limit; a refused one is over it)."""

    key: str
    tokens: int
    effect: str = "truncated"
    counts_at_limit: bool = True

    def counted(self, lengths: Any) -> Any:
        return lengths >= self.tokens if self.counts_at_limit else lengths > self.tokens

    def describe(self, count: int, total: int) -> str:
        where = "reach" if self.counts_at_limit else "are over"
        return f"{count} ({count / total:.1%}) {where} {self.key} {self.tokens} ({self.effect})"


@dataclass(frozen=True)
class AuditColumns:
    """The columns `llmkit audit` reads: the input texts a row is compared by (a pair task's two), the
    target column (None: none), and what the target is: ``class`` (one label a row), ``classes`` (a label
    set), ``sequence`` (a tag list: compared whole) or ``other`` (compared whole, no distribution)."""

    texts: tuple[str, ...]
    label: str | None = None
    kind: str = "other"


class Task:
    """Base class: subclasses set the class attributes and override the hooks they need."""

    name: ClassVar[str]
    #: The model a recipe gets when it names none.
    default_model: ClassVar[str]
    #: Task-specific ``data`` keys (column names, options) and their defaults.
    data_defaults: ClassVar[dict[str, Any]] = {}
    #: number settings that also take a word (``threshold: validation``)
    data_words: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: TrainingArguments defaults that suit this task (over llmkit's general ones).
    training_defaults: ClassVar[dict[str, Any]] = {}
    #: The ``transformers.pipeline`` task name the saved folder serves.
    pipeline_task: ClassVar[str]
    #: Metric reported as the headline of a run (key without the ``eval_`` prefix).
    headline_metric: ClassVar[str] = "loss"
    #: Headlines for runs that have no ``headline_metric`` (a classifier trained for regression: spearman).
    other_headline_metrics: ClassVar[tuple[str, ...]] = ()
    #: Language-modelling tasks also report perplexity = exp(loss) for every evaluated split.
    reports_perplexity: ClassVar[bool] = False
    #: Can train on ``data.streaming`` (a corpus read chunk by chunk as training goes; see the module doc).
    streams: ClassVar[bool] = False
    #: Why ``training.torch_compile`` cannot work for this task (None: it can).
    torch_compile_refusal: ClassVar[str | None] = None
    #: Why a ``peft:`` section (a LoRA adapter) cannot work for this task (None: it can); the recipe loader
    #: refuses such a recipe before any data is read.
    peft_refusal: ClassVar[str | None] = None
    #: The encoded columns that hold targets: a test split that has them is scored, one without is predicted.
    target_columns: ClassVar[tuple[str, ...]] = ("labels",)
    #: The keys ``predict`` adds beside each input row; an input that has such a column is refused.
    prediction_keys: ClassVar[tuple[str, ...]] = ()
    #: ``predictions_from_logits`` answers: the logits of an evaluation pass give ``predict``'s dicts.
    predicts_from_logits: ClassVar[bool] = False

    #: A top-level recipe section of the task's own (e.g. ``preference``) and its keys' defaults; the
    #: validated section reaches the task as ``options``. It holds how to train, never how to encode.
    options_section: ClassVar[str | None] = None
    options_defaults: ClassVar[dict[str, Any]] = {}

    #: Can learn from a teacher's outputs (a ``distill:`` section, ``llmkit.training.distillation``); the
    #: comparison is ``distillation_loss``'s.
    distills: ClassVar[bool] = False
    #: The items a teacher's outputs are cached for (``distill.cache``): ``row`` (one output per row) or
    #: ``token`` (one per labelled token); None: the teacher runs live on each batch, since what it sees of
    #: a row changes from step to step (fill-mask's random masks; generation is left live as well).
    teacher_cache_items: ClassVar[str | None] = None

    #: The language model this task can pre-train from scratch (``llmkit.models.scratch``): ``encoder``
    #: (masked LM) or ``decoder`` (causal LM); None: the task needs a pre-trained model.
    scratch_style: ClassVar[str | None] = None

    def __init__(self, data: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        self.data = data
        self.options = {**self.options_defaults, **(options or {})}

    @classmethod
    def settle_options(cls, options: dict[str, Any], recipe_folder: Path) -> dict[str, Any]:
        """The task's section with what it names relative to the recipe file settled (GRPO: a reward
        function's file beside the recipe), so the run's saved recipe means the same from any folder."""
        return options

    # -- data -------------------------------------------------------------------------------------
    def check_inputs(self, split: Split) -> None:
        """Validate the input columns a model needs to predict (no targets); raise LlmkitError."""

    def check_data(self, splits: dict[str, Split]) -> None:
        """Validate inputs and targets of the training splits; errors name the file, row and column."""
        for split in splits.values():
            self.check_inputs(split)

    def select_training_rows(self, splits: dict[str, Split]) -> None:
        """Keep the training rows this run trains on (a sample of them), after the recipe's fixes dropped
        repeats and leaks, so a sample of N rows is N rows of the fixed data."""

    def augment_training_rows(self, splits: dict[str, Split]) -> dict[str, int]:
        """Add training rows made from the kept ones (classification's ``data.augment``), last, so that
        they are made from the rows the run trains on; returns how many were added (for metrics.json)."""
        return {}

    def check_evaluation_data(self, split: Split, model_path: Path) -> None:
        """A labelled file a trained model is scored on (`llmkit evaluate`): checked as training checks its
        splits, the file standing in for the training split. A task that derives state from the training
        split (a label list) takes it from the trained model instead (its config), so ids mean what they
        meant in training."""
        self.check_data({"train": split})

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Set on the tokenizer what the saved model must carry (e.g. the chat template rows were rendered
        with). Called by every run before encoding, whether the encodings then come from the cache or not.
        """

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        """Rows -> model inputs (input_ids, labels, ...); drop every other column.

        No side effects on the task or the tokenizer: a cached split skips it (see prepare_tokenizer).
        """
        raise NotImplementedError

    def encode_chunks(
        self, chunks: Iterable[Dataset], tokenizer: PreTrainedTokenizerBase
    ) -> Iterator[Dataset]:
        """A stream's rows, a chunk at a time -> its encoded examples, a chunk at a time, in order.

        Each chunk is encoded on its own; a task whose examples join rows (blocks of concatenated text)
        overrides it to carry what a chunk leaves over into the next, so that a stream gives the examples
        ``encode`` gives the same rows read whole.
        """
        for dataset in chunks:
            yield self.encode(dataset, tokenizer)

    def encoding_state(self) -> dict[str, Any]:
        """What the task derived from other splits or the model that ``encode`` depends on (the label list
        of the training split, a detected data format, a model family): part of the tokenization cache
        key. By default every attribute a task sets besides its data settings."""
        return {name: value for name, value in vars(self).items() if name not in ("data", "options")}

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable[[list[dict]], dict]:
        raise NotImplementedError

    def encoding_metrics(self, role: str, dataset: Dataset) -> dict[str, int]:
        """Counts about an encoded split worth keeping (e.g. truncated documents), for metrics.json.

        Called for every split, whether it was just encoded or loaded from the tokenization cache.
        """
        return {}

    def prepare_evaluation(self, role: str, split: Split, encoded: Dataset) -> Dataset:
        """The split the Trainer gets, called for every split after encoding (cached or not).

        A task whose evaluation needs more than the model's outputs (e.g. mapping answer spans back to
        the text) keeps it here and may drop its bookkeeping columns; the default passes rows through.
        """
        return encoded

    def pretraining_texts(self, split: Split) -> Iterable[str]:
        """The texts a tokenizer trained from scratch learns from (``tokenizer.train``): the text column,
        read lazily when the split is a stream."""
        return stream_texts(split, self.data["text"])

    # -- model ------------------------------------------------------------------------------------
    def check_model(self, model_path: Path) -> None:
        """Refuse, before any data is encoded, a model folder this task cannot use; raise LlmkitError."""

    def check_loaded_model(self, model: PreTrainedModel, what: str) -> None:
        """Refuse a loaded model (a ``distill:`` teacher) whose computation this task cannot use; ``what``
        names it in the one-line LlmkitError."""

    def auto_class(self) -> type:
        raise NotImplementedError

    def scratch_model_class(self, config: Any) -> Any:
        """The class whose freshly initialised weights a from-scratch run with ``config`` starts from (an Auto
        class's ``from_config`` or a model class); refuse a config this task cannot train here."""
        return self.auto_class()

    def model_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments (e.g. label maps for a classification head)."""
        return {}

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        """``load_options`` are the recipe's safe-loading settings (trust_remote_code, use_safetensors).

        ``path`` may be an adapter folder (``llmkit.models.adaptation``); ``base=`` then overrides its base.
        """
        from llmkit.models.adaptation import from_pretrained

        return from_pretrained(self.auto_class(), path, **self.model_kwargs(), **load_options)

    def peft_task_type(self) -> str | None:
        """peft's ``TaskType`` for this task's model (SEQ_CLS, CAUSAL_LM, ...); None: a generic one."""
        return None

    def adapter_modules_to_save(self, model: PreTrainedModel) -> list[str]:
        """Modules a LoRA run trains in full and saves with the adapter (``peft.modules_to_save: auto``).

        peft's task types add their own heads (a classifier for SEQ_CLS); a task whose head is new in
        other ways (a masked-LM head on a bare encoder) names it here.
        """
        return []

    def label_name(self, label_id: int) -> str:
        return str(label_id)

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """Lines showing one collated example as the model sees it (for `llmkit validate`)."""
        input_ids = batch["input_ids"][0]
        attention = batch.get("attention_mask")
        real = input_ids[attention[0].bool()] if attention is not None else input_ids
        lines = [f"input ({len(real)} tokens): {tokenizer.decode(real)!r}"]
        labels = batch.get("labels")
        if labels is not None:
            labels = labels[0]
            if labels.ndim == 0:
                lines.append(f"label: {self.label_name(int(labels))}")
            else:
                kept = labels[labels != -100]
                lines.append(f"loss on {len(kept)} of {len(labels)} tokens: {tokenizer.decode(kept)!r}")
        return lines

    def example_lengths(self, encoded: Dataset) -> list[int]:
        """Tokens per encoded example, for `llmkit validate`'s statistics."""
        from llmkit.data.files import column_lengths

        return column_lengths(encoded, "input_ids")

    def length_limit(self) -> LengthLimit:
        """The limit an example's tokens meet, for `llmkit validate`'s statistics."""
        return LengthLimit("max_length", self.data["max_length"])

    def chat_examples(self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[Any]:
        """Rows rendered through a chat template as trained (``llmkit.tasks.chat_checks.ChatExample``), for
        the pre-flight chat checks of `llmkit validate`; [] for a task (or data shape) without a chat
        template."""
        return []

    def audit_columns(self) -> AuditColumns | None:
        """What `llmkit audit` compares rows by (``llmkit.data.audit``); None: the task is not audited.
        Called after ``check_data``, so settings resolved from the data (e.g. the problem type) are known."""
        return None

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        """Extra lines for `llmkit validate` (e.g. the label distribution)."""
        return []

    # -- evaluation ---------------------------------------------------------------------------------
    def compute_metrics(self) -> Callable[[Any], dict[str, float]] | None:
        return None

    def after_training(self, trainer: Any, validation: Dataset | None) -> bool:
        """Settle, on the validation split, what a task chooses once the weights are final (multi-label
        thresholds); True when that changes how the run is scored (the last evaluation is then redone)."""
        return False

    def preprocess_logits_for_metrics(self) -> Callable[[Any, Any], Any] | None:
        """Reduce logits batch by batch (e.g. argmax) so eval never holds every logit in memory."""
        return None

    def trainer_class(self) -> type:
        from transformers import Trainer

        return Trainer

    def distillation_loss(self) -> str:
        """How a student's outputs are compared with its teacher's at each item of the training loss (a row,
        a labelled token, a masked token), for a task with ``distills``; called once ``check_data`` has run:
        ``kl`` (the KL divergence of the temperature-softened class distributions, times T^2), ``bce`` (binary
        cross-entropy against the teacher's sigmoid probabilities) or ``mse`` (the squared difference from
        the teacher's outputs). Raise LlmkitError for settings that cannot learn from a teacher."""
        raise NotImplementedError

    def loss_targets(self) -> tuple[str, ...]:
        """The batch columns whose items (entries other than -100) the training loss is a mean over, first the
        one a model's own loss averages: ``llmkit.training.loss_scaling`` weighs each accumulated micro-batch
        by its share of them, so gradient accumulation x batch trains as one batch. () for a trainer that
        averages over rows and divides by the accumulation itself."""
        return ("labels",)

    def arguments_class(self) -> type:
        """The TrainingArguments class ``trainer_class`` needs (e.g. Seq2SeqTrainingArguments)."""
        from transformers import TrainingArguments

        return TrainingArguments

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Predictions for raw rows (same columns as training data), one dict per row."""
        raise NotImplementedError

    def predictions_from_logits(self, model: PreTrainedModel, logits: Any) -> list[dict[str, Any]] | None:
        """``predict``'s dicts from logits already computed for the rows (one per row, in order), so an
        evaluation pass doubles as the prediction pass; None where ``predict`` must run its own pass (it
        reads other inputs than the evaluation encodes, or generates)."""
        return None

    def rows_with_predictions(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each row as it is plus its prediction keys: what `llmkit predict` writes and a run's
        test_predictions.jsonl holds (one code path, so both keep the input columns)."""
        predictions = self.predict(model, tokenizer, rows)
        return [{**row, **prediction} for row, prediction in zip(rows, predictions, strict=True)]

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """A few predictions for the run report: ``input``, ``prediction`` and, where known, ``reference``.

        The default shows each row and ``predict``'s answer as they are; tasks override it to show
        their inputs and targets by name (and to pose a question the row answers, as fill-mask does).
        """
        import json

        return [
            {"input": json.dumps(row, ensure_ascii=False, default=str), "prediction": _compact(prediction)}
            for row, prediction in zip(rows, self.predict(model, tokenizer, rows), strict=True)
        ]


def length_ordered_batches(lengths: list[int], size: int) -> Iterator[list[int]]:
    """Row indices in batches of ``size``, shortest rows first, so each batch pads to a length near its
    rows' own (SST-2 in file order pads batches of 64 to ~3x its real tokens); callers put each result
    back at its row's index, so the output keeps the input's order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for start in range(0, len(order), size):
        yield order[start : start + size]


def argmax_logits(logits: Any, labels: Any) -> Any:
    """``preprocess_logits_for_metrics`` for classifiers: keep only predicted ids, batch by batch."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.argmax(dim=-1)


def _compact(prediction: dict[str, Any]) -> str:
    """A prediction dict as one short string: a lone value as it is, several as key: value pairs."""
    if len(prediction) == 1:
        return str(next(iter(prediction.values())))
    return ", ".join(f"{key}: {value}" for key, value in prediction.items())


def checked_splits(
    task: Task, splits: dict[str, Split], data: dict[str, Any], task_name: str
) -> dict[str, int]:
    """Every command that reads a recipe's data does it in this order: check the splits, apply the recipe's
    fixes (``data.deduplicate``, ``data.drop_leaks``), keep the rows the run trains on
    (``select_training_rows``), then add rows made from them (``augment_training_rows``). Returns how many
    rows each fix removed or added (for metrics.json)."""
    task.check_data(splits)
    columns = task.audit_columns()
    counts = drop_training_rows(splits, data, columns and columns.texts, task_name)
    task.select_training_rows(splits)
    return counts | task.augment_training_rows(splits)
