"""The spine: recipe -> data -> model -> ``Trainer`` -> saved model + metrics.

Every task runs through :func:`run`; a task only supplies the hooks of ``llmkit.tasks.base.Task``.
All user input is validated before anything is written, so a bad recipe never clobbers a folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.core.devices import (
    Machine,
    PrecisionChoice,
    confirm_sharding,
    is_main_process,
    load_dtype,
    run_precision,
    world_size,
)
from llmkit.core.errors import LlmkitError, RunInterrupted
from llmkit.core.progress import interactive, log, log_lines_callback, quiet_library_progress, timed_step
from llmkit.data.files import Split, load_splits, sample_texts
from llmkit.models.adaptation import (
    ADAPTER_WEIGHTS_FILE,
    MERGED_DIR,
    adapt_model,
    save_adapter_extras,
    trainable_share,
)
from llmkit.models.resolve import check_weights, load_model, load_tokenizer, resolve_model
from llmkit.models.scratch import ScratchBuild, build_from_scratch, scratch_record
from llmkit.models.student import build_student, student_record
from llmkit.recipe.loader import Recipe, load_recipe
from llmkit.runs.folder import (
    LOG_HISTORY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    RUN_STATS_FILE,
    TEST_PREDICTIONS_FILE,
    prepare_output_dir,
    quality_metrics,
    save_final_model,
    write_json_atomic,
    write_jsonl,
    write_manifest,
)
from llmkit.runs.report import data_statistics, sample_predictions, write_report
from llmkit.tasks import Task, build_task
from llmkit.tasks.base import checked_splits
from llmkit.training.arguments import (
    check_machine_settings,
    early_stopping_callbacks,
    report_targets,
    tensorboard_callbacks,
    training_arguments,
)
from llmkit.training.checkpoints import (
    check_fingerprint,
    checkpoint_to_resume,
    crash_safe_trainer,
    interruption_message,
    run_fingerprint,
    stop_on_non_finite_loss,
)
from llmkit.training.distillation import (
    Distillation,
    distilling_trainer,
    load_distillation,
    read_unlabelled,
    teacher_for,
    training_rows,
    without_labels,
)
from llmkit.training.distillation import describe as describe_distillation
from llmkit.training.loss_scaling import step_weighted_trainer
from llmkit.training.sampling import length_grouping_trainer
from llmkit.training.setfit import SetFitPlan, load_setfit_model, setfit_plan, setfit_trainer
from llmkit.training.streaming import encode_stream
from llmkit.training.teacher_cache import ROW_COLUMN, teacher_cache_folder
from llmkit.training.token_cache import encode_cached, split_digest


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
    callbacks: list[Any] | tuple[Any, ...] = (),
) -> FinetuneResult:
    """Fine-tune from a recipe (file path, bundled name, dict, or None for the default) and save the model.

    ``overrides`` are dotted ``key=value`` strings, as on the command line. ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects for the run's Trainer (`llmkit sweep` reports each evaluation to
    Optuna through one). Returns the metrics and the output folder; raises :class:`llmkit.LlmkitError` for
    anything the user can fix.
    """
    resolved = load_recipe(recipe, overrides)
    if overwrite is not None:
        resolved.overwrite = overwrite
    return run(resolved, callbacks)


def run(recipe: Recipe, callbacks: list[Any] | tuple[Any, ...] = ()) -> FinetuneResult:
    """Run a validated recipe end to end: prepare, build the trainer, train and evaluate, save."""
    started = time.perf_counter()
    prepared = prepare(recipe)
    trainer = build_trainer(prepared, callbacks)
    with prepared.args.main_process_first(desc="preparing output_dir"):
        if is_main_process():
            prepare_output_dir(recipe, prepared.output_dir)
    timing = {"prepare_seconds": time.perf_counter() - started}
    try:
        metrics = train_and_evaluate(prepared, trainer, timing)
        save_run(prepared, trainer, metrics, timing, started)
    except KeyboardInterrupt as interrupt:
        message = interruption_message(prepared.output_dir, trainer.state.global_step)
        raise RunInterrupted(message) from interrupt
    return FinetuneResult(metrics=metrics, output_dir=prepared.output_dir)


@dataclass
class PreparedRun:
    """Everything a run has settled before its Trainer is built: settings, rows, tokenizer, model."""

    recipe: Recipe
    task: Task
    output_dir: Path
    args: Any
    machine: Machine
    precision: PrecisionChoice
    splits: dict[str, Split]
    encoded: dict[str, Any]
    tokenizer: Any
    model: Any
    fingerprint: dict[str, Any]
    resume_from: Path | None
    data_counts: dict[str, int] = field(default_factory=dict)
    model_path: Path | None = None
    #: The teacher and how the student learns from it (a ``distill:`` section); None: the labels alone.
    distillation: Distillation | None = None
    #: SetFit's two stages (a ``setfit:`` section) instead of end-to-end training; None: the Trainer's own.
    setfit: SetFitPlan | None = None


def model_folder(recipe: Recipe, task: Task, splits: dict[str, Split]) -> Path:
    """The model folder a run starts from: the recipe's model, one built from scratch, or some layers of
    another model (``model.init_from``); built ones are cached."""
    if recipe.student is not None:
        return build_student(recipe.student, **recipe.safety_options())
    if recipe.scratch is None:
        return resolve_model(recipe.model, **recipe.safety_options())
    seed = recipe.training["seed"]
    train = splits["train"]
    texts = task.pretraining_texts(train)  # what the tokenizer learns from; a stream: a seeded sample of it
    if train.stream is None:
        sampled = list(texts)
    else:
        sampled = sample_texts(texts, recipe.tokenizer["stream_sample"], seed)
    build = ScratchBuild(recipe.model, recipe.scratch, recipe.tokenizer, seed, task.scratch_style)
    return build_from_scratch(build, sampled, task.scratch_model_class)


def prepare(recipe: Recipe) -> PreparedRun:
    """Settings, data, tokenizer, encoded splits and the (adapted) model; every check before any write."""
    from transformers import set_seed

    task: Task = build_task(recipe.task, recipe.data, recipe.options)
    output_dir = Path(recipe.output_dir)
    resume_from = checkpoint_to_resume(output_dir, recipe.training["resume"], recipe.overwrite, METRICS_FILE)
    machine, settings, args, quantized = check_machine_settings(recipe, task)  # they fail before data loads
    where = f"recipe {recipe.source}"

    splits = load_splits(recipe.data, seed=recipe.training["seed"])
    if "validation" not in splits and args.eval_strategy != "no":  # a dataset without a validation split
        args = training_arguments(recipe, output_dir, has_eval=False, **settings)
    removed = checked_splits(task, splits, recipe.data, recipe.task)  # checked, fixed, sampled (data.shots)
    setfit = setfit_plan(recipe, task, splits["train"])  # what SetFit cannot train fails before any load
    model_path = model_folder(recipe, task, splits)  # the recipe's model, or one built from scratch
    task.check_model(model_path)
    load_options = {
        **check_weights(model_path, recipe.model_options["allow_pickle"]),
        "trust_remote_code": recipe.model_options["trust_remote_code"],
        "dtype": load_dtype(recipe.model_options["dtype"]),
        **quantized,
    }
    tokenizer = load_tokenizer(model_path, trust_remote_code=recipe.model_options["trust_remote_code"])
    precision = run_precision(recipe.training, recipe.user_training, machine, where)
    unlabelled = read_unlabelled(recipe, task)  # data.unlabelled: more rows, for the teacher alone to teach
    row_digests = {role: split_digest(split) for role, split in splits.items()}
    if unlabelled is not None:
        row_digests["unlabelled"] = split_digest(unlabelled)
    # the teacher: its labels and vocabulary checked, then loaded, before any encoding (a teacher without a
    # trained head is refused) and before the student's seeded start, which it leaves as it was; not loaded
    # at all when the cache holds its outputs on every training row
    teacher_path = teacher_for(recipe, task, tokenizer)
    distillation = None
    if teacher_path is not None:
        training = [splits["train"], *([unlabelled] if unlabelled is not None else [])]
        cache = teacher_cache(recipe, task, training, row_digests, model_path, teacher_path, precision)
        rows = [len(split.dataset) for split in training]  # the encoders keep a row per row
        distillation = load_distillation(recipe, task, teacher_path, cache, rows)
    task.prepare_tokenizer(tokenizer)  # on every run: encodings may come from the cache
    sizes = ", ".join(f"{role} {split.size}" for role, split in splits.items())
    processes = f", {world_size()} processes" if world_size() > 1 else ""
    log(f"task {recipe.task}, model {recipe.model} ({model_path}), rows: {sizes}{processes}")
    log(f"precision {precision.precision} on {machine.kind}: {precision.reason}")
    fingerprint = run_fingerprint(recipe, row_digests, model_path, teacher_path)
    if resume_from is not None:
        explicit = recipe.training["resume"] not in ("auto", "never")
        warning = check_fingerprint(resume_from, fingerprint, explicit=explicit)
        if warning:
            log(f"warning: {warning}")

    encoded = {}
    for role, split in splits.items():
        if split.stream is not None:  # encoded as training reads it: nothing to tokenize now, or to cache
            buffer = recipe.data["shuffle_buffer"]
            encoded[role] = encode_stream(task, split, tokenizer, recipe.training["seed"], buffer)
            continue
        # in a terminal datasets' bar redraws in place; in a log it would print a line per update
        with (
            timed_step(f"tokenizing {role} ({len(split.dataset):,} rows)"),
            quiet_library_progress(keep_datasets_bars=interactive()),
        ):
            encoded[role] = encode_cached(task, split, tokenizer, model_path, recipe, args, row_digests[role])
    data_counts = dict(removed)  # rows data.deduplicate/drop_leaks removed, truncated documents, ...
    for role, dataset in encoded.items():
        if splits[role].stream is None:
            data_counts.update(task.encoding_metrics(role, dataset))
            encoded[role] = task.prepare_evaluation(role, splits[role], dataset)

    if distillation is not None and unlabelled is not None:
        with (
            timed_step(f"tokenizing unlabelled ({len(unlabelled.dataset):,} rows)"),
            quiet_library_progress(keep_datasets_bars=interactive()),
        ):
            digest = row_digests["unlabelled"]
            taught = encode_cached(task, unlabelled, tokenizer, model_path, recipe, args, digest)
        with quiet_library_progress():  # labels of -100 in the training labels' shape: the teacher's alone
            distillation.unlabelled = without_labels(taught, encoded["train"])

    with quiet_library_progress():
        set_seed(recipe.training["seed"])
        if setfit is not None:
            model = load_setfit_model(task, model_path, recipe.data["max_length"], load_options)
        else:
            model = load_model(task, model_path, **load_options)
        model = adapt_model(model, recipe.peft, task, where, bool(args.gradient_checkpointing))
    if recipe.peft is not None:
        trainable, total = trainable_share(model)
        share = f"{trainable:,} of {total:,} parameters ({trainable / total:.2%})"
        log(f"LoRA r={recipe.peft['r']}: training {share}")
    if distillation is not None:
        log(describe_distillation(distillation))
    return PreparedRun(
        recipe=recipe,
        task=task,
        output_dir=output_dir,
        args=args,
        machine=machine,
        precision=precision,
        splits=splits,
        encoded=encoded,
        tokenizer=tokenizer,
        model=model,
        fingerprint=fingerprint,
        resume_from=resume_from,
        data_counts=data_counts,
        model_path=model_path,
        distillation=distillation,
        setfit=setfit,
    )


def teacher_cache(
    recipe: Recipe,
    task: Task,
    training: list[Split],
    row_digests: dict[str, str],
    model_path: Path,
    teacher_path: Path,
    precision: PrecisionChoice,
) -> Path | None:
    """The teacher-logit cache entry of the run's training rows (``distill.cache``); None: the teacher runs
    live. ``training``: the labelled split, then data.unlabelled's, as the Trainer gets them."""
    if not recipe.distill["cache"]:
        return None
    rows = [(split, row_digests[split.role]) for split in training]
    return teacher_cache_folder(recipe, task, rows, model_path, teacher_path, precision.precision)


