"""The spine: recipe -> data -> model -> ``Trainer`` -> saved model + metrics.

Every task runs through :func:`run`; a task only supplies the hooks of ``llmkit.tasks.base.Task``.
All user input is validated before anything is written, so a bad recipe never clobbers a folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.checkpoints import (
    check_fingerprint,
    checkpoint_to_resume,
    clear_run_folder,
    crash_safe_trainer,
    mark_run_folder,
    stop_on_non_finite_loss,
)
from llmkit.config import Recipe, dump_recipe, load_recipe, may_have_validation
from llmkit.data import Split, load_splits
from llmkit.distributed import (
    Machine,
    check_sharding,
    device_settings,
    inference_device,
    is_main_process,
    load_dtype,
    one_gpu_per_process,
    probe_machine,
    run_precision,
    world_size,
)
from llmkit.env import library_versions
from llmkit.errors import LlmkitError
from llmkit.models import cache_dir, check_weights, resolve_model
from llmkit.progress import interactive, log, log_lines_callback, quiet_library_progress, timed_step
from llmkit.report import (
    LOG_HISTORY_FILE,
    RUN_STATS_FILE,
    data_statistics,
    quality_metrics,
    sample_predictions,
    write_report,
)
from llmkit.sampling import length_grouping_trainer
from llmkit.tasks import Task, get_task_class

METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.yaml"
MANIFEST_FILE = "manifest.json"
#: TensorBoard event files (``tensorboard --logdir OUTPUT_DIR/tensorboard``).
TENSORBOARD_DIR = "tensorboard"
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
#: Weight files: the model's fingerprint notes their size and time (hashing gigabytes would take minutes).
WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx"}
)
TOKENIZED_DIR = "tokenized"
#: ``.{key}-{pid}``: a cache entry being written by process ``pid`` (renamed into place when whole).
CACHE_STAGING = re.compile(r"^\.([0-9a-f]{20})-(\d+)$")
#: A staging folder this old is left over even if its process id is in use again.
STALE_STAGING_SECONDS = 24 * 3600


@dataclass
class FinetuneResult:
    """What a run produced: its metrics (flat, Trainer-style keys) and the saved model folder."""

    metrics: dict[str, float]
    output_dir: Path

    def quality_metrics(self) -> dict[str, float]:
        """Eval/test scores without the timing entries, e.g. {'eval_accuracy': 0.87, ...}."""
        return quality_metrics(self.metrics, with_train_loss=False)


def finetune(
    recipe: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    overwrite: bool | None = None,
) -> FinetuneResult:
    """Fine-tune from a recipe (file path, bundled name, dict, or None for the default) and save the model.

    ``overrides`` are dotted ``key=value`` strings, as on the command line. Returns the metrics and
    the output folder; raises :class:`llmkit.LlmkitError` for anything the user can fix.
    """
    resolved = load_recipe(recipe, overrides)
    if overwrite is not None:
        resolved.overwrite = overwrite
    return run(resolved)


def run(recipe: Recipe) -> FinetuneResult:
    """Run a validated recipe end to end."""
    from transformers import set_seed

    started = time.perf_counter()
    task: Task = get_task_class(recipe.task)(recipe.data)
    output_dir = Path(recipe.output_dir)
    resume_from = checkpoint_to_resume(output_dir, recipe.training["resume"], recipe.overwrite, METRICS_FILE)
    # settings fail before data loads
    machine = probe_machine()
    settings = {"arguments_class": task.arguments_class(), "machine": machine}
    args = training_arguments(recipe, output_dir, has_eval=may_have_validation(recipe.data), **settings)

    splits = load_splits(recipe.data, seed=recipe.training["seed"])
    if "validation" not in splits and args.eval_strategy != "no":  # a dataset without a validation split
        args = training_arguments(recipe, output_dir, has_eval=False, **settings)
    task.check_data(splits)
    model_path = resolve_model(recipe.model, **recipe.safety_options())
    task.check_model(model_path)
    load_options = {
        **check_weights(model_path, recipe.model_options["allow_pickle"]),
        "trust_remote_code": recipe.model_options["trust_remote_code"],
        "dtype": load_dtype(recipe.model_options["dtype"]),
    }
    tokenizer = load_tokenizer(model_path, trust_remote_code=recipe.model_options["trust_remote_code"])
    task.prepare_tokenizer(tokenizer)  # on every run: encodings may come from the cache
    sizes = ", ".join(f"{role} {len(split.dataset)}" for role, split in splits.items())
    processes = f", {world_size()} processes" if world_size() > 1 else ""
    log(f"task {recipe.task}, model {recipe.model} ({model_path}), rows: {sizes}{processes}")
    precision = run_precision(recipe.training, recipe.user_training, machine, f"recipe {recipe.source}")
    log(f"precision {precision.precision} on {machine.kind}: {precision.reason}")
    row_digests = {role: rows_digest(split.dataset) for role, split in splits.items()}
    fingerprint = run_fingerprint(recipe, row_digests, model_path)
    if resume_from is not None:
        explicit = recipe.training["resume"] not in ("auto", "never")
        warning = check_fingerprint(resume_from, fingerprint, explicit=explicit)
        if warning:
            log(f"warning: {warning}")

    encoded = {}
    for role, split in splits.items():
        # in a terminal datasets' bar redraws in place; in a log it would print a line per update
        with (
            timed_step(f"tokenizing {role} ({len(split.dataset):,} rows)"),
            quiet_library_progress(keep_datasets_bars=interactive()),
        ):
            encoded[role] = encode_cached(task, split, tokenizer, model_path, recipe, args, row_digests[role])
    with quiet_library_progress():
        set_seed(recipe.training["seed"])
        model = load_model(task, model_path, **load_options)
    data_counts = {}  # e.g. truncated documents per split
    for role, dataset in encoded.items():
        data_counts.update(task.encoding_metrics(role, dataset))
        encoded[role] = task.prepare_evaluation(role, splits[role], dataset)

    trainer = length_grouping_trainer(crash_safe_trainer(task.trainer_class()))(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
        callbacks=[
            divergence_guard := stop_on_non_finite_loss(),
            *tensorboard_callbacks(report_targets(recipe.training["report_to"], "")[1], output_dir),
            *early_stopping_callbacks(recipe.training["early_stopping_patience"]),
        ],
    )
    trainer.run_fingerprint = fingerprint
    if args.disable_tqdm:  # no bars: throttled stderr lines instead of a printed dict per log (stdout)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(log_lines_callback())
    with args.main_process_first(desc="preparing output_dir"):
        if is_main_process():
            prepare_output_dir(recipe, output_dir)
    if resume_from is not None:
        log(f"resuming from {resume_from}")
    prepared = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if divergence_guard.problem:
        raise LlmkitError(divergence_guard.problem)
    trained = time.perf_counter()
    metrics: dict[str, float] = {**train_output.metrics, **data_counts}
    if metrics.get("num_input_tokens_seen") and metrics.get("train_runtime"):
        tokens, runtime = metrics["num_input_tokens_seen"], metrics["train_runtime"]
        metrics["train_tokens_per_second"] = round(tokens / runtime, 1)
    if args.eval_on_start:
        metrics.update(metrics_before_training(trainer.state.log_history))
    if "validation" in encoded:
        metrics.update(evaluate(trainer, task, encoded["validation"], "eval"))
    if "test" in encoded and "labels" in encoded["test"].column_names:
        metrics.update(evaluate(trainer, task, encoded["test"], "test"))

    evaluated = time.perf_counter()

    save_final_model(trainer, output_dir)
    if not is_main_process():
        return FinetuneResult(metrics=metrics, output_dir=output_dir)
    write_json_atomic(output_dir / LOG_HISTORY_FILE, trainer.state.log_history)
    stats = {
        "data": data_statistics(task, splits, encoded, recipe.data["max_length"]),
        "samples": report_samples(task, model, tokenizer, splits),
        "timing": {
            "prepare_seconds": round(prepared - started, 2),
            "train_seconds": round(trained - prepared, 2),
            "evaluate_seconds": round(evaluated - trained, 2),
        },
    }
    if "test" in encoded and "labels" not in encoded["test"].column_names:
        write_jsonl(
            output_dir / "test_predictions.jsonl",
            task.predict(model, tokenizer, splits["test"].dataset.to_list()),
        )
    write_manifest(output_dir / MANIFEST_FILE, recipe, splits, resume_from, args)
    stats["timing"]["total_seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(output_dir / RUN_STATS_FILE, stats)
    # metrics.json goes last: its presence marks a finished run (resume never touches one)
    write_json_atomic(output_dir / METRICS_FILE, metrics)
    record_latest_run(task.name, output_dir)
    write_run_report(output_dir)
    log(f"saved to {output_dir}")
    return FinetuneResult(metrics=metrics, output_dir=output_dir)


def prepare_output_dir(recipe: Recipe, output_dir: Path) -> None:
    """--overwrite: delete what the earlier run wrote (only that); then mark the folder as this run's.

    recipe.yaml is written now, so even a run killed before its first checkpoint says what it was.
    """
    import llmkit

    if recipe.overwrite:
        kept = clear_run_folder(output_dir)
        if kept:
            shown = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
            log(f"--overwrite kept {len(kept)} file(s) in {output_dir} that llmkit did not write: {shown}")
    mark_run_folder(output_dir, llmkit.__version__)
    dump_recipe(recipe, output_dir / RECIPE_FILE)


def run_fingerprint(recipe: Recipe, row_digests: dict[str, str], model_path: Path) -> dict[str, Any]:
    """What a checkpoint's run was: the recipe (less keys that may change on resume), data, model.

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


