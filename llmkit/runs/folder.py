"""The run folder: what a finished run leaves in ``output_dir`` and how it is written and read back.

One home for the layout: the file names, the atomic JSON writes, the manifest, the final model's
staging, the newest run of a task under ./runs (for the demos), and :func:`read_run` for anything that
reads a finished folder later (``llmkit report``, the model card). The list of entries ``--overwrite``
may delete: ``llmkit.runs.entries.RUN_FOLDER_ENTRIES``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llmkit.core.devices import is_main_process, world_size
from llmkit.core.digests import file_sha256
from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log, quiet_library_progress
from llmkit.core.versions import library_versions
from llmkit.runs.entries import RUN_MARKER, clear_run_folder, mark_run_folder

if TYPE_CHECKING:
    from llmkit.data.files import Split
    from llmkit.recipe.loader import Recipe
    from llmkit.tasks import Task

METRICS_FILE = "metrics.json"  # written last: its presence marks a finished run
RECIPE_FILE = "recipe.yaml"
MANIFEST_FILE = "manifest.json"
LOG_HISTORY_FILE = "log_history.json"
RUN_STATS_FILE = "run_stats.json"
REPORT_FILE = "report.md"
MODEL_CARD_FILE = "README.md"
TEST_PREDICTIONS_FILE = "test_predictions.jsonl"
#: TensorBoard event files (``tensorboard --logdir OUTPUT_DIR/tensorboard``).
TENSORBOARD_DIR = "tensorboard"
#: Metric keys that are timings, not quality: they go to the report's timing section.
TIMING_SUFFIXES = ("_runtime", "_per_second")
#: A model folder has one of these: a full model, or an adapter on a base (``llmkit.models.adaptation``).
MODEL_FOLDER_MARKERS = ("config.json", "adapter_config.json")


# -- writing (during a run) -------------------------------------------------------------------------
def prepare_output_dir(recipe: Recipe, output_dir: Path) -> None:
    """--overwrite: delete what the earlier run wrote (only that); then mark the folder as this run's.

    recipe.yaml is written now, so even a run killed before its first checkpoint says what it was.
    """
    import llmkit
    from llmkit.recipe.loader import dump_recipe

    if recipe.overwrite:
        kept = clear_run_folder(output_dir)
        if kept:
            shown = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
            log(f"--overwrite kept {len(kept)} file(s) in {output_dir} that llmkit did not write: {shown}")
    mark_run_folder(output_dir, llmkit.__version__)
    dump_recipe(recipe, output_dir / RECIPE_FILE)


def save_final_model(trainer, output_dir: Path) -> None:
    """Write the model + tokenizer into a staging folder, then move the files into output_dir.

    Every rank calls it (sharded models gather their weights); rank 0 writes.
    """
    staging = output_dir / ".final"
    with quiet_library_progress():
        trainer.save_model(str(staging))
    if is_main_process():
        for item in staging.iterdir():
            os.replace(item, output_dir / item.name)
        staging.rmdir()
    trainer.accelerator.wait_for_everyone()


def write_json_atomic(path: Path, payload: Any) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(staging, path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def write_manifest(
    path: Path, recipe: Recipe, splits: dict[str, Split], resumed_from: Path | None, args: Any
) -> None:
    """What produced this folder: the recipe, package versions, data files and datasets, seed, command,
    and the device and precision the run used."""
    import platform

    versions = library_versions(
        ("llmkit", "torch", "transformers", "datasets", "accelerate", "evaluate", "tokenizers")
    )
    files, sources = {}, {}
    for role, split in splits.items():
        if split.hub is not None:  # a dataset split: its id, config, revision, split and hub commit
            sources[role] = {**split.hub.record(), **({"carved": True} if split.carved else {})}
        elif split.path.is_file() and str(split.path) not in files:
            files[str(split.path)] = {"sha256": file_sha256(split.path), "bytes": split.path.stat().st_size}
    write_json_atomic(
        path,
        {
            "recipe": recipe.to_dict(),
            "seed": recipe.training["seed"],
            "data_files": files,
            "data_sources": sources,
            "rows": {role: split.size for role, split in splits.items()},
            "versions": {"python": platform.python_version(), **versions},
            "world_size": world_size(),
            "device": args.device.type,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "resumed_from": str(resumed_from) if resumed_from else None,
            "command": sys.argv,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


# -- the newest run of each task here (the demos' default model) -----------------------------------
def newest_run_here(task_name: str) -> Path | None:
    """The newest finished run of ``task_name`` under ./runs (where output_dir puts runs unless told
    otherwise), or None: what a demo answers with when no --model is given.

    Only the current folder's runs count: what some other project on the machine trained last must not
    answer here. Newest is by metrics.json, which a run writes last.
    """
    from llmkit.recipe.loader import RUNS_DIR

    found = [folder for folder in finished_runs(Path(RUNS_DIR)) if run_task(folder) == task_name]
    return max(found, key=lambda folder: (folder / METRICS_FILE).stat().st_mtime_ns, default=None)


def finished_runs(root: Path) -> list[Path]:
    """Folders under ``root`` holding a finished run with a model; not the folders inside a run
    (checkpoints, merged)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if RECIPE_FILE in files or RUN_MARKER in files:
            subfolders.clear()
            if METRICS_FILE in files and any(marker in files for marker in MODEL_FOLDER_MARKERS):
                found.append(Path(folder))
    return found