def task_trainer_class(
    task: Task, distillation: Distillation | None = None, setfit: SetFitPlan | None = None
) -> type:
    """The task's Trainer as training and `llmkit evaluate` both run it: each micro-batch's loss weighed by
    its share of the step (llmkit.training.loss_scaling), batches grouped by length in training, evaluation in
    the split's order (llmkit.training.sampling); with a teacher, the loss it weighs is the distillation's
    (llmkit.training.distillation); with SetFit, training is its two stages (llmkit.training.setfit)."""
    trainer = task.trainer_class()
    soft_items: tuple[str, ...] = ()  # with unlabelled rows the soft loss is a mean over every row
    if distillation is not None:
        trainer = distilling_trainer(trainer, distillation)
        soft_items = (ROW_COLUMN,) if distillation.unlabelled is not None else ()
    if setfit is not None:
        trainer = setfit_trainer(trainer, setfit)
    return length_grouping_trainer(step_weighted_trainer(trainer, task.loss_targets(), soft_items))


def build_trainer(run: PreparedRun, callbacks: list[Any] | tuple[Any, ...] = ()):
    """The task's Trainer with llmkit's crash safety, length grouping, callbacks (llmkit's, then the
    caller's) and the run's fingerprint."""
    task, recipe = run.task, run.recipe
    divergence_guard = stop_on_non_finite_loss()
    trainer = crash_safe_trainer(task_trainer_class(task, run.distillation, run.setfit))(
        model=run.model,
        args=run.args,
        train_dataset=training_rows(run.encoded["train"], run.distillation),
        eval_dataset=run.encoded.get("validation"),
        data_collator=task.collator(run.tokenizer),
        processing_class=run.tokenizer,
        compute_metrics=task.compute_metrics(),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
        callbacks=[
            divergence_guard,
            *tensorboard_callbacks(report_targets(recipe.training["report_to"], "")[1], run.output_dir),
            *early_stopping_callbacks(recipe.training["early_stopping_patience"]),
            *callbacks,
        ],
    )
    confirm_sharding(trainer, f"recipe {recipe.source}")
    trainer.run_fingerprint = run.fingerprint
    trainer.divergence_guard = divergence_guard
    if run.args.disable_tqdm:  # no bars: throttled stderr lines instead of a printed dict per log (stdout)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(log_lines_callback())
    return trainer