def report_samples(task: Task, model, tokenizer, splits: dict[str, Split]) -> list[dict[str, str]]:
    """A few predictions for report.md; a row the task cannot predict on costs the samples, not the run."""
    try:
        with quiet_library_progress(errors_only=True):
            return sample_predictions(task, model, tokenizer, splits)
    except LlmkitError as exc:
        log(f"warning: no sample predictions for the report ({exc})")
        return []


def write_run_report(output_dir: Path) -> None:
    """report.md, plots and the model card. The model and metrics are saved by now: a failure here is
    reported in one line (and `llmkit report DIR` retries), it does not fail the finished run."""
    try:
        with timed_step("writing report.md, plots and the model card (README.md)"):
            write_report(output_dir)
    except Exception as exc:  # any report problem must not lose a finished training run
        log(f"warning: report not written ({type(exc).__name__}: {exc}); retry: llmkit report {output_dir}")


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
            f"{where}: training.report_to asks for tensorboard, which is not installed; "
            f"`pip install tensorboard` (or llmkit's `tensorboard` extra), or set training.report_to=auto"
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
            "rows": {role: len(split.dataset) for role, split in splits.items()},
            "versions": {"python": platform.python_version(), **versions},
            "world_size": world_size(),
            "device": args.device.type,
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "resumed_from": str(resumed_from) if resumed_from else None,
            "command": sys.argv,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate(trainer, task: Task, dataset, prefix: str) -> dict[str, float]:
    metrics = trainer.evaluate(dataset, metric_key_prefix=prefix)
    if task.reports_perplexity and f"{prefix}_loss" in metrics:
        metrics[f"{prefix}_perplexity"] = math.exp(min(metrics[f"{prefix}_loss"], 50.0))
    return metrics


