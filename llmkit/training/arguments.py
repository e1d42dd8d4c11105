"""The TrainingArguments a recipe trains with: the recipe's training section, fitted to the machine.

Precision, device placement and quantization come from the machine probe (``llmkit.core.devices``);
report targets, TensorBoard and early stopping become callbacks. `llmkit validate` and `llmkit evaluate`
build the same arguments, so what `finetune` would refuse on a machine is refused before any data loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.core.devices import (
    Machine,
    check_sharding,
    device_settings,
    one_gpu_per_process,
    probe_machine,
    run_precision,
    world_size,
)
from llmkit.core.errors import LlmkitError, install_hint
from llmkit.core.progress import interactive, log
from llmkit.models.adaptation import (
    quantization_options,
)
from llmkit.recipe.loader import Recipe, may_have_validation
from llmkit.runs.folder import (
    TENSORBOARD_DIR,
)
from llmkit.tasks import Task


def check_machine_settings(recipe: Recipe, task: Task) -> tuple[Machine, dict[str, Any], Any, dict[str, Any]]:
    """What the recipe asks of this machine (precision, quantization, devices), as TrainingArguments.

    `llmkit validate` runs these same checks, so a recipe it calls valid does not then fail to train here
    (``training.precision=fp16`` on a CPU). Returns the machine, the arguments' settings, the arguments and
    the quantized-loading options.
    """
    machine = probe_machine()
    settings = {"arguments_class": task.arguments_class(), "machine": machine}
    has_eval = may_have_validation(recipe.data)
    args = training_arguments(recipe, Path(recipe.output_dir), has_eval=has_eval, **settings)
    quantized = quantization_options(recipe.peft, machine.kind, f"recipe {recipe.source}")
    return machine, settings, args, quantized


def report_targets(report_to: Any, where: str) -> tuple[str | list[str], bool]:
    """(what TrainingArguments.report_to gets, whether llmkit adds its own TensorBoard callback).

    ``auto`` (llmkit's default) is TensorBoard when the package is installed and nothing otherwise,
    silently. TensorBoard goes through llmkit's callback so the events land in ``output_dir/tensorboard``
    rather than a dated folder; other integrations (and ``all``) are the Trainer's, as they are.
    """
    from transformers.integrations import is_tensorboard_available

    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if targets == ["auto"]:
        targets = ["tensorboard"] if is_tensorboard_available() else []
    tensorboard = "tensorboard" in targets
    if tensorboard and not is_tensorboard_available():
        raise LlmkitError(
            f"{where}: training.report_to asks for tensorboard, which is not installed; install it with "
            f"{install_hint('tensorboard', 'tensorboard')}, or set training.report_to=auto"
        )
    others = [target for target in targets if target not in ("tensorboard", "none", "auto")]
    return others or "none", tensorboard


def tensorboard_callbacks(wanted: bool, output_dir: Path) -> list:
    if not wanted:
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(output_dir / TENSORBOARD_DIR)
    return [callback]


def early_stopping_callbacks(patience: int | None) -> list:
    if not patience:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=patience)]


def training_arguments(
    recipe: Recipe,
    output_dir: Path,
    has_eval: bool,
    arguments_class: type | None = None,
    machine: Machine | None = None,
):
    """TrainingArguments (or the task's subclass) from the recipe's merged training section.

    ``machine`` (default: this one) decides precision and devices; its ValueErrors become one line.
    """
    from transformers import TrainingArguments

    machine = machine or probe_machine()
    values = dict(recipe.training)
    where = f"recipe {recipe.source}"
    values.pop("resume")
    values.pop("early_stopping_patience")
    precision = run_precision(values, recipe.user_training, machine, where)
    values.pop("precision")
    values.update(device_settings(precision, machine, recipe.user_training, world_size()))
    check_sharding(values, where)
    values["report_to"], _ = report_targets(values["report_to"], where)
    if "disable_tqdm" not in recipe.user_training:
        values["disable_tqdm"] = not interactive()  # bars only where they redraw in place
    if not has_eval:
        values["eval_strategy"] = "no"
        values["eval_on_start"] = False  # nothing to evaluate (the Trainer would raise mid-run)
    try:
        args = (arguments_class or TrainingArguments)(output_dir=str(output_dir), **values)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(f"recipe {recipe.source}: invalid training settings: {first_line}") from None
    notice = one_gpu_per_process(args, machine)
    if notice:
        log(notice)
    return args
