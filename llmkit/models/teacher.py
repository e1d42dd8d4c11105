"""The teacher of knowledge distillation: the ``distill:`` recipe section, and the teacher's model folder
found, checked against the student and loaded.

``distill: {teacher: runs/sst2-minilm, temperature: 2.0, alpha: 0.5}`` trains the run's model (the student)
on ``alpha * soft + (1 - alpha) * hard``: ``hard`` is the task's own loss on the labels, ``soft`` compares the
student's outputs with the teacher's on the same batch (``llmkit.training.distillation`` computes it, the
task says how: ``Task.distillation_loss``). Here the teacher is

* found: an llmkit run folder (a LoRA run's ``merged/`` model when it has one, else its adapter merged onto
  the base as it loads), a model folder, a bundled alias or a cached hub id;
* checked before anything is encoded or written: a model the task can use (``Task.check_model``: a causal
  LM for generation), the same labels as the student's data, in the same order (a classifier or tagger; a
  language model has none), and the same tokenizer vocabulary (the teacher reads the student's input ids);
* loaded once through the task's Auto class, in eval mode and without gradients; a teacher without a trained
  head for the task (a bare encoder) is refused rather than taught from a random head. Not loaded at all
  when ``distill.cache`` (``llmkit.training.teacher_cache``) holds its outputs on every training row.

This module also checks ``distill.cache`` against the task (fill-mask and generation run their teacher live)
and that ``data.unlabelled`` comes with a teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.progress import quiet_library_progress
from llmkit.models.adaptation import (
    config_label_names,
    from_pretrained,
    model_config_dict,
    trained_model_folder,
)
from llmkit.models.resolve import check_weights, load_tokenizer, resolve_model

#: The ``distill:`` section: learn from a teacher model's outputs as well as from the labels.
DISTILL_DEFAULTS: dict[str, Any] = {
    # the model to learn from: an llmkit run folder, a model folder, an alias or a hub id, trained for this
    # task (generation: a causal LM), with the student's labels (if the task has any) and tokenizer
    "teacher": None,
    # softens the teacher's and the student's class (or next-token) distributions (the soft loss is scaled by
    # T^2, so its gradients keep their size); multi-label and regression compare probabilities and scores as
    # they are
    "temperature": 2.0,
    "alpha": 0.5,  # loss = alpha * soft (teacher) + (1 - alpha) * hard (labels); 0: the labels alone
    # compute the teacher's outputs on the training rows once, save them beside the tokenization cache and
    # reuse them (every epoch, reruns, sweep trials: the teacher is then not even loaded); on by default, as
    # they cost little disk and save the teacher's forward pass on every step. Classification and token
    # classification only: fill-mask (new masks each step) and generation always run the teacher live on
    # each batch (left at its default the key is off there; true is an error)
    "cache": True,
}
#: Labels and vocabulary tokens named in a mismatch message, at most.
SHOWN = 5


# -- the recipe section -----------------------------------------------------------------------------------
def check_distill_section(
    raw: Any,
    task_name: str,
    distilling_tasks: list[str],
    where: str,
    caching_tasks: tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
) -> dict | None:
    """``distill:`` merged with its defaults (None: no teacher); every problem one line. ``distilling_tasks``:
    the tasks that can learn from a teacher (``Task.distills``), ``caching_tasks`` those whose teacher outputs
    can be cached (``Task.teacher_cache_items``); ``data`` is the checked data section (``data.unlabelled``
    needs a teacher; a stream is never cached)."""
    data = data or {}
    if raw is None:
        if data.get("unlabelled"):
            raise LlmkitError(
                f"{where}: data.unlabelled adds rows without labels, which learn from a teacher's outputs "
                f"alone: add a distill section (distill.teacher=runs/...) or remove data.unlabelled"
            )
        return None
    if not isinstance(raw, dict):
        raise LlmkitError(
            f"{where}: distill must be a mapping, e.g. {{teacher: runs/classification, alpha: 0.5}}, or null"
        )
    if task_name not in distilling_tasks:
        raise LlmkitError(
            f"{where}: distill does not work for task {task_name}; it works for "
            f"{', '.join(distilling_tasks)}: remove the distill section"
        )
    settings = dict(DISTILL_DEFAULTS)
    for key, value in raw.items():
        if key not in DISTILL_DEFAULTS:
            raise LlmkitError(
                f"{where}: unknown key 'distill.{key}'{did_you_mean(str(key), DISTILL_DEFAULTS)}; "
                f"valid keys: {', '.join(DISTILL_DEFAULTS)}"
            )
        settings[key] = value
    teacher = settings["teacher"]
    if not isinstance(teacher, str) or not teacher.strip():
        raise LlmkitError(
            f"{where}: distill.teacher must name the teacher model (an llmkit run folder, a model folder, an "
            f"alias or a hub id), got {teacher!r}"
        )
    for key, bounds in (("alpha", "between 0 and 1"), ("temperature", "above 0")):
        value = settings[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LlmkitError(f"{where}: distill.{key} must be a number {bounds}, got {value!r}")
        settings[key] = float(value)
    if not 0 <= settings["alpha"] <= 1:
        raise LlmkitError(
            f"{where}: distill.alpha must be between 0 and 1 (the teacher's share of the loss), "
            f"got {settings['alpha']!r}"
        )
    if settings["temperature"] <= 0:
        raise LlmkitError(
            f"{where}: distill.temperature must be above 0 (1 leaves the distributions as they are, higher "
            f"softens them), got {settings['temperature']!r}"
        )
    settings["cache"] = check_cache_setting(raw, settings["cache"], task_name, caching_tasks, data, where)
    if data.get("unlabelled") and data.get("streaming"):
        raise LlmkitError(
            f"{where}: data.unlabelled adds rows to a training split read whole, and data.streaming reads it "
            f"as training goes: remove one of them"
        )
    return settings


def check_cache_setting(
    raw: dict, value: Any, task_name: str, caching_tasks: tuple[str, ...], data: dict[str, Any], where: str
) -> bool:
    """``distill.cache`` as the run uses it: left at its default, off where the teacher's outputs on a row
    change from step to step (fill-mask, generation) or the rows are streamed; asked for there, one line."""
    if not isinstance(value, bool):
        raise LlmkitError(f"{where}: distill.cache must be true or false, got {value!r}")
    asked = "cache" in raw and value
    if task_name not in caching_tasks:
        if asked:
            raise LlmkitError(
                f"{where}: distill.cache works for {', '.join(caching_tasks)}, where the teacher's outputs "
                f"on a training row never change; task {task_name} runs its teacher live on each batch: "
                f"remove distill.cache"
            )
        return False
    if data.get("streaming"):
        if asked:
            raise LlmkitError(
                f"{where}: distill.cache keeps the teacher's outputs on a training split read whole, and "
                f"data.streaming reads it as training goes: remove distill.cache or data.streaming"
            )
        return False
    return value


# -- the teacher ------------------------------------------------------------------------------------------
def teacher_folder(
    name: str, where: str, allow_pickle: bool = False, trust_remote_code: bool = False
) -> Path:
    """The teacher's model folder: a LoRA run's merged model where there is one; not found: one line."""
    try:
        folder = trained_model_folder(resolve_model(name, allow_pickle, trust_remote_code))
        check_weights(folder, allow_pickle)
    except LlmkitError as exc:
        raise LlmkitError(f"{where}: distill.teacher {name}: {exc}") from None
    return folder


def check_teacher(folder: Path, name: str, task: Any, tokenizer: Any, where: str) -> None:
    """The teacher is a model the task can use (a causal LM for generation) and predicts the student's labels
    (same names, same order) from the student's token ids (same vocabulary); ``task`` has settled its labels
    (``check_data``) and ``tokenizer`` is the student's."""
    what = f"{where}: distill.teacher {name}"
    try:
        task.check_model(folder)
    except LlmkitError as exc:
        raise LlmkitError(f"{what} is no teacher for task {task.name}: {exc}") from None
    check_labels(model_config_dict(folder), task.model_kwargs(), what)
    with quiet_library_progress(errors_only=True):
        teacher_tokenizer = load_tokenizer(folder)
    check_vocabulary(teacher_tokenizer.get_vocab(), tokenizer.get_vocab(), what)