def train_and_evaluate(run: PreparedRun, trainer, timing: dict[str, float]) -> dict[str, float]:
    """Train (resuming when there is a checkpoint to resume), then score validation and a labelled test."""
    if run.resume_from is not None:
        log(f"resuming from {run.resume_from}")
    began = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    if trainer.divergence_guard.problem:
        raise LlmkitError(trainer.divergence_guard.problem)
    timing["train_seconds"] = time.perf_counter() - began
    metrics: dict[str, float] = {**train_output.metrics, **run.data_counts}
    if metrics.get("num_input_tokens_seen") and metrics.get("train_runtime"):
        # the Trainer's clock includes the evaluation eval_on_start runs inside train(): not training time
        runtime = metrics["train_runtime"] - evaluation_on_start_seconds(trainer.state.log_history, run.args)
        metrics["train_tokens_per_second"] = round(metrics["num_input_tokens_seen"] / max(runtime, 1e-9), 1)
    if run.args.eval_on_start:
        metrics.update(metrics_before_training(trainer.state.log_history))
    began = time.perf_counter()
    rescored = run.task.after_training(trainer, run.encoded.get("validation"))
    if "validation" in run.encoded:
        # the last logged scores stand for the final weights unless after_training changed the scoring
        history, step = trainer.state.log_history, trainer.state.global_step
        scored = None if rescored else final_step_evaluation(history, step, run.args)
        if scored is not None:
            metrics.update(with_perplexity(run.task, scored, "eval"))
        else:
            metrics.update(evaluate(trainer, run.task, run.encoded["validation"], "eval"))
    test = run.encoded.get("test")
    if test is not None and has_targets(run.task, test):
        metrics.update(evaluate(trainer, run.task, test, "test"))
    timing["evaluate_seconds"] = time.perf_counter() - began
    return metrics


