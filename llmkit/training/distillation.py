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

The teacher runs in eval mode without gradients, on the student's device, under the same autocast; it sees the
student's batch as collated (the same masks for fill-mask). A task's Trainer may compute its loss on a faster
path than the model's own forward (fill-mask: vocabulary logits only at the masked positions; a causal LM:
only at the positions that predict a label): it then defines ``loss_and_item_logits(model, inputs,
hard_loss)``, returning the loss (None with ``hard_loss=False``, the teacher's call) and the logits at its
items, and the distilling Trainer uses it for the student and the teacher alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.devices import load_dtype
from llmkit.core.errors import LlmkitError
from llmkit.models.resolve import check_weights
from llmkit.models.teacher import check_teacher, load_teacher, teacher_folder
from llmkit.training.loss_scaling import IGNORE_INDEX, count_items, predicts_next_token

if TYPE_CHECKING:
    from llmkit.recipe.loader import Recipe
    from llmkit.tasks import Task

KINDS = ("kl", "bce", "mse")


@dataclass
class Distillation:
    """A run's teacher, loaded, and how its student learns from it."""

    teacher: Any
    kind: str
    alpha: float
    temperature: float
    #: What run_stats.json keeps: the teacher as named and as found, the settings and the loss.
    record: dict[str, Any] = field(default_factory=dict)


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

    class DistillingTrainer(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.teacher = distillation.teacher.to(self.args.device)
            # soft sum, hard sum, items since the last log (this process)
            self.distill_tally = torch.zeros(3, dtype=torch.float64, device=self.args.device)
            # a next-token loss's items are the labels after each row's first, as loss_scaling counts them
            self.shifts_labels = predicts_next_token(self.model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training:  # evaluation: the task's own loss
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            hard, student = self._loss_and_item_logits(model, inputs)
            with torch.no_grad():
                teacher = self._loss_and_item_logits(self.teacher, inputs, hard_loss=False)[1]
            soft = soft_loss(kind, student, teacher, temperature)
            items = count_items(inputs["labels"], self.shifts_labels).to(self.distill_tally.device)
            terms = torch.stack([soft.detach().double(), hard.detach().double()]) * items
            self.distill_tally += torch.cat([terms, items.double().view(1)])
            return alpha * soft + (1 - alpha) * hard

        def _loss_and_item_logits(self, model, inputs, hard_loss: bool = True) -> tuple[Any, Any]:
            faster = getattr(super(), "loss_and_item_logits", None)
            found = faster(model, inputs, hard_loss=hard_loss) if faster is not None else None
            if found is not None:
                return found
            labels = inputs["labels"]
            if not hard_loss:  # the teacher: its outputs only
                outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
                return None, item_logits(outputs["logits"], labels)
            loss, outputs = super().compute_loss(model, dict(inputs), return_outputs=True)
            return loss, item_logits(outputs["logits"], labels)

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            if "loss" in logs:
                tally = self.distill_tally
                if self.args.world_size > 1:
                    tally = self.accelerator.reduce(tally, reduction="sum")
                soft, hard, items = tally.tolist()
                if items:
                    logs["distill_soft_loss"] = round(soft / items, 6)
                    logs["distill_hard_loss"] = round(hard / items, 6)
                self.distill_tally.zero_()
            super().log(logs, *args, **kwargs)

    DistillingTrainer.__name__ = f"Distilling{base.__name__}"
    return DistillingTrainer


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


def load_distillation(recipe: Recipe, task: Task, folder: Path) -> Distillation:
    """The teacher loaded (the student's dtype setting, frozen, eval mode) and the task's soft loss; a teacher
    without a trained head for the task is an error. Loaded before the student's seeded start, so it leaves
    that start (a new head's weights) as a run without a teacher has it."""
    where = f"recipe {recipe.source}"
    kind = soft_loss_kind(task, where)
    settings = recipe.distill
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
        "teacher_parameters": parameters,
        "alpha": settings["alpha"],
        "temperature": settings["temperature"],
        "soft_loss": kind,
    }
    return Distillation(teacher, kind, settings["alpha"], settings["temperature"], record)


def describe(distillation: Distillation) -> str:
    """One line for the log: the teacher and the loss."""
    record, alpha = distillation.record, distillation.alpha
    return (
        f"distilling from {record['teacher']} ({record['teacher_folder']}, "
        f"{record['teacher_parameters'] / 1e6:.1f}M parameters): loss = {alpha:g} x {distillation.kind} "
        f"(T={distillation.temperature:g}) + {1 - alpha:g} x the task's own"
    )