def check_labels(config: dict[str, Any], student: dict[str, Any], what: str) -> None:
    """The teacher's ``id2label`` (and problem type) against the student's; a task without labels (fill-mask)
    passes."""
    if "id2label" not in student:
        return
    wanted = student.get("problem_type")
    problem = config.get("problem_type")
    if wanted and problem and problem != wanted:
        raise LlmkitError(
            f"{what} was trained for {problem}, and this run trains {wanted}; give a teacher trained on the "
            f"same problem (data.problem)"
        )
    if wanted == "regression":
        return
    mine = [str(student["id2label"][i]) for i in range(len(student["id2label"]))]
    theirs = config_label_names(config)
    if not theirs:
        raise LlmkitError(
            f"{what} names no labels (its config has no id2label): it was not trained for this task; a "
            f"teacher is a model trained for the task on the same labels, e.g. an llmkit run"
        )
    if theirs == mine:
        return
    if sorted(theirs) == sorted(mine):
        raise LlmkitError(
            f"{what} has the same labels in another order ({', '.join(theirs[:SHOWN])} against the data's "
            f"{', '.join(mine[:SHOWN])}); set data.label_names to the teacher's order"
        )
    only_teacher = [label for label in theirs if label not in mine]
    only_data = [label for label in mine if label not in theirs]
    differences = [
        *([f"only the teacher has {_few(only_teacher)}"] if only_teacher else []),
        *([f"only the data has {_few(only_data)}"] if only_data else []),
    ]
    raise LlmkitError(
        f"{what} has other labels than the data ({'; '.join(differences)}); a teacher must be trained on the "
        f"same label set"
    )