def save_run(
    run: PreparedRun, trainer, metrics: dict[str, float], timing: dict[str, float], started: float
) -> None:
    """The model (or adapter), then llmkit's files; metrics.json last, since it marks a finished run."""
    output_dir, task, model = run.output_dir, run.task, run.model
    save_final_model(trainer, output_dir)
    if not is_main_process():
        return
    save_adapter_extras(model, output_dir)
    write_json_atomic(output_dir / LOG_HISTORY_FILE, trainer.state.log_history)
    in_memory = {role: rows for role, rows in run.encoded.items() if run.splits[role].stream is None}
    stats = {
        "data": data_statistics(task, run.splits, in_memory, run.recipe.data["max_length"]),
        "samples": report_samples(task, model, run.tokenizer, run.splits),
        "timing": {key: round(value, 2) for key, value in timing.items()},
    }
    if (pretraining := scratch_record(run.model_path)) is not None:  # how a from-scratch model was built
        stats["pretraining"] = pretraining
    if (student := student_record(run.model_path)) is not None:  # the layers a student kept
        stats["student"] = student
    if run.distillation is not None:
        stats["distillation"] = run.distillation.record
    if completions := getattr(trainer, "completion_samples", None):  # GRPO: sampled as training went
        stats["completions"] = completions
    test = run.encoded.get("test")
    if test is not None and not has_targets(task, test):
        write_jsonl(
            output_dir / TEST_PREDICTIONS_FILE,
            task.rows_with_predictions(model, run.tokenizer, run.splits["test"].dataset.to_list()),
        )
    if run.recipe.peft is not None:
        stats["adapter"] = adapter_statistics(model, output_dir)
        if run.recipe.peft["merge"]:
            merge_into(model, run.tokenizer, output_dir / MERGED_DIR)
    write_manifest(output_dir / MANIFEST_FILE, run.recipe, run.splits, run.resume_from, run.args)
    stats["timing"]["total_seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(output_dir / RUN_STATS_FILE, stats)
    # metrics.json goes last: its presence marks a finished run (resume never touches one)
    write_json_atomic(output_dir / METRICS_FILE, metrics)
    write_run_report(output_dir)
    log(f"saved to {output_dir}")


def evaluation_on_start_seconds(log_history: list[dict[str, Any]], args) -> float:
    """How long ``training.eval_on_start``'s evaluation took (0 without it)."""
    if not args.eval_on_start:
        return 0.0
    first = next((entry for entry in log_history if "eval_runtime" in entry), {})
    return float(first.get("eval_runtime", 0.0))


def has_targets(task: Task, encoded) -> bool:
    return all(column in encoded.column_names for column in task.target_columns)


def adapter_statistics(model, output_dir: Path) -> dict[str, Any]:
    """Trainable share and the adapter file's size, for the report."""
    trainable, total = trainable_share(model)
    weights = output_dir / ADAPTER_WEIGHTS_FILE
    return {
        "trainable_parameters": trainable,
        "all_parameters": total,
        "adapter_bytes": weights.stat().st_size if weights.exists() else None,
    }


def merge_into(model, tokenizer, folder: Path) -> None:
    """``peft.merge: true``: the adapter merged into its base, a plain model folder beside the adapter."""
    with timed_step(f"merging the adapter into a full model in {folder}"), quiet_library_progress():
        merged = model.merge_and_unload()  # the end of the run: the trained model may change in place
        merged.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))


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


