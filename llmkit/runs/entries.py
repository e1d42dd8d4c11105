"""What a run folder holds: every entry a run writes, the marker that says llmkit wrote it, checkpoint names.

:data:`RUN_FOLDER_ENTRIES` lists everything a run writes, so ``--overwrite`` deletes those entries and
nothing else, and a folder llmkit did not write is never touched. Each ``checkpoint-N`` that exists is
complete: llmkit's Trainers stage a checkpoint and rename it into place (``llmkit.training.checkpoints``,
which also decides what a run resumes from).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path

from llmkit.models.adaptation import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MERGED_DIR, MODEL_CONFIG_FILE
from llmkit.models.setfit_section import HEAD_FILE
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
    # a sentence-transformers folder (task: embedding): its modules, each module's folder (1_Pooling, ...)
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "[0-9]_*",
    HEAD_FILE,  # a SetFit run's head beside its sentence-transformers body
)


#: The entries of RUN_FOLDER_ENTRIES that hold model weights: a full model's, an adapter's, a merged model and
#: checkpoints. `llmkit sweep` removes them from the trials it does not keep, leaving the rest of the run.
WEIGHT_ENTRIES = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    ADAPTER_WEIGHTS_FILE,
    HEAD_FILE,
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
