"""Knowledge distillation: a student learns from a teacher's outputs on the same batch as well as from labels.

With a ``distill:`` section (``llmkit.models.teacher`` checks it and finds, checks and loads the teacher)
each training micro-batch's loss is ``alpha * soft + (1 - alpha) * hard``. ``hard`` is the task's own loss,
as a run without a teacher computes it; ``soft`` compares the student's outputs with the teacher's at the
same items the hard loss averages over (``Task.distillation_loss`` says how):

* ``kl`` -- classification (one class per row), token classification (each token whose label is not -100),
  fill-mask (each masked token) and causal LMs (generation: each position whose next token's label is not
  -100, the tokens the next-token loss averages): ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``,
  the mean over the items (Hinton et al. 2015: T^2 keeps the soft gradients' size as T changes);
* ``bce`` -- multi-label classification: binary cross-entropy of the student's logits against the teacher's
  sigmoid probabilities, the mean over rows x labels (as the hard BCE);
* ``mse`` -- regression: the squared difference from the teacher's output, the mean over rows.

Both terms are means over the items of the ``labels`` column, so the combined loss is one too, and
``llmkit.training.loss_scaling`` (which wraps the Trainer built here) weighs it by the micro-batch's share of
the step's items as it weighs any loss: gradient accumulation trains as one batch. Evaluation is untouched:
``eval_loss`` is the task's own loss, comparable with a run without a teacher. Every logged training step also
logs ``distill_soft_loss`` and ``distill_hard_loss`` (item-weighted means since the previous log).

``data.unlabelled`` (classification) adds rows whose labels are -100 (every entry): they learn from the
teacher alone. The two terms are then means over different items -- ``soft`` over every row, ``hard`` over the
labelled ones -- so the loss is given as two terms (``loss_terms``), each weighed by its own share of the step
(the rows' numbers, ``ROW_COLUMN``, count the soft term's items); the student sees a micro-batch's labelled
rows (with their labels, for the task's own loss) and its other rows (without) as two parts.

The teacher runs in eval mode without gradients, on the student's device, under the same autocast; it sees the
student's batch as collated (the same masks for fill-mask). With ``distill.cache`` (classification, token
classification) its outputs on every training row are computed once before the first step, or read from
``llmkit.training.teacher_cache``, and each batch takes its rows' outputs from memory by row number: the
collator carries each row's number past the task's own collator (``RowNumberCollator``).

A task's Trainer may compute its loss on a faster path than the model's own forward (fill-mask: vocabulary
logits only at the masked positions; a causal LM: only at the positions that predict a label): it then
defines ``loss_and_item_logits(model, inputs, hard_loss)``, returning the loss (None with
``hard_loss=False``, the teacher's call) and the logits at its items, and the distilling Trainer uses it for
the student and the teacher alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.devices import is_main_process, load_dtype
from llmkit.core.errors import LlmkitError
from llmkit.core.progress import timed_step
from llmkit.data.files import Split, conll_format, read_split, resolve_data_path
from llmkit.models.resolve import check_weights
from llmkit.models.teacher import check_teacher, load_teacher, teacher_folder
from llmkit.training.loss_scaling import IGNORE_INDEX, count_items, predicts_next_token
from llmkit.training.teacher_cache import (
    ROW_COLUMN,
    TeacherOutputs,
    entry_bytes,
    load_teacher_outputs,
    outputs_from_batches,
    save_teacher_outputs,
)

if TYPE_CHECKING:
    from llmkit.recipe.loader import Recipe
    from llmkit.tasks import Task

KINDS = ("kl", "bce", "mse")


@dataclass
class Distillation:
    """A run's teacher, loaded, and how its student learns from it."""

    teacher: Any  # None when the cache holds its outputs on every training row
    kind: str
    alpha: float
    temperature: float
    #: What run_stats.json keeps: the teacher as named and as found, the settings, the loss and the cache.
    record: dict[str, Any] = field(default_factory=dict)
    #: The teacher-logit cache entry (``distill.cache``); None: the teacher runs live on each batch.
    cache_folder: Path | None = None
    #: The teacher's outputs on every training row: read from the cache, or computed before the first step.
    outputs: TeacherOutputs | None = None
    #: ``data.unlabelled``'s rows, encoded, with labels of -100 (ignored): the teacher alone teaches them.
    unlabelled: Any = None
    #: What the cache keeps a teacher output for: ``row`` or ``token`` (``Task.teacher_cache_items``).
    items: str = "row"

    @property
    def numbers_rows(self) -> bool:
        """Do training batches carry each row's number (``ROW_COLUMN``)? For the cache, or to tell unlabelled
        rows from labelled ones."""
        return self.cache_folder is not None or self.unlabelled is not None