def evaluate(trainer, task: Task, dataset, prefix: str) -> dict[str, float]:
    return with_perplexity(task, trainer.evaluate(dataset, metric_key_prefix=prefix), prefix)


def with_perplexity(task: Task, metrics: dict[str, float], prefix: str) -> dict[str, float]:
    if task.reports_perplexity and f"{prefix}_loss" in metrics:
        metrics[f"{prefix}_perplexity"] = math.exp(min(metrics[f"{prefix}_loss"], 50.0))
    return metrics


def final_step_evaluation(
    log_history: list[dict[str, Any]], final_step: int, args
) -> dict[str, float] | None:
    """The validation scores the Trainer logged for the final weights, if it evaluated them: transformers
    evaluates at the last step of a step-evaluated run, and a second pass over the same weights would only
    cost time (a whole dev set for QA, hundreds of pairs for DPO). None when the weights in hand may differ
    from the last evaluated ones (``load_best_model_at_end``) or nothing was evaluated at the last step."""
    if args.eval_strategy == "no" or args.load_best_model_at_end:
        return None
    last = next((entry for entry in reversed(log_history) if "eval_runtime" in entry), None)
    if last is None or last.get("step") != final_step:
        return None
    return {key: value for key, value in last.items() if key.startswith("eval_")}


def metrics_before_training(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The untrained model's scores from ``training.eval_on_start``, as ``eval_before_<metric>``."""
    first = next((entry for entry in log_history if "eval_runtime" in entry), {})
    return {
        "eval_before_" + key.removeprefix("eval_"): value
        for key, value in first.items()
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
    }