def latest_runs_file() -> Path:
    return cache_dir() / "latest-runs.json"


def record_latest_run(task_name: str, output_dir: Path) -> None:
    """Remember the newest output per task, so demos (`llmkit fill-mask`) can default to it."""
    path = latest_runs_file()
    try:
        runs = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        runs = {}
    runs[task_name] = str(output_dir.resolve())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:  # a convenience for the demos: the finished run must not fail on it
        log(f"warning: cannot record the newest {task_name} run in {path} ({exc.strerror or exc})")


def latest_run(task_name: str) -> Path | None:
    """The newest output folder of a task that still exists, or None."""
    try:
        runs = json.loads(latest_runs_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    folder = runs.get(task_name)
    return Path(folder) if folder and (Path(folder) / "config.json").exists() else None


def metrics_before_training(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The untrained model's scores from ``training.eval_on_start``, as ``eval_before_<metric>``."""
    first = next((entry for entry in log_history if "eval_loss" in entry), {})
    return {
        "eval_before_" + key.removeprefix("eval_"): value
        for key, value in first.items()
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
    }


def load_tokenizer(model_path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmkitError(
            f"model folder {model_path}: cannot load its tokenizer ({first_line}); "
            f"save one there with tokenizer.save_pretrained"
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LlmkitError(
                f"model folder {model_path}: the tokenizer has neither a pad nor an end-of-sequence token, "
                f"so batches cannot be padded; add one (tokenizer.add_special_tokens) and save it there"
            )
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only models ship without a pad token
    return tokenizer


def load_model(task: Task, model_path: Path, **load_options: Any):
    """Load through the task's Auto class; new heads are announced once instead of a wall of warnings."""
    try:
        with quiet_library_progress(errors_only=True):
            model = task.load_model(model_path, **load_options)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"model folder {model_path}: cannot load it for {task.name} ({first_line}); check the folder"
        ) from None
    return model


def load_for_inference(task: Task, model_path: Path, **load_options: Any):
    """``load_model`` for predict and the demos: eval mode, on the GPU when there is one."""
    return load_model(task, model_path, **load_options).to(inference_device()).eval()


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


def encode_cached(
    task: Task, split: Split, tokenizer, model_path: Path, recipe: Recipe, args, rows: str | None = None
) -> Any:
    """Tokenize a split once: the main process encodes and saves it, other processes (and reruns) load it.

    ``rows`` is the split's :func:`rows_digest` when the caller has it. A cache that cannot be read or
    written costs time, never the run.
    """
    key = tokenized_cache_key(task, split, model_path, recipe, rows or rows_digest(split.dataset))
    folder = cache_dir() / TOKENIZED_DIR / key
    with args.main_process_first(desc=f"tokenizing {split.role}"):
        cached = load_cached(folder)
        if cached is not None:
            return cached
        encoded = task.encode(split.dataset, tokenizer)
        if is_main_process():
            save_to_cache(encoded, folder)
        return encoded


def tokenized_cache_key(task: Task, split: Split, model_path: Path, recipe: Recipe, rows: str) -> str:
    """A digest of everything that determines a split's encoded rows.

    The rows themselves (after carving and filtering), the task with its data settings and what it
    derived from other splits (e.g. the label list of the training split), every tokenizer file, the
    tokenizer libraries' versions, and llmkit's version and source code.
    """
    import llmkit

    identity = {
        "rows": rows,
        "seed": recipe.training["seed"],
        "task": task.name,
        "data": {k: v for k, v in recipe.data.items() if k not in ("train", "validation", "test")},
        "derived": task.encoding_state(),
        "tokenizer": tokenizer_files_digest(model_path),
        "libraries": library_versions(("transformers", "tokenizers", "datasets")),
        "version": llmkit.__version__,
        "code": package_code_digest(),  # an edited encoder (an editable install) must not reuse old rows
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:20]


def rows_digest(dataset) -> str:
    """A digest of a dataset's rows: its Arrow table and the indices that pick rows from it (carving,
    subsets, skipped rows). Hashing the picked rows one by one instead takes seconds per split."""
    digest = hashlib.sha256(json.dumps(dataset.features.to_dict(), sort_keys=True).encode())
    indices = getattr(dataset, "_indices", None)
    for table in (dataset.data, *([indices] if indices is not None else [])):
        for batch in table.to_batches():
            digest.update(batch.serialize())
    return digest.hexdigest()[:20]


def tokenizer_files_digest(model_path: Path) -> str:
    """A digest of every file in the model folder but the weights: tokenizer.json, tokenizer_config.json,
    chat_template.jinja, vocabularies, special tokens -- whatever the tokenizer is loaded from."""
    extra = model_path / "additional_chat_templates"
    files = [p for p in model_path.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES]
    if extra.is_dir():
        files += [p for p in extra.iterdir() if p.is_file()]
    return files_digest(files, relative_to=model_path)


def files_digest(files: list[Path], relative_to: Path | None = None) -> str:
    """sha256 over the names and contents of ``files`` (in name order)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(relative_to) if relative_to else Path(path.name)
        digest.update(name.as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:20]


def load_cached(folder: Path) -> Any:
    """The encoded split saved in ``folder``, or None when there is none (or it cannot be read)."""
    from datasets import load_from_disk

    if not (folder / "dataset_info.json").exists():
        return None
    try:
        return load_from_disk(str(folder))
    except Exception:  # a damaged entry is encoded again, as if it were not there
        return None


#: Cache folders a write already failed in (this process warns once for each).
_UNWRITABLE_CACHES: set[Path] = set()


def save_to_cache(encoded: Any, folder: Path) -> None:
    """Save an encoded split under a staging name, then rename it into place when whole.

    A failure (read-only home, full disk, LLMKIT_CACHE under a file) is one warning, and the run goes
    on with the rows it has; leftovers of killed runs are cleared on the way.
    """
    staging = folder.with_name(f".{folder.name}-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(folder.parent)
        encoded.save_to_disk(str(staging))
        staging.rename(folder)
    except Exception as exc:  # any failure of an optional cache must not fail the run
        shutil.rmtree(staging, ignore_errors=True)
        if (folder / "dataset_info.json").exists():
            return  # another run saved it first
        if folder.parent not in _UNWRITABLE_CACHES:
            _UNWRITABLE_CACHES.add(folder.parent)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log(
                f"warning: cannot write the tokenization cache in {folder.parent} ({reason}); going on "
                f"without it (set LLMKIT_CACHE to a writable folder to keep encoded splits for reruns)"
            )


def remove_stale_staging(tokenized: Path) -> None:
    """Remove cache entries left half-written by killed runs: llmkit's ``.{key}-{pid}`` folders whose
    process is gone, or that are older than a day (the id may be in use again)."""
    now = time.time()
    for child in tokenized.iterdir():
        match = CACHE_STAGING.match(child.name)
        if not match or not child.is_dir() or int(match.group(2)) == os.getpid():
            continue
        try:
            stale = now - child.stat().st_mtime > STALE_STAGING_SECONDS
        except OSError:
            continue  # removed meanwhile
        if stale or not process_alive(int(match.group(2))):
            shutil.rmtree(child, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Is process ``pid`` running on this machine? (Windows: assumed, signals would end it.)"""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@functools.cache
def package_code_digest() -> str:
    """A digest of llmkit's own source files, read once per process (the running code cannot change)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:20]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
