"""Checkpoints and resume: which checkpoint a run continues from, whether it still fits the recipe, and
a Trainer whose checkpoints are written whole or not at all.

A checkpoint carries the run's fingerprint (the recipe's settings that decide the weights, the data's rows,
the model files); resuming from one whose fingerprint differs says what changed. Training stops at a
non-finite loss and never saves non-finite weights. What a run folder may hold, and what a checkpoint is
called, belong to ``llmkit.runs.entries``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from llmkit.core.devices import world_size
from llmkit.core.digests import files_digest
from llmkit.core.errors import LlmkitError
from llmkit.models.resolve import WEIGHT_SUFFIXES
from llmkit.recipe.loader import Recipe
from llmkit.runs.entries import (
    FINGERPRINT_FILE,
    STAGING_DIR,
    TRAINER_STATE,
    complete_checkpoints,
    is_run_folder,
)


def checkpoint_to_resume(output_dir: Path, resume: str, overwrite: bool, finished_marker: str) -> Path | None:
    """Decide what a run does with ``output_dir``: start fresh (None) or continue from a checkpoint.

    ``resume`` is ``auto`` (continue from the last complete checkpoint of an unfinished run), ``never``,
    or a checkpoint folder. A finished run is never written over without ``overwrite``, and files that
    llmkit did not write never are: ``overwrite`` only replaces an llmkit run.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise LlmkitError(f"output_dir {output_dir} is a file; choose a folder, e.g. output_dir=runs/my-run")
    busy = output_dir.is_dir() and any(output_dir.iterdir())
    if busy and not is_run_folder(output_dir):
        shown = sorted(child.name for child in output_dir.iterdir())
        raise LlmkitError(
            f"output_dir {output_dir} is not empty and holds no llmkit run ({', '.join(shown[:3])}"
            f"{', ...' if len(shown) > 3 else ''}); llmkit never deletes files it did not write, "
            f"so choose another output_dir=... (--overwrite only replaces llmkit runs)"
        )
    finished = busy and (output_dir / finished_marker).exists()
    if resume not in ("auto", "never"):
        chosen = Path(resume).expanduser()
        if not (chosen / TRAINER_STATE).exists():
            raise LlmkitError(
                f"--resume {chosen}: not a complete checkpoint (no {TRAINER_STATE}); "
                f"pick a checkpoint-N folder of an earlier run, e.g. {output_dir}/checkpoint-500"
            )
        if overwrite:
            raise LlmkitError("--resume and --overwrite contradict each other; pass one of them")
        if finished:
            raise LlmkitError(
                f"output_dir {output_dir} holds a finished run, which --resume would write over; "
                f"choose another output_dir=... to continue from {chosen}"
            )
        if busy and chosen.resolve().parent != output_dir.resolve():
            raise LlmkitError(
                f"output_dir {output_dir} holds another run than {chosen}'s; choose an empty "
                f"output_dir=... to continue from {chosen}"
            )
        return chosen
    if overwrite or not busy:
        return None
    if finished:
        raise LlmkitError(
            f"output_dir {output_dir} holds a finished run; pass --overwrite (overwrite=true) to replace it "
            f"or choose another output_dir=..."
        )
    checkpoints = complete_checkpoints(output_dir)
    if resume == "auto" and checkpoints:
        return checkpoints[-1]
    raise LlmkitError(
        f"output_dir {output_dir} is not empty; pass --overwrite (overwrite=true) to replace it "
        f"or choose another output_dir=..."
    )


def interruption_message(output_dir: Path, step: int) -> str:
    """What a user interrupting a run needs in one line: what is saved, and the command that continues it."""
    checkpoints = complete_checkpoints(output_dir)
    if checkpoints:
        return (
            f"interrupted at step {step}; the last complete checkpoint is {checkpoints[-1]}: run the same "
            f"command again to continue from it (training.resume=auto), or pass --resume {checkpoints[-1]}"
        )
    return (
        f"interrupted at step {step} before any checkpoint was saved in {output_dir}: run the same command "
        f"with --overwrite to start over (training.save_strategy=steps with save_steps=N saves checkpoints)"
    )