def run_task(folder: Path) -> str | None:
    """The task a run folder's recipe names, aliases resolved (None when it cannot be read)."""
    from llmkit.tasks import TASK_ALIASES

    try:
        recipe = yaml.safe_load((folder / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    task = recipe.get("task") if isinstance(recipe, dict) else None
    return TASK_ALIASES.get(task, task) if isinstance(task, str) else None


# -- reading (any time later) -----------------------------------------------------------------------
def quality_metrics(metrics: dict[str, Any], with_train_loss: bool = True) -> dict[str, Any]:
    """Scores (losses, accuracies, ...) without timings and counters."""
    prefixes = ("eval_", "test_", "train_loss") if with_train_loss else ("eval_", "test_")
    return {
        key: value
        for key, value in metrics.items()
        if key.startswith(prefixes) and not key.endswith(TIMING_SUFFIXES)
    }


@dataclass
class RunRecord:
    """Everything a finished run's folder says about it; optional files are empty when absent."""

    output_dir: Path
    recipe: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    log_history: list[dict[str, Any]] | None
    stats: dict[str, Any]

    @property
    def name(self) -> str:
        return self.output_dir.resolve().name

    @property
    def pretraining(self) -> dict[str, Any] | None:
        """How a from-scratch model was built (``llmkit.models.scratch``); None for a fine-tuned one."""
        return self.stats.get("pretraining") or None

    @property
    def model_name(self) -> str:
        """The model the run started from: the recipe's model, the size it pre-trained from scratch, or the
        model whose layers a student kept (``model.init_from``)."""
        if self.pretraining:
            return str(self.pretraining.get("name"))
        model = self.recipe.get("model")
        return str((model.get("name") or model.get("init_from")) if isinstance(model, dict) else model)


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmkitError(f"{path}: cannot be read ({exc}); rerun the training or remove the file") from None


def read_run(output_dir: str | Path) -> RunRecord:
    """Read a finished run's files; a folder that is not one is a one-line error."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise LlmkitError(
            f"{folder}: no such folder; give the output_dir of a finished `llmkit finetune` run"
        )
    if not (folder / METRICS_FILE).exists() or not (folder / RECIPE_FILE).exists():
        raise LlmkitError(
            f"{folder}: not a finished llmkit run (no {METRICS_FILE} or {RECIPE_FILE}); give the output_dir "
            f"of a run that `llmkit finetune` completed"
        )
    try:
        recipe = yaml.safe_load((folder / RECIPE_FILE).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise LlmkitError(f"{folder / RECIPE_FILE}: not valid YAML ({exc})") from None
    return RunRecord(
        output_dir=folder,
        recipe=recipe,
        metrics=_read_json(folder / METRICS_FILE, {}),
        manifest=_read_json(folder / MANIFEST_FILE, {}),
        log_history=_read_json(folder / LOG_HISTORY_FILE, None),
        stats=_read_json(folder / RUN_STATS_FILE, {}),
    )


def describe_data_source(source: dict[str, Any]) -> str:
    """A manifest's dataset record as text: dataset `id` (config, revision) split 'x', commit, carved."""
    from llmkit.data.hub import HubSource

    hub = HubSource.from_record(source)
    text = f"dataset `{hub.dataset}`{hub.describe()[len(hub.dataset) :]}"
    text += f", commit {hub.commit[:12]}" if hub.commit else ""
    return text + (" (carved from train)" if source.get("carved") else "")


def headline_metric(run: RunRecord, task_cls: type[Task]) -> str:
    """The task's headline metric, or the first of its others this run reports (e.g. spearman)."""
    for name in (task_cls.headline_metric, *task_cls.other_headline_metrics):
        if f"eval_{name}" in run.metrics or f"test_{name}" in run.metrics:
            return name
    return task_cls.headline_metric
