"""Crash safety: atomic checkpoints, resume from the last complete one, and a stop on NaN/inf loss.

The stock Trainer writes ``checkpoint-N`` in place, so a crash mid-save leaves a half-written folder
that ``get_last_checkpoint`` would pick. llmkit's Trainers write each checkpoint into a staging folder
and rename it into place when it is whole: every ``checkpoint-N`` that exists is complete. Each
checkpoint also holds the run's fingerprint (recipe, data, model), so a run is only continued by the
same recipe on the same data and model.

This module also owns the run folder's contents: :data:`RUN_FOLDER_ENTRIES` lists everything a run
writes, and ``--overwrite`` deletes those entries and nothing else.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.models.adaptation import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MERGED_DIR, MODEL_CONFIG_FILE
from llmkit.runs.plots import PLOTS_DIR

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
STAGING_DIR = ".saving"
#: Trainer writes this last into a checkpoint; its presence marks a checkpoint llmkit can resume from.
TRAINER_STATE = "trainer_state.json"
#: What the run that wrote a checkpoint was (recipe, data, model); see :func:`check_fingerprint`.
FINGERPRINT_FILE = "llmkit_fingerprint.json"

#: Written into output_dir when a run starts: the folder is an llmkit run, which --overwrite may replace.
RUN_MARKER = ".llmkit-run"
#: Everything llmkit writes into output_dir (names and shell patterns): a run's own files, checkpoints,
#: TensorBoard events, the model + tokenizer files of ``save_pretrained``, a LoRA run's adapter, and what
#: ``llmkit merge`` and ``llmkit report`` add later. ``--overwrite`` deletes these entries of an llmkit run
#: and never anything else; an entry missing here would outlive the run that replaced it (a stale adapter
#: applies itself to the new weights), so tests/test_run_folder.py checks every command's folder against it.
RUN_FOLDER_ENTRIES = (
    RUN_MARKER,
    "recipe.yaml",
    "metrics.json",
    "manifest.json",
    "log_history.json",
    "run_stats.json",
    "report.md",
    STAGING_DIR,
    ".final",
    "checkpoint-*",
    ".*.tmp",  # an atomic JSON write cut short
    "README.md",  # the model card
    PLOTS_DIR,
    "tensorboard",
    "test_predictions.jsonl",
    "evaluations",  # `llmkit evaluate` of the run
    "training_args.bin",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    ADAPTER_CONFIG_FILE,  # a LoRA/QLoRA run: peft's adapter and llmkit's adapted config
    ADAPTER_WEIGHTS_FILE,
    MODEL_CONFIG_FILE,
    MERGED_DIR,  # peft.merge: true, or `llmkit merge RUN`
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "additional_chat_templates",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)


#: The entries of RUN_FOLDER_ENTRIES that hold model weights: a full model's, an adapter's, a merged model and
#: checkpoints. `llmkit sweep` removes them from the trials it does not keep, leaving the rest of the run.
WEIGHT_ENTRIES = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    ADAPTER_WEIGHTS_FILE,
    MERGED_DIR,
    "checkpoint-*",
)


def is_run_entry(name: str) -> bool:
    """Is ``name`` (a file or folder directly in output_dir) one that llmkit runs write?"""
    if name.startswith("checkpoint-"):
        return bool(CHECKPOINT_NAME.match(name))
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FOLDER_ENTRIES)


def is_run_folder(output_dir: Path) -> bool:
    """Does ``output_dir`` hold an llmkit run: its marker, or a run of an older llmkit (its manifest, or
    nothing but run files and checkpoints: one killed before it finished)?

    Names alone (config.json, README.md) do not tell: a model folder or a project has them.
    """
    if (output_dir / RUN_MARKER).exists():
        return True
    try:
        manifest = json.loads((output_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return bool(complete_checkpoints(output_dir)) and not foreign_entries(output_dir)
    return isinstance(manifest, dict) and "llmkit" in (manifest.get("versions") or {})


def mark_run_folder(output_dir: Path, version: str) -> None:
    """Claim ``output_dir`` for this run before anything else is written there (see is_run_folder)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RUN_MARKER).write_text(
        json.dumps({"written_by": f"llmkit {version}", "meaning": "an llmkit run folder"}) + "\n",
        encoding="utf-8",
    )


def foreign_entries(output_dir: Path) -> list[str]:
    """Names in ``output_dir`` that no llmkit run writes (the user's files), sorted."""
    return sorted(child.name for child in output_dir.iterdir() if not is_run_entry(child.name))


def clear_run_folder(output_dir: Path) -> list[str]:
    """Delete what earlier runs wrote into ``output_dir`` (for ``--overwrite``); return the names kept.

    Only :data:`RUN_FOLDER_ENTRIES` go: files the user put there stay, and so does the folder itself.
    """
    if not output_dir.is_dir():
        return []
    for child in output_dir.iterdir():
        if not is_run_entry(child.name):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return foreign_entries(output_dir)


def remove_weights(output_dir: Path) -> None:
    """Delete the model weights an llmkit run wrote into ``output_dir`` (:data:`WEIGHT_ENTRIES`); its metrics,
    recipe, report, config and tokenizer stay. A folder that holds no llmkit run is left alone."""
    if not output_dir.is_dir() or not is_run_folder(output_dir):
        return
    for child in output_dir.iterdir():
        weights = any(fnmatch.fnmatchcase(child.name, pattern) for pattern in WEIGHT_ENTRIES)
        if not weights or not is_run_entry(child.name):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


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
