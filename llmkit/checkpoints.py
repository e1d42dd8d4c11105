"""Crash safety: atomic checkpoints, resume from the last complete one, and a stop on NaN/inf loss.

The stock Trainer writes ``checkpoint-N`` in place, so a crash mid-save leaves a half-written folder
that ``get_last_checkpoint`` would pick. llmkit's Trainers write each checkpoint into a staging folder
and rename it into place when it is whole: every ``checkpoint-N`` that exists is complete.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from llmkit.errors import LlmkitError

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
STAGING_DIR = ".saving"
#: Trainer writes this last into a checkpoint; its presence marks a checkpoint llmkit can resume from.
TRAINER_STATE = "trainer_state.json"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders holding a trainer state, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT_NAME.match(child.name)
        if match and (child / TRAINER_STATE).exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def checkpoint_to_resume(output_dir: Path, resume: str, overwrite: bool, finished_marker: str) -> Path | None:
    """Decide what a run does with ``output_dir``: start fresh (None) or continue from a checkpoint.

    ``resume`` is ``auto`` (continue from the last complete checkpoint of an unfinished run), ``never``,
    or a checkpoint folder. A finished run or unrelated files are never overwritten without ``overwrite``.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise LlmkitError(f"output_dir {output_dir} is a file; choose a folder, e.g. output_dir=runs/my-run")
    if resume not in ("auto", "never"):
        chosen = Path(resume).expanduser()
        if not (chosen / TRAINER_STATE).exists():
            raise LlmkitError(
                f"--resume {chosen}: not a complete checkpoint (no {TRAINER_STATE}); "
                f"pick a checkpoint-N folder of an earlier run, e.g. {output_dir}/checkpoint-500"
            )
        if overwrite:
            raise LlmkitError("--resume and --overwrite contradict each other; pass one of them")
        return chosen
    if overwrite or not output_dir.is_dir() or not any(output_dir.iterdir()):
        return None
    if (output_dir / finished_marker).exists():
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
        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            require_finite_weights(self.model, self.state.global_step)
            real_output = self.args.output_dir
            staging = os.path.join(real_output, STAGING_DIR)
            self.args.output_dir = staging  # the stock method writes <output_dir>/checkpoint-N
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.output_dir = real_output
            if self.args.should_save:
                name = f"checkpoint-{self.state.global_step}"
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
    caller reports the problem as one line after ``train()`` returns.
    """
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        problem: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
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