def check_vocabulary(teacher: dict[str, int], student: dict[str, int], what: str) -> None:
    """The same token for every id: the teacher reads the ids the student's tokenizer wrote."""
    if teacher == student:
        return
    if len(teacher) != len(student):
        samples = [token for token in student if token not in teacher][:SHOWN]
        raise LlmkitError(
            f"{what} has a vocabulary of {len(teacher):,} tokens, the student's tokenizer {len(student):,}"
            f"{f' (the student has {_few(samples)}, the teacher not)' if samples else ''}; a teacher must "
            f"read the student's token ids: use the same tokenizer"
        )
    differing = [token for token, index in student.items() if teacher.get(token) != index]
    shown = ", ".join(
        f"{token!r} (teacher {teacher.get(token)}, student {student[token]})" for token in differing[:3]
    )
    raise LlmkitError(
        f"{what} has a vocabulary of the same size whose ids differ at {len(differing):,} tokens, e.g. "
        f"{shown}; a teacher must read the student's token ids: use the same tokenizer"
    )


def load_teacher(task: Any, folder: Path, name: str, where: str, **load_options: Any) -> Any:
    """The teacher through the task's Auto class with the student's labels, in eval mode, frozen. A head this
    load would have to create (the teacher was not trained for the task) is an error."""
    try:
        with quiet_library_progress(errors_only=True):
            model, info = from_pretrained(
                task.auto_class(), folder, output_loading_info=True, **task.model_kwargs(), **load_options
            )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"{where}: distill.teacher {name}: cannot load it for {task.name} ({first_line})"
        ) from None
    new = sorted({*info["missing_keys"], *(key for key, *_ in info.get("mismatched_keys") or [])})
    if new:
        raise LlmkitError(
            f"{where}: distill.teacher {name} has no trained {type(model).__name__} head for task "
            f"{task.name} (weights it lacks: {_few(new)}); a teacher is a model trained for the task, e.g. "
            f"an llmkit run"
        )
    task.check_loaded_model(model, f"{where}: distill.teacher {name}")
    model.eval()
    model.requires_grad_(False)
    return model


def _few(items: list[str]) -> str:
    shown = ", ".join(str(item) for item in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
