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
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.checkpoints import checkpoint_to_resume, crash_safe_trainer, stop_on_non_finite_loss
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
    sizes = ", ".join(f"{role} {len(split.dataset)}" for role, split in splits.items())
    processes = f", {world_size()} processes" if world_size() > 1 else ""
    log(f"task {recipe.task}, model {recipe.model} ({model_path}), rows: {sizes}{processes}")
    precision = run_precision(recipe.training, recipe.user_training, machine, f"recipe {recipe.source}")
    log(f"precision {precision.precision} on {machine.kind}: {precision.reason}")

    encoded = {}
    for role, split in splits.items():
        # in a terminal datasets' bar redraws in place; in a log it would print a line per update
        with (
            timed_step(f"tokenizing {role} ({len(split.dataset):,} rows)"),
            quiet_library_progress(keep_datasets_bars=interactive()),
        ):
            encoded[role] = encode_cached(task, split, tokenizer, model_path, recipe, args)
    with quiet_library_progress():
        set_seed(recipe.training["seed"])
        model = load_model(task, model_path, **load_options)
    data_counts = {}  # e.g. truncated documents per split
    for role, dataset in encoded.items():
        data_counts.update(task.encoding_metrics(role, dataset))

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
    if args.disable_tqdm:  # no bars: throttled stderr lines instead of a printed dict per log (stdout)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(log_lines_callback())
    with args.main_process_first(desc="clearing output_dir"):
        if recipe.overwrite and output_dir.exists() and is_main_process():
            shutil.rmtree(output_dir)
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
    dump_recipe(recipe, output_dir / RECIPE_FILE)
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
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("llmkit", "torch", "transformers", "datasets", "accelerate", "evaluate", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")


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


def encode_cached(task: Task, split: Split, tokenizer, model_path: Path, recipe: Recipe, args) -> Any:
    """Tokenize a split once: the main process encodes and saves it, other processes (and reruns) load it.

    The cache key covers everything the encoding depends on: the file (path, size, mtime), which of its
    rows the split holds, the task's data settings, the tokenizer, and llmkit's version and source code.
    """
    from datasets import load_from_disk

    import llmkit

    stat = split.path.stat()
    tokenizer_file = model_path / "tokenizer.json"
    identity = {
        "file": [str(split.path.resolve()), stat.st_size, stat.st_mtime_ns],
        "role": split.role,
        "carved": split.carved,
        "rows": len(split.dataset),
        "which_rows": split.file_rows,  # carving, subsets and skipped rows
        "seed": recipe.training["seed"],
        "task": task.name,
        "data": {k: v for k, v in recipe.data.items() if k not in ("train", "validation", "test")},
        "tokenizer": [
            str(model_path.resolve()),
            len(tokenizer),
            tokenizer_file.stat().st_mtime_ns if tokenizer_file.exists() else 0,
        ],
        "version": llmkit.__version__,
        "code": package_code_digest(),  # an edited encoder (an editable install) must not reuse old rows
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
    folder = cache_dir() / "tokenized" / key
    with args.main_process_first(desc=f"tokenizing {split.role}"):
        if (folder / "dataset_info.json").exists():
            return load_from_disk(str(folder))
        encoded = task.encode(split.dataset, tokenizer)
        if is_main_process():
            staging = folder.with_name(f".{key}-{os.getpid()}")
            encoded.save_to_disk(str(staging))
            try:
                staging.rename(folder)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)  # another run saved it first
        return encoded


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