def check_fingerprint(checkpoint: Path, current: dict[str, Any], explicit: bool) -> str | None:
    """Refuse to continue a checkpoint whose run had another recipe, data or model than this one.

    ``resume: auto`` refuses in one line naming what changed; an explicit ``--resume`` is the user's
    choice, so it only gets a warning (returned). A checkpoint without a fingerprint (written by an older
    llmkit) cannot be checked, which the returned warning says.
    """
    try:
        saved = json.loads((checkpoint / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{checkpoint} has no readable {FINGERPRINT_FILE} (an older llmkit wrote it): not checked"
    changed = fingerprint_changes(saved, current)
    if not changed:
        return None
    what = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
    if explicit:
        return f"resuming from {checkpoint} although the run changed since it was saved: {what}"
    raise LlmkitError(
        f"cannot resume from {checkpoint}: the run changed since it was saved ({what}); pass --overwrite "
        f"to start over, choose another output_dir=..., or --resume {checkpoint} to continue anyway"
    )


def fingerprint_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every dotted key whose value differs between two fingerprints."""
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {_short(old.get(key, '(none)'))} -> {_short(new.get(key, '(none)'))}")
    return changes


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:16] + "..." + text[-8:]


def require_finite_weights(model: Any, step: int) -> None:
    import torch

    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise LlmkitError(
                f"training diverged: parameter {name} holds NaN/inf at step {step}, so no checkpoint was "
                f"written; lower training.learning_rate (or use training.max_grad_norm) and run again"
            )


def crash_safe_trainer(base: type) -> type:
    """Subclass a Trainer class so each checkpoint is staged, checked and renamed into place."""
    from transformers.trainer_utils import rotate_checkpoints

    class CrashSafeTrainer(base):
        #: Written into every checkpoint (see check_fingerprint); set by the training spine before training.
        run_fingerprint: dict[str, Any] | None = None

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            require_finite_weights(self.model, self.state.global_step)
            real_output = self.args.output_dir
            staging = os.path.join(real_output, STAGING_DIR)
            self.args.output_dir = staging  # the stock method writes <output_dir>/checkpoint-N
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.output_dir = real_output
            # Every rank writes into the staging folder (its rng_state_<rank>.pth, sharded weights or
            # optimizer states): rank 0 may only move it into place once all of them are done.
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                name = f"checkpoint-{self.state.global_step}"
                if self.run_fingerprint is not None:
                    fingerprint = json.dumps(self.run_fingerprint, indent=2, sort_keys=True, default=str)
                    (Path(staging) / name / FINGERPRINT_FILE).write_text(fingerprint + "\n", encoding="utf-8")
                target = Path(real_output) / name
                if target.exists():
                    shutil.rmtree(target)
                os.rename(Path(staging) / name, target)
                shutil.rmtree(staging, ignore_errors=True)
                if self.state.best_model_checkpoint and STAGING_DIR in self.state.best_model_checkpoint:
                    self.state.best_model_checkpoint = str(target)
                rotate_checkpoints(
                    real_output, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=False
                )
            self.accelerator.wait_for_everyone()

    CrashSafeTrainer.__name__ = f"CrashSafe{base.__name__}"
    return CrashSafeTrainer


def stop_on_non_finite_loss() -> Any:
    """A callback that stops training at the first logged NaN/inf loss; ``.problem`` then says where.

    It stops the Trainer instead of raising inside the loop, so progress bars close cleanly and the
    caller reports the problem as one line after ``train()`` returns. A non-finite gradient norm stops
    training too, except under fp16: its loss scaler makes overflowing steps on purpose (grad_norm inf),
    skips them and lowers the scale, so such a step is routine there, not divergence.
    """
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        problem: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            watched = ("loss",) if getattr(args, "fp16", False) else ("loss", "grad_norm")
            for key in watched:
                value = (logs or {}).get(key)
                if self.problem is None and isinstance(value, (int, float)) and not math.isfinite(value):
                    kept = complete_checkpoints(Path(args.output_dir))
                    tail = f"; the last good checkpoint, {kept[-1]}, is kept" if kept else ""
                    self.problem = (
                        f"training {key} became {value} at step {state.global_step}; lower "
                        f"training.learning_rate or check the data{tail}"
                    )
                    control.should_training_stop = True
                    control.should_save = False

    return StopOnNonFiniteLoss()


#: Recipe keys that do not change what a run computes step by step: a checkpoint may be resumed with
#: other values (e.g. more steps). Every other key is part of the run's fingerprint.
RESUMABLE_TRAINING_KEYS = frozenset(
    {
        "max_steps",
        "num_train_epochs",
        "resume",
        "report_to",
        "disable_tqdm",
        "per_device_eval_batch_size",
        "eval_accumulation_steps",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "run_name",
    }
)

RESUMABLE_TRAINING_PREFIXES = ("logging_", "save_", "eval_")


def run_fingerprint(
    recipe: Recipe, row_digests: dict[str, str], model_path: Path, teacher_path: Path | None = None
) -> dict[str, Any]:
    """What a checkpoint's run was: the recipe (less keys that may change on resume), data, model and, for a
    distillation, the teacher's files.

    Stored with every checkpoint; ``resume: auto`` refuses a checkpoint whose fingerprint differs.
    """
    settings = recipe.to_dict()
    for key in ("output_dir", "overwrite"):
        settings.pop(key)
    for role in ("train", "validation", "test"):  # the files' paths: their rows are compared instead
        settings["data"].pop(role, None)
    settings["training"] = {
        key: value
        for key, value in settings["training"].items()
        if key not in RESUMABLE_TRAINING_KEYS and not key.startswith(RESUMABLE_TRAINING_PREFIXES)
    }
    fingerprint = {
        **settings,  # task, model, data, training: changes read as the recipe keys they are
        "data rows": {role: digest for role, digest in row_digests.items() if role != "test"},
        "model files": model_signature(model_path),
        **({"teacher files": model_signature(teacher_path)} if teacher_path is not None else {}),
        "processes": world_size(),
    }
    return json.loads(json.dumps(fingerprint, default=str))  # as it reads back from the checkpoint


def model_signature(model_path: Path) -> dict[str, Any]:
    """The model folder in short: a digest of its other files, and each weight file's size and time."""
    files = sorted(path for path in model_path.iterdir() if path.is_file())
    weights = [path for path in files if path.suffix in WEIGHT_SUFFIXES]
    signature: dict[str, Any] = {"other files": files_digest([p for p in files if p not in weights])}
    for path in weights:
        stat = path.stat()
        signature[path.name] = f"{stat.st_size} bytes, mtime {stat.st_mtime_ns}"
    return signature