# -- the losses -------------------------------------------------------------------------------------------
def soft_loss(kind: str, student: Any, teacher: Any, temperature: float = 1.0) -> Any:
    """The mean soft loss over items: ``student`` and ``teacher`` are logits at the same items, one row per
    item ([items, classes]; regression [rows, 1]). 0 for no items."""
    import torch
    import torch.nn.functional as F

    student, teacher = student.float(), teacher.detach().float()
    if student.shape[0] == 0:
        return student.sum() * 0.0  # on the graph, as the hard loss of an empty micro-batch
    if kind == "kl":
        log_student = F.log_softmax(student / temperature, dim=-1)
        log_teacher = F.log_softmax(teacher / temperature, dim=-1)
        divergence = F.kl_div(log_student, log_teacher, reduction="sum", log_target=True)
        return divergence / student.shape[0] * temperature**2
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    if kind == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"soft loss {kind!r}: one of {', '.join(KINDS)}")


def item_logits(logits: Any, labels: Any) -> Any:
    """The logits at the items the hard loss averages over: a row per labelled position when the logits have
    a position axis the labels also have (token classification, a masked LM's every position), else as they
    are (one row per example)."""
    if logits.dim() == labels.dim() + 1 and logits.dim() > 2:
        return logits[labels != IGNORE_INDEX]
    return logits


def distilling_trainer(base: type, distillation: Distillation) -> type:
    """Subclass a task's Trainer: its training loss is ``alpha * soft + (1 - alpha) * hard`` (module doc)."""
    import torch

    alpha, kind, temperature = distillation.alpha, distillation.kind, distillation.temperature
    mixes_unlabelled = distillation.unlabelled is not None

    class DistillingTrainer(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # soft sum, soft items, hard sum, hard items since the last log (this process)
            self.distill_tally = torch.zeros(4, dtype=torch.float64, device=self.args.device)
            # a next-token loss's items are the labels after each row's first, as loss_scaling counts them
            self.shifts_labels = predicts_next_token(self.model)
            self.teacher = None if distillation.teacher is None else distillation.teacher.to(self.args.device)
            if distillation.numbers_rows:
                self.data_collator = RowNumberCollator(self.data_collator)
            if distillation.cache_folder is not None and distillation.outputs is None:
                self._cache_teacher_outputs()
            cached = distillation.outputs
            if cached is not None and cached.rows != len(self.train_dataset):  # the key covers the rows
                raise RuntimeError(
                    f"cached teacher outputs of {cached.rows} rows, {len(self.train_dataset)} rows"
                )

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if distillation.numbers_rows and ROW_COLUMN not in self._signature_columns:
                self._signature_columns.append(ROW_COLUMN)  # kept through remove_unused_columns

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            rows = inputs.pop(ROW_COLUMN, None)
            if return_outputs or not model.training:  # evaluation: the task's own loss
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if mixes_unlabelled:  # step weighting asks for loss_terms; a caller without it gets their sum
                return sum(self._mixed_terms(model, inputs, rows).values())
            hard, student = self._loss_and_item_logits(model, inputs)
            soft = soft_loss(kind, student, self._teacher_items(inputs, rows), temperature)
            items = count_items(inputs["labels"], self.shifts_labels).to(self.distill_tally.device)
            self._tally(soft, items, hard, items)
            return alpha * soft + (1 - alpha) * hard

        def loss_terms(self, model, inputs) -> dict[str, Any] | None:
            """With unlabelled rows, the soft and hard losses are means over different items (every row; the
            labelled rows): each is its own term, weighed by its own share of the step (loss_scaling)."""
            if not mixes_unlabelled:
                return None
            inputs = dict(inputs)
            rows = inputs.pop(ROW_COLUMN)
            return self._mixed_terms(model, inputs, rows)

        def _mixed_terms(self, model, inputs, rows) -> dict[str, Any]:
            """Classification with unlabelled rows: the hard loss over the labelled rows, the soft over every
            row. The student sees the labelled rows (with their labels: the task's own loss) and the others
            (without) as two parts of the batch."""
            labelled = labelled_rows(inputs["labels"])
            order = torch.cat([labelled.nonzero().view(-1), (~labelled).nonzero().view(-1)])
            hard, student_items = torch.zeros((), device=self.args.device), []
            if labelled.any():
                hard, student = self._loss_and_item_logits(model, rows_of(inputs, labelled))
                student_items.append(student)
            if not labelled.all():
                student_items.append(
                    self._loss_and_item_logits(model, rows_of(inputs, ~labelled), hard_loss=False)[1]
                )
            teacher = self._teacher_items(inputs, rows)
            teacher = teacher[order.to(teacher.device)]  # the labelled rows' first, as the student's
            soft = soft_loss(kind, torch.cat(student_items), teacher, temperature)
            device = self.distill_tally.device
            hard_items = count_items(inputs["labels"], self.shifts_labels).to(device)
            self._tally(soft, torch.tensor(len(rows), device=device), hard, hard_items)
            return {"labels": (1 - alpha) * hard, ROW_COLUMN: alpha * soft}

        def _teacher_items(self, inputs, rows) -> Any:
            """The teacher's logits at the batch's items: from the cache, or from the teacher live."""
            if distillation.outputs is not None:
                return distillation.outputs.for_rows(rows).to(self.args.device)
            with torch.no_grad():
                return self._loss_and_item_logits(self.teacher, inputs, hard_loss=False)[1]

        def _tally(self, soft: Any, soft_items: Any, hard: Any, hard_items: Any) -> None:
            terms = torch.stack([soft.detach().double() * soft_items, hard.detach().double() * hard_items])
            self.distill_tally += torch.stack([terms[0], soft_items.double(), terms[1], hard_items.double()])

        def _loss_and_item_logits(self, model, inputs, hard_loss: bool = True) -> tuple[Any, Any]:
            faster = getattr(super(), "loss_and_item_logits", None)
            found = faster(model, inputs, hard_loss=hard_loss) if faster is not None else None
            if found is not None:
                return found
            labels = inputs["labels"]
            if not hard_loss:  # the teacher (or unlabelled rows): the outputs only
                outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
                return None, item_logits(outputs["logits"], labels)
            loss, outputs = super().compute_loss(model, dict(inputs), return_outputs=True)
            return loss, item_logits(outputs["logits"], labels)

        def _cache_teacher_outputs(self) -> None:
            """One pass of the teacher over the training rows in order, saved to the cache; the teacher is
            then let go (every step reads its outputs from memory)."""
            folder = distillation.cache_folder
            with self.args.main_process_first(desc="the teacher's outputs"):
                found = load_teacher_outputs(folder, len(self.train_dataset))
                state = "hit"
                if found is None:
                    found = self._teacher_pass()
                    saved = is_main_process() and save_teacher_outputs(found, folder)
                    state = "written" if saved else "computed"
            distillation.outputs = found
            distillation.record["teacher_cache"] = cache_record(state, folder, found)
            self.teacher = distillation.teacher = None

        def _teacher_pass(self) -> TeacherOutputs:
            """The teacher over every training row, in batches of rows of similar length (each padded to
            about its own rows' length, not to the longest of a random few), put back in row order. No
            sampler: nothing is drawn from the random generator."""
            dataset = self._remove_unused_columns(self.train_dataset, "training")
            size = self.args.per_device_eval_batch_size
            lengths = [len(ids) for ids in dataset["input_ids"]]
            order = sorted(range(len(dataset)), key=lengths.__getitem__)
            per_row: list[Any] = [None] * len(dataset)
            with timed_step(f"the teacher's outputs on {len(dataset):,} training rows"):
                for start in range(0, len(order), size):
                    chosen = order[start : start + size]
                    batch = self._prepare_inputs(self.data_collator(dataset.select(chosen).to_list()))
                    rows = batch.pop(ROW_COLUMN).cpu()
                    if rows.tolist() != chosen:
                        raise RuntimeError("the teacher's pass lost track of the training rows")
                    with torch.no_grad(), self.compute_loss_context_manager():
                        items = self._loss_and_item_logits(self.teacher, batch, hard_loss=False)[1]
                    sizes = items_per_row(batch["labels"], distillation.items).tolist()
                    chunks = items.detach().float().cpu().split(sizes)
                    for row, chunk in zip(chosen, chunks, strict=True):
                        per_row[row] = chunk
            counts = [torch.tensor([len(chunk)]) for chunk in per_row]
            return outputs_from_batches(per_row, counts)

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:
                tally = self.distill_tally
                if self.args.world_size > 1:
                    tally = self.accelerator.reduce(tally, reduction="sum")
                soft, soft_items, hard, hard_items = tally.tolist()
                if soft_items:
                    logs["distill_soft_loss"] = round(soft / soft_items, 6)
                if hard_items:
                    logs["distill_hard_loss"] = round(hard / hard_items, 6)
                self.distill_tally.zero_()
            super().log(logs, *args, **kwargs)

    DistillingTrainer.__name__ = f"Distilling{base.__name__}"
    return DistillingTrainer


class RowNumberCollator:
    """The task's collator, with each row's number (``ROW_COLUMN``) carried beside the batch it builds (the
    task's collator never sees it); rows without one (evaluation) pass as they are."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not features or ROW_COLUMN not in features[0]:
            return self.collator(features)
        rows = [feature[ROW_COLUMN] for feature in features]
        batch = self.collator([{k: v for k, v in f.items() if k != ROW_COLUMN} for f in features])
        batch[ROW_COLUMN] = torch.tensor(rows, dtype=torch.long)
        return batch


def labelled_rows(labels: Any) -> Any:
    """Which rows of a classification batch have labels (an unlabelled row's are all -100)."""
    unlabelled = labels.eq(IGNORE_INDEX)
    return ~(unlabelled.view(len(labels), -1).all(dim=1))


def rows_of(inputs: dict[str, Any], which: Any) -> dict[str, Any]:
    """The batch's rows where ``which`` is true."""
    return {key: value[which] for key, value in inputs.items()}


def items_per_row(labels: Any, items: str) -> Any:
    """How many items each row has: one (``row``), or its labelled tokens (``token``)."""
    import torch

    if items == "token":
        return labels.ne(IGNORE_INDEX).sum(dim=1)
    return torch.ones(len(labels), dtype=torch.long)


def cache_record(state: str, folder: Path | None, outputs: TeacherOutputs | None) -> dict[str, Any]:
    """run_stats.json's account of the cache: hit, written, computed (not saved) or live; where, how big."""
    if folder is None or outputs is None:
        return {"state": state}
    record: dict[str, Any] = {"state": state, "folder": str(folder), "rows": outputs.rows}
    record["bytes"] = entry_bytes(folder) if folder.is_dir() else outputs.nbytes
    return record


# -- the run's teacher ------------------------------------------------------------------------------------
def teacher_for(recipe: Recipe, task: Task, tokenizer: Any) -> Path | None:
    """The recipe's teacher folder, found and checked against the task's labels (``check_data`` has run)
    and the student's tokenizer; None without a ``distill:`` section."""
    if recipe.distill is None:
        return None
    where = f"recipe {recipe.source}"
    soft_loss_kind(task, where)  # a setting that cannot distil (fill-mask's next_sentence) says so first
    folder = teacher_folder(recipe.distill["teacher"], where, **recipe.safety_options())
    check_teacher(folder, recipe.distill["teacher"], task, tokenizer, where)
    return folder


def soft_loss_kind(task: Task, where: str) -> str:
    """``Task.distillation_loss``: one of ``KINDS``; a setting the task refuses is a one-line error."""
    try:
        kind = task.distillation_loss()
    except LlmkitError as exc:
        raise LlmkitError(f"{where}: {exc}") from None
    if kind not in KINDS:
        raise LlmkitError(f"{where}: task {task.name} gave soft loss {kind!r}, not one of {', '.join(KINDS)}")
    return kind


def load_distillation(
    recipe: Recipe,
    task: Task,
    folder: Path,
    cache_folder: Path | None = None,
    rows: tuple[int, ...] | list[int] = (),
) -> Distillation:
    """The teacher loaded (the student's dtype setting, frozen, eval mode) and the task's soft loss; a teacher
    without a trained head for the task is an error. Loaded before the student's seeded start, so it leaves
    that start (a new head's weights) as a run without a teacher has it. ``rows``: the training rows of each
    training split (the labelled, then data.unlabelled's); with a ``cache_folder`` whose entry holds the
    teacher's outputs on all of them, the teacher is not loaded at all. ``prepare`` adds the encoded
    unlabelled rows (``Distillation.unlabelled``) once they are encoded."""
    where = f"recipe {recipe.source}"
    kind = soft_loss_kind(task, where)
    settings = recipe.distill
    outputs = None if cache_folder is None else load_teacher_outputs(cache_folder, sum(rows))
    teacher, parameters = None, None
    if outputs is None:
        options = {
            **check_weights(folder, recipe.model_options["allow_pickle"]),
            "trust_remote_code": recipe.model_options["trust_remote_code"],
            "dtype": load_dtype(recipe.model_options["dtype"]),
        }
        teacher = load_teacher(task, folder, settings["teacher"], where, **options)
        parameters = sum(parameter.numel() for parameter in teacher.parameters())
    record = {
        "teacher": settings["teacher"],
        "teacher_folder": str(folder),
        "teacher_parameters": parameters,  # None: not loaded (the cache had its outputs)
        "alpha": settings["alpha"],
        "temperature": settings["temperature"],
        "soft_loss": kind,
        "teacher_cache": cache_state(task, cache_folder, outputs),
        **({"unlabelled_rows": rows[1]} if len(rows) > 1 else {}),
    }
    return Distillation(
        teacher,
        kind,
        settings["alpha"],
        settings["temperature"],
        record,
        cache_folder=cache_folder,
        outputs=outputs,
        items=task.teacher_cache_items or "row",
    )


def cache_state(task: Task, folder: Path | None, outputs: TeacherOutputs | None) -> dict[str, Any]:
    """The cache as the teacher is loaded: hit, to be written before the first step (the trainer then says
    which), or live and why."""
    if outputs is not None:
        return cache_record("hit", folder, outputs)
    if folder is not None:
        return {"state": "missed", "folder": str(folder)}
    if task.teacher_cache_items is None:
        return {"state": "live", "why": f"{task.name} shows the teacher other inputs on each step"}
    return {"state": "live", "why": "distill.cache is false"}


def read_unlabelled(recipe: Recipe, task: Task) -> Split | None:
    """``data.unlabelled``'s rows, read as data.train is, their text columns checked and any label column
    dropped (the teacher alone teaches these rows); None without the key."""
    data = recipe.data
    value = data.get("unlabelled")
    if not value:
        return None
    key = "data.unlabelled"
    path = resolve_data_path(value, key)
    split = read_split(
        "unlabelled", path, key, data.get("txt_unit", "line"), conll_format(data), data["columns"]
    )
    task.check_inputs(split)
    label = data.get("label")
    if label in split.dataset.column_names:
        split.dataset = split.dataset.remove_columns([label])
    return split


def without_labels(unlabelled: Any, train: Any) -> Any:
    """Encoded unlabelled rows with the training rows' columns: labels of -100 (ignored by the hard loss and
    by loss_scaling's item counts), in the shape and type the training labels have."""
    example = train[0]["labels"]
    if isinstance(example, list):
        empty: Any = [float(IGNORE_INDEX)] * len(example)
    else:
        empty = float(IGNORE_INDEX) if isinstance(example, float) else IGNORE_INDEX
    rows = unlabelled.add_column("labels", [empty] * len(unlabelled))
    return rows.select_columns(train.column_names).cast(train.features)


def training_rows(train: Any, distillation: Distillation | None) -> Any:
    """The rows the Trainer trains on: the labelled ones, then ``data.unlabelled``'s; numbered
    (``ROW_COLUMN``) where the cache or the unlabelled rows need it."""
    if distillation is None or not distillation.numbers_rows:
        return train
    if distillation.unlabelled is not None:
        from datasets import concatenate_datasets

        train = concatenate_datasets([train, distillation.unlabelled])
    return train.add_column(ROW_COLUMN, list(range(len(train))))


def describe(distillation: Distillation) -> str:
    """One line for the log: the teacher (or its cached outputs), the loss and any unlabelled rows."""
    record, alpha = distillation.record, distillation.alpha
    if record["teacher_parameters"] is None:
        size = f"not loaded: its outputs on the {distillation.outputs.rows:,} training rows are cached"
    else:
        size = f"{record['teacher_parameters'] / 1e6:.1f}M parameters"
    unlabelled = record.get("unlabelled_rows")
    return (
        f"distilling from {record['teacher']} ({record['teacher_folder']}, {size}): loss = {alpha:g} x "
        f"{distillation.kind} (T={distillation.temperature:g}) + {1 - alpha:g} x the task's own"
        + (f"; {unlabelled:,} unlabelled rows learn from the teacher alone" if unlabelled else "")
    )
