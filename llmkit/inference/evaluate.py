"""`llmkit evaluate`: score saved models on a labelled file, with bootstrap intervals, side by side.

A model is scored by the code that scored its validation split in training: the run's saved recipe
(overlaid with the user's ``key=value``) builds the task, the file is read by the same reader and checked,
encoded and prepared by the task, and the task's Trainer class runs ``predict`` with its
``compute_metrics`` and ``preprocess_logits_for_metrics`` under the run's evaluation settings (eval batch
size, max_length, generation settings, the split's order). On a run's own validation file the scores are
its ``eval_*`` metrics.

Uncertainty: the per-row outcomes of that one pass are resampled (``resamples`` times, seeded; QA by
question, not window) and the task's metric is recomputed on each resample, giving a 95 % percentile
interval per metric and, for each further model, a paired bootstrap p-value for its difference to the
first (the same resampled rows for every model).

Per-row predictions: a classifier's are read off the scoring pass's logits (``Task.predictions_from_logits``,
the code ``predict`` runs on its own batches); other tasks run ``predict``. Error analysis (written into
evaluation.json/.md, rendered by :mod:`llmkit.inference.evaluation_report`): per-class or per-entity-type
scores, a confusion matrix, the rows the model got most wrong, and the task's metric on slices of the rows
(gold label, input length, any --slice-by column), weakest first.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log

EVALUATIONS_DIR = "evaluations"
EVALUATION_FILE = "evaluation.json"
EVALUATION_REPORT = "evaluation.md"
#: --explain: the worst rows' word attributions, coloured.
EXPLANATIONS_PAGE = "explanations.html"
PREDICTIONS_FILE = "predictions.jsonl"
COMPARISON_CHART = "comparison.png"
#: Scores are named as in a run's metrics.json (eval_accuracy, ...).
PREFIX = "eval"
RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
#: Tasks whose labelled rows are no input to ``predict`` (fill-mask predicts texts with [MASK] in them; the
#: evaluation masks tokens at random): no per-row predictions file.
UNPREDICTABLE_ROWS = ("fill-mask",)
#: Rows listed as the worst examples, and the most distinct values of a --slice-by column kept (the
#: largest groups).
WORST_ROWS = 10
MAX_SLICE_VALUES = 50
#: Input-length slices: the rows are cut at these quantiles of their token counts.
LENGTH_QUANTILES = (0.25, 0.5, 0.75)
#: What the Trainer reports besides scores.
NOT_SCORES = ("_runtime", "_per_second", "model_preparation_time", "epoch", "num_input_tokens_seen")

#: Row indices -> the task's metrics on those rows (keys without the eval_ prefix).
MetricOnRows = Callable[[np.ndarray], dict[str, float]]
#: A (resamples x rows) matrix of row counts -> each metric's value on every resample, at once.
MetricOnCounts = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class RowOutcomes:
    """One pass's per-row outcomes, and how the task's metric is recomputed on any resample of them."""

    count: int
    on_rows: MetricOnRows
    #: A vectorized twin of ``on_rows`` where the metric allows (single-label classification).
    on_counts: MetricOnCounts | None = None
    #: QA: each question's chosen answer and its gold answers (the error analysis reads them).
    answers: tuple[list[str], list[list[str]]] | None = None
    #: what is resampled: the rows, or (preference) the evaluation batches whose means TRL reports
    unit: str = "rows"


@dataclass
class ModelScores:
    """What one model scored on the file."""

    model: str
    folder: Path
    task: str
    rows: int
    metrics: dict[str, float]
    seconds: float
    outcomes: RowOutcomes | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: vs the first model: metric -> (difference, p-value)
    differences: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Error analysis (per-class scores, confusion, worst rows, weakest slices): see ``error_analysis``.
    analysis: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    data: str
    scores: list[ModelScores]
    resamples: int
    output_dir: Path | None = None


# -- the command ----------------------------------------------------------------------------------
def evaluate_models(
    models: list[str],
    data: str,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    split: str | None = None,
    max_samples: int | None = None,
    resamples: int = RESAMPLES,
    output: str | Path | None = None,
    write_predictions: bool = True,
    slice_by: list[str] | tuple[str, ...] = (),
    worst: int = WORST_ROWS,
    length_order: bool = False,
    explain: bool = False,
) -> Evaluation:
    """Score every model on the same rows of ``data``, add intervals and differences, write the outputs;
    ``explain``: the worst rows also get their word attributions (:mod:`llmkit.inference.explain`)."""
    if not models:
        raise LlmkitError("give at least one model: a run folder, a model folder, an alias or a hub id")
    if max_samples is not None and max_samples < 1:
        raise LlmkitError(f"--max-samples must be a positive number of rows, got {max_samples}")
    if resamples < 0:
        raise LlmkitError(f"--resamples must be 0 (no intervals) or more, got {resamples}")
    if worst < 0:
        raise LlmkitError(f"--worst must be 0 (none listed) or more rows, got {worst}")
    output_dir = evaluation_folder(models[0], data, output)
    scores = [
        score_model(
            model,
            data,
            overrides,
            split,
            max_samples,
            write_predictions,
            slice_by,
            worst,
            length_order,
            explain=explain,
        )
        for model in models
    ]
    evaluation = Evaluation(data=data, scores=scores, resamples=resamples)
    add_intervals(evaluation, resamples)
    write_evaluation(evaluation, output_dir)
    return evaluation


def evaluation_folder(model: str, data: str, output: str | Path | None) -> Path:
    """--output (new or empty), else MODEL/evaluations/<data name>-<UTC time>/ for a local model folder, else
    ./evaluations/...; an earlier evaluation is never overwritten."""
    if output is not None:
        folder = Path(output)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise LlmkitError(f"--output {folder} already exists and is not empty; choose another folder")
        return folder
    from llmkit.core.paths import looks_like_path

    base = Path(model) if looks_like_path(model) and Path(model).is_dir() else Path.cwd()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data.rstrip("/")).stem or "data")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = base / EVALUATIONS_DIR / f"{name}-{stamp}"
    number = 1
    while folder.exists():
        number += 1
        folder = base / EVALUATIONS_DIR / f"{name}-{stamp}-{number}"
    return folder


# -- one model ------------------------------------------------------------------------------------
def score_model(
    model: str,
    data: str,
    overrides: list[str] | tuple[str, ...] = (),
    split: str | None = None,
    max_samples: int | None = None,
    write_predictions: bool = True,
    slice_by: list[str] | tuple[str, ...] = (),
    worst: int = WORST_ROWS,
    length_order: bool = False,
    *,
    explain: bool = False,
) -> ModelScores:
    """Score one model on ``data`` through training's evaluation path; keep its per-row outcomes."""
    from llmkit.core.progress import quiet_library_progress
    from llmkit.inference.explain import check_explainable
    from llmkit.models.adaptation import is_adapter_folder
    from llmkit.models.resolve import check_weights, load_model, load_tokenizer, resolve_model
    from llmkit.tasks import build_task
    from llmkit.training.spine import with_perplexity

    started = time.perf_counter()
    folder = resolve_model(model)
    recipe = evaluation_recipe(folder, data, overrides)
    task = build_task(recipe.task, recipe.data, recipe.options)
    if explain:
        check_explainable(task, folder)
    rows = read_rows(data, recipe.data, split, max_samples)
    check_rows(task, rows, folder)
    check_slice_columns(slice_by, rows)
    task.check_model(folder)
    tokenizer = load_tokenizer(folder, trust_remote_code=recipe.model_options["trust_remote_code"])
    task.prepare_tokenizer(tokenizer)
    with quiet_library_progress():
        encoded = task.encode(rows.dataset, tokenizer)
    counts = task.encoding_metrics("validation", encoded)
    prepared = task.prepare_evaluation("validation", rows, encoded)
    order = scoring_order(task, prepared) if length_order else None
    if order is not None:
        prepared = prepared.select(order.tolist(), keep_in_memory=True)
    load_options = {
        **check_weights(folder, recipe.model_options["allow_pickle"], exported=True),
        "trust_remote_code": recipe.model_options["trust_remote_code"],
        **({"merge": False} if is_adapter_folder(folder) else {}),  # computes as training did
    }
    with quiet_library_progress():
        loaded = load_model(task, folder, **load_options).eval()
    log(f"{model}: {recipe.task}, {len(rows.dataset):,} rows of {rows.location}")
    with tempfile.TemporaryDirectory() as scratch:
        trainer = evaluation_trainer(task, recipe, loaded, tokenizer, prepared, Path(scratch))
        recorded = record_generated_texts(trainer)
        logits = keep_logits(trainer) if task.predicts_from_logits else None
        with quiet_library_progress():
            output = run_evaluation(trainer, prepared)
    output, logits = in_row_order(output, logits, order)
    metrics = {**counts, **scores_only(with_perplexity(task, dict(output.metrics), PREFIX))}
    outcomes = row_outcomes(task, trainer, output, rows, encoded, recorded)
    records = rows.dataset.to_list()
    row_logits = joined_logits(logits, len(records))
    predictions = []
    if write_predictions and recipe.task not in UNPREDICTABLE_ROWS:
        generated = recorded["predictions"] if recorded is not None else None
        predictions = predicted_rows(task, loaded, tokenizer, records, row_logits, generated)
    analysis = error_analysis(
        task, loaded, records, encoded, output, row_logits, outcomes, slice_by=slice_by, worst=worst
    )
    if explain:
        explain_worst(task, loaded, tokenizer, records, predictions, analysis)
    return ModelScores(
        model=model,
        folder=folder,
        task=recipe.task,
        rows=len(rows.dataset),
        metrics=metrics,
        seconds=round(time.perf_counter() - started, 2),
        outcomes=outcomes,
        predictions=predictions,
        analysis=analysis,
    )


def evaluation_recipe(folder: Path, rows: str, overrides: list[str] | tuple[str, ...]):
    """The run's saved recipe (a plain model folder: its task's defaults), overlaid with ``overrides``,
    pointed at the folder itself: the model is scored as saved, never adapted or rebuilt."""
    from llmkit.inference.predict import task_for_model
    from llmkit.models.exported import is_exported_folder
    from llmkit.recipe.loader import load_recipe, parse_override, read_recipe_file
    from llmkit.runs.folder import RECIPE_FILE

    named = [value for key, value in map(parse_override, overrides) if key == ["task"]]
    saved = read_recipe_file(folder / RECIPE_FILE) if (folder / RECIPE_FILE).exists() else None
    if saved is not None and (not named or same_task(named[-1], saved.get("task", "classification"))):
        raw = saved
    else:  # task=NAME among the settings: a zero-shot baseline, e.g. a causal LM as a summarizer or, with
        # data.verbalizer, as a classifier; a run of another task is used as such a model (its data, no)
        task = named[-1] if named else task_for_model(folder).name
        raw = {"task": task, "__source__": f"<model folder {folder}>"}
    for section in ("peft", "tokenizer"):  # the folder holds the adapter / the trained tokenizer already
        raw.pop(section, None)
    raw["model"] = str(folder)
    data = raw.setdefault("data", {})
    data["streaming"] = False  # the file is scored whole
    if not data.get("train") and not data.get("dataset"):
        data["train"] = rows  # a recipe names its data; only the scored rows are read
    dpo = (raw.get("preference") or {}).get("dpo")
    if isinstance(dpo, dict):  # the reference is the base model (or the adapter off), never precomputed
        dpo["precompute_reference"] = False
    raw["output_dir"] = str(folder)
    exported = ["training.precision=fp32", "training.use_cpu=true"] if is_exported_folder(folder) else []
    return load_recipe(raw, [*exported, *overrides, "training.report_to=none"])  # exported: CPU kernels


def same_task(named: Any, saved: Any) -> bool:
    """Whether task=NAME names a run's own task (aliases count: ner is token-classification)."""
    from llmkit.tasks import TASK_ALIASES

    return TASK_ALIASES.get(str(named), str(named)) == TASK_ALIASES.get(str(saved), str(saved))


def read_rows(data: str, recipe_data: dict[str, Any], split: str | None, max_samples: int | None):
    """The file (as training reads a data file), or a dataset's split (data.dataset, offline: cached)."""
    from llmkit.data.files import conll_format, read_split

    path = Path(data).expanduser()
    if path.is_file() or (path.is_dir() and split is None):
        if split is not None:
            raise LlmkitError(f"--split {split}: {data} is a file; --split picks a split of a dataset")
        txt_unit = recipe_data.get("txt_unit", "line")
        rows = read_split("validation", path, "--data", txt_unit, conll_format(recipe_data), None)
    elif path.exists() or data.startswith((".", "/", "~")):
        raise LlmkitError(f"--data {data}: no such file; check the path (relative to {Path.cwd()})")
    else:
        rows = dataset_split(data, recipe_data, split or "validation")
    if max_samples is not None:
        rows.keep_rows(range(min(max_samples, len(rows.dataset))))
    if len(rows.dataset) == 0:
        raise LlmkitError(f"--data {rows.location} has no rows; give a file with labelled rows")
    return rows


def dataset_split(name: str, recipe_data: dict[str, Any], split: str):
    """``--data`` naming a hub dataset (or a dataset folder), read through the recipes' data.dataset."""
    from llmkit.data.files import Split
    from llmkit.data.hub import read_dataset_splits

    settings = {**recipe_data, "dataset": name, "splits": {"validation": split}}
    read = read_dataset_splits(settings, ["validation"])["validation"]
    return Split("validation", read.dataset, read.file, key="--data", hub=read.source)


def check_rows(task, rows, folder: Path) -> None:
    """The task's checks of a labelled split; a file made for another task says which task the model has."""
    try:
        task.check_evaluation_data(rows, folder)
    except LlmkitError as exc:
        raise LlmkitError(
            f"{exc} (model {folder} does {task.name}; a file of other columns needs key=value settings "
            f"such as data.text=COLUMN)"
        ) from None


def check_slice_columns(columns: list[str] | tuple[str, ...], rows) -> None:
    """Every --slice-by column is in the file, before any model is loaded."""
    present = rows.dataset.column_names
    for column in columns:
        if column not in present:
            raise LlmkitError(
                f"--slice-by {column}: {rows.location} has no column '{column}' (columns: "
                f"{', '.join(present)}); name one of them"
            )


def evaluation_trainer(task, recipe, model, tokenizer, prepared, scratch: Path):
    """The task's Trainer as training builds it (length grouping keeps the split's order in evaluation)."""
    from llmkit.training.arguments import training_arguments
    from llmkit.training.spine import task_trainer_class

    args = training_arguments(recipe, scratch, has_eval=True, arguments_class=task.arguments_class())
    trainer = task_trainer_class(task)(
        model=model,
        args=args,
        train_dataset=prepared,  # never trained on; TRL's trainers require one
        eval_dataset=prepared,
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
    )
    use_base_as_reference(task, recipe, trainer)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the scores are printed once, at the end
    if args.disable_tqdm:  # not a terminal: a throttled progress line instead of a bar
        from llmkit.core.progress import log_lines_callback

        trainer.add_callback(log_lines_callback())
    return trainer


def use_base_as_reference(task, recipe, trainer) -> None:
    """DPO scores against a reference: training's was the model it started from. A LoRA run's is its base
    (the adapter off, as training had it); a full fine-tune's is the recipe's base model, loaded again."""
    from llmkit.models.adaptation import is_adapted
    from llmkit.runs.folder import RECIPE_FILE

    if getattr(trainer, "ref_model", None) is None or is_adapted(trainer.model):
        return
    if not (Path(recipe.model) / RECIPE_FILE).exists():
        return  # a plain model folder (a zero-shot baseline) is its own reference: every reward is 0
    import yaml

    from llmkit.models.resolve import check_weights, load_model, resolve_model

    saved = yaml.safe_load((Path(recipe.model) / RECIPE_FILE).read_text(encoding="utf-8")) or {}
    base = saved.get("model")
    base = base.get("name") if isinstance(base, dict) else base
    if not isinstance(base, str):
        raise LlmkitError(f"{recipe.model}: its recipe names no base model to score preferences against")
    folder = resolve_model(base)
    base_model = load_model(task, folder, **check_weights(folder))
    trainer.ref_model.load_state_dict(base_model.state_dict())  # into TRL's prepared copy of the model


def run_evaluation(trainer, prepared) -> Any:
    """``predict`` where the metric reads predictions (kept for resampling); else ``evaluate`` as training
    does: a trainer without compute_metrics (preference, generation) scores losses only, and asking it for
    predictions takes another path (TRL recomputes the logits without its fused head)."""
    from transformers.trainer_utils import PredictionOutput

    if trainer.compute_metrics is None:
        metrics = trainer.evaluate(prepared, metric_key_prefix=PREFIX)
        return PredictionOutput(predictions=None, label_ids=None, metrics=metrics)
    return trainer.predict(prepared, metric_key_prefix=PREFIX)


def record_generated_texts(trainer) -> dict[str, list[str]] | None:
    """Text-to-text scorers take each batch's generated texts: keep them (text only) for resampling."""
    scorer = getattr(trainer, "compute_metrics", None)
    if not hasattr(scorer, "add") or not hasattr(scorer, "result"):
        return None
    recorded: dict[str, list[str]] = {"predictions": [], "references": []}
    add = scorer.add

    def add_and_keep(predictions: list[str], references: list[str]) -> None:
        recorded["predictions"] += predictions
        recorded["references"] += references
        add(predictions, references)

    scorer.add = add_and_keep
    recorded["add"] = add  # type: ignore[assignment]
    return recorded


def scoring_order(task, prepared) -> np.ndarray:
    """--length-order: the rows shortest first, so each batch pads to a length near its rows' own (SST-2's
    file order pads 128-row batches to ~3.7x the real tokens; sorted: ~1.02x). Only where the metric is
    order-free and read per row (classification); the batches then differ from training's, so scores agree
    with its evaluation to rounding, not bit for bit (bf16: 10 of 10,000 SST-2 near-tie labels flipped)."""
    from llmkit.data.files import column_lengths

    if not task.predicts_from_logits:
        raise LlmkitError(
            f"--length-order: {task.name} is scored in the file's order (its metric reads rows by position); "
            "leave --length-order out"
        )
    return np.argsort(np.asarray(column_lengths(prepared, "input_ids")), kind="stable")


def in_row_order(output, kept: list[Any] | None, order: np.ndarray | None) -> tuple[Any, list[Any] | None]:
    """A length-ordered pass's predictions, labels and logits put back in the file's row order."""
    if order is None:
        return output, kept
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    output = output._replace(
        predictions=None if output.predictions is None else take(output.predictions, back),
        label_ids=None if output.label_ids is None else take(output.label_ids, back),
    )
    if kept:
        import torch

        kept = [torch.cat(kept)[torch.from_numpy(back)]]
    return output, kept


def keep_logits(trainer) -> list[Any]:
    """Keep each evaluation batch's logits (before the task's preprocessing reduces them to what its metric
    reads), so the scoring pass also gives the per-row predictions."""
    kept: list[Any] = []
    preprocess = trainer.preprocess_logits_for_metrics

    def keep_and_preprocess(logits: Any, labels: Any) -> Any:
        kept.append((logits[0] if isinstance(logits, tuple) else logits).detach().float().cpu())
        return preprocess(logits, labels) if preprocess is not None else logits

    trainer.preprocess_logits_for_metrics = keep_and_preprocess
    return kept


def joined_logits(kept: list[Any] | None, rows: int) -> Any:
    """The kept batches as one tensor, a row per scored row; None unless they line up with the rows."""
    if not kept:
        return None
    import torch

    logits = torch.cat(kept)
    return logits if len(logits) == rows else None


def predicted_rows(
    task, model, tokenizer, records: list[dict[str, Any]], logits: Any, generated: list[str] | None = None
) -> list[dict]:
    """Each row and its prediction, as `llmkit predict` writes it: from the scoring pass's logits where the
    task reads its predictions off them (one code path with ``predict``), the texts the scoring pass
    generated and scored (summarization, translation: in the rows' order, as evaluation keeps it; no second
    generation), else by ``predict`` itself."""
    from llmkit.core.progress import quiet_library_progress

    if generated is not None and len(generated) == len(records) and len(task.prediction_keys) == 1:
        key = task.prediction_keys[0]
        return [{**row, key: text} for row, text in zip(records, generated, strict=True)]
    if logits is None:
        with quiet_library_progress(errors_only=True):
            return task.rows_with_predictions(model, tokenizer, records)
    predicted = task.predictions_from_logits(model, logits)
    return [{**row, **guess} for row, guess in zip(records, predicted, strict=True)]


def scores_only(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if not key.endswith(NOT_SCORES)}


# -- per-row outcomes -----------------------------------------------------------------------------
def row_outcomes(task, trainer, output, rows, encoded, recorded) -> RowOutcomes | None:
    """How to recompute the metric on resampled rows; None where the metric is a mean of batch losses
    (generation): there are no per-row outcomes to resample. Preference metrics are per-batch means
    (TRL's): the batches are resampled."""
    if recorded is not None and recorded["predictions"]:
        return generated_text_outcomes(trainer.compute_metrics, recorded)
    if getattr(trainer, "evaluated_batches", None) is not None:
        batches = trainer.evaluated_batches
        return batch_outcomes(batches.means, batches.pairs, batches.unit)
    if getattr(trainer, "scored_units", None) is not None:  # embedding: pairs or distinct queries
        units = trainer.scored_units
        return RowOutcomes(units.count, units.metrics, units.on_counts, unit=units.unit)
    if output.predictions is None or (output.label_ids is None and task.name != "question-answering"):
        return None
    if task.name == "question-answering":
        return question_outcomes(task, rows, encoded, output.predictions)
    compute = task.compute_metrics()
    if compute is None:
        return None
    return prediction_outcomes(task, compute, output.predictions, output.label_ids)


def prediction_outcomes(task, compute, predictions, label_ids) -> RowOutcomes:
    """compute_metrics on the rows' predictions and labels (classification, NER, fill-mask)."""
    from transformers import EvalPrediction

    def on_rows(indices: np.ndarray) -> dict[str, float]:
        return compute(
            EvalPrediction(predictions=take(predictions, indices), label_ids=take(label_ids, indices))
        )

    vectorized = None
    problem = getattr(task, "problem", None) if task.name == "classification" else None
    if problem == "single_label":
        vectorized = single_label_counts(np.asarray(predictions), np.asarray(label_ids))
    elif problem == "multi_label":
        names = [task.label_name(index) for index in range(np.asarray(label_ids).shape[1])]
        chosen = np.asarray(predictions) >= task.thresholds()
        vectorized = multi_label_counts(chosen, np.asarray(label_ids).astype(np.int8) == 1, names)
    elif task.name == "token-classification":
        vectorized = entity_counts(*task.scored_tags(predictions, label_ids))
    return RowOutcomes(row_count(label_ids), on_rows, vectorized)


def entity_counts(predicted_tags: list[list[str]], gold_tags: list[list[str]]) -> MetricOnCounts:
    """seqeval's scores (micro over entities, per type, token accuracy) from per-row counts: entities found,
    predicted and gold per type, tokens right and scored. A resample's score is then sums of counts, as
    seqeval computes it; running seqeval itself on 1,000 resamples of CoNLL's test set takes minutes.
    A type absent from a resample (neither predicted nor gold) scores NaN there, as seqeval leaves it out."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = [
        (set(get_entities(p)), set(get_entities(g))) for p, g in zip(predicted_tags, gold_tags, strict=True)
    ]
    types = sorted({kind for pair in rows for entities in pair for kind, _, _ in entities})
    column = {kind: number for number, kind in enumerate(types)}
    found, guessed, present = (np.zeros((len(rows), len(types))) for _ in range(3))
    for row, (predicted, gold) in enumerate(rows):
        for table_, entities in ((guessed, predicted), (present, gold), (found, predicted & gold)):
            for kind, _, _ in entities:
                table_[row, column[kind]] += 1
    right = np.asarray(
        [
            sum(p == g for p, g in zip(a, b, strict=True))
            for a, b in zip(predicted_tags, gold_tags, strict=True)
        ],
        dtype=np.float64,
    )
    tokens = np.asarray([len(tags) for tags in gold_tags], dtype=np.float64)

    def scores(hits: np.ndarray, guesses: np.ndarray, golds: np.ndarray) -> tuple[np.ndarray, ...]:
        precision = np.divide(hits, guesses, out=np.zeros_like(hits), where=guesses > 0)
        recall = np.divide(hits, golds, out=np.zeros_like(hits), where=golds > 0)
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
        return precision, recall, f1

    def on_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
        hits, guesses, golds = counts @ found, counts @ guessed, counts @ present
        result = dict(
            zip(
                ("precision", "recall", "f1"),
                scores(*(m.sum(axis=1) for m in (hits, guesses, golds))),
                strict=True,
            )
        )
        result["accuracy"] = np.divide(
            counts @ right, counts @ tokens, out=np.zeros(len(counts)), where=(counts @ tokens) > 0
        )
        absent = (guesses == 0) & (golds == 0)
        for name, values in zip(("precision", "recall", "f1"), scores(hits, guesses, golds), strict=True):
            values[absent] = np.nan
            for kind, number in column.items():
                result[f"{kind}_{name}"] = values[:, number]
        return result

    return on_counts


def row_count(values: Any) -> int:
    """Rows of the labels: a model with two heads (BERT's masked LM + next sentence) gives a tuple of
    label arrays, one row each."""
    return len(values[0] if isinstance(values, tuple) else values)


def take(values: Any, indices: np.ndarray) -> Any:
    if isinstance(values, tuple):
        return tuple(take(value, indices) for value in values)
    return np.asarray(values)[indices]


def question_outcomes(task, rows, encoded, predictions) -> RowOutcomes:
    """QA: each question's best answer over its windows, then SQuAD EM/F1 on resampled questions."""
    from llmkit.metrics import load_metrics

    start_logits, end_logits = predictions[:2]
    answers, gold = task.answers_for_rows(rows.dataset.to_list(), encoded, start_logits, end_logits)
    metric = load_metrics("squad")

    def on_rows(indices: np.ndarray) -> dict[str, float]:
        return metric.compute(
            predictions=[answers[i] for i in indices], references=[gold[i] for i in indices]
        )

    return RowOutcomes(len(answers), on_rows, answers=(answers, gold))


def batch_outcomes(means: dict[str, list[float]], pairs: list[int], unit: str = "pairs") -> RowOutcomes:
    """Preference: each evaluation batch's metric means, weighted by its pairs as the pass weighs them (a
    cluster bootstrap: a resample draws whole batches; the batches follow the file's order)."""
    weights = np.asarray(pairs, dtype=np.float64)
    per_batch = {
        key: np.asarray(values, dtype=np.float64) * weights
        for key, values in means.items()
        if len(values) == len(pairs)
    }

    def on_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
        drawn = counts @ weights
        return {key: (counts @ sums) / np.maximum(drawn, 1e-12) for key, sums in per_batch.items()}

    def on_rows(indices: np.ndarray) -> dict[str, float]:
        counts = np.bincount(indices, minlength=len(pairs)).astype(np.float64)[None, :]
        return {key: float(value[0]) for key, value in on_counts(counts).items()}

    largest = max(pairs, default=0)
    return RowOutcomes(
        len(pairs), on_rows, on_counts, unit=f"evaluation batches (up to {largest} {unit} each)"
    )


def generated_text_outcomes(scorer, recorded: dict[str, Any]) -> RowOutcomes:
    """Summarization/translation: the scorer of the evaluation, fed the resampled generated texts."""
    predictions, references, add = recorded["predictions"], recorded["references"], recorded["add"]

    def on_rows(indices: np.ndarray) -> dict[str, float]:
        scorer.reset()
        add([predictions[i] for i in indices], [references[i] for i in indices])
        return scorer.result()

    return RowOutcomes(len(predictions), on_rows)


def single_label_counts(predictions: np.ndarray, labels: np.ndarray) -> MetricOnCounts:
    """Accuracy, macro F1 (over the classes present in the resample) and MCC from each resample's
    confusion matrix: what the metric modules compute, for every resample in one matrix product."""
    classes = int(max(predictions.max(initial=0), labels.max(initial=0))) + 1
    cells = np.zeros((len(labels), classes * classes), dtype=np.float64)
    cells[np.arange(len(labels)), labels.astype(np.int64) * classes + predictions.astype(np.int64)] = 1.0

    def on_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
        confusion = (counts @ cells).reshape(-1, classes, classes)  # [resample, gold, predicted]
        total = confusion.sum(axis=(1, 2))
        correct = np.trace(confusion, axis1=1, axis2=2)
        gold, guessed = confusion.sum(axis=2), confusion.sum(axis=1)
        true_positive = np.diagonal(confusion, axis1=1, axis2=2)
        denominator = gold + guessed
        per_class = np.divide(
            2 * true_positive, denominator, out=np.zeros_like(denominator), where=denominator > 0
        )
        present = denominator > 0
        numerator = correct * total - (gold * guessed).sum(axis=1)
        spread = np.sqrt((total**2 - (guessed**2).sum(axis=1)) * (total**2 - (gold**2).sum(axis=1)))
        return {
            "accuracy": correct / total,
            "f1": per_class.sum(axis=1) / np.maximum(present.sum(axis=1), 1),
            "matthews_correlation": np.divide(
                numerator, spread, out=np.zeros_like(spread), where=spread != 0
            ),
        }

    return on_counts


def multi_label_counts(predicted: np.ndarray, gold: np.ndarray, names: list[str]) -> MetricOnCounts:
    """Micro/macro F1, subset accuracy and each label's F1 (as the multilabel module computes them) from
    each resample's per-label hit and miss counts, for every resample in one matrix product. A label's F1
    is left out where some resample has no such label at all (as one compute per resample leaves it)."""
    per_row = np.concatenate(
        [predicted & gold, predicted & ~gold, ~predicted & gold, (predicted == gold).all(axis=1)[:, None]],
        axis=1,
    ).astype(np.float64)
    labels = len(names)

    def on_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
        summed = counts @ per_row
        hits, spurious, missed = (summed[:, i * labels : (i + 1) * labels] for i in range(3))
        denominator = 2 * hits + spurious + missed
        per_label = np.divide(
            2 * hits, denominator, out=np.full_like(denominator, np.nan), where=denominator > 0
        )
        pooled = 2 * hits.sum(axis=1) + spurious.sum(axis=1) + missed.sum(axis=1)
        occurring = np.isfinite(per_label).sum(axis=1)
        scores = {
            "f1_micro": np.divide(2 * hits.sum(axis=1), pooled, out=np.zeros(len(counts)), where=pooled > 0),
            "f1_macro": np.divide(
                np.nansum(per_label, axis=1), occurring, out=np.zeros(len(counts)), where=occurring > 0
            ),
            "subset_accuracy": summed[:, -1] / counts.sum(axis=1),
        }
        for index, name in enumerate(names):
            if np.isfinite(per_label[:, index]).all():
                scores[f"f1_label_{name}"] = per_label[:, index]
        return scores

    return on_counts


# -- error analysis -------------------------------------------------------------------------------
@dataclass
class RowErrors:
    """Each scored row as the worst-rows table shows it, and how wrong the model was on it."""

    inputs: list[str]
    gold: list[str]
    predicted: list[str]
    #: Higher is worse (e.g. the row's loss); ``error_name`` says what it is.
    error: np.ndarray
    error_name: str
    #: The gold answers are classes to slice by (not scores).
    gold_is_class: bool = True


def error_analysis(
    task,
    model,
    records: list[dict[str, Any]],
    encoded,
    output,
    logits,
    outcomes: RowOutcomes | None,
    *,
    slice_by: list[str] | tuple[str, ...] = (),
    worst: int = WORST_ROWS,
) -> dict[str, Any]:
    """Where the model goes wrong: the task's breakdown (per class, per entity type), the worst rows, and
    the weakest slices of the rows (by gold label, input length, each --slice-by column)."""
    analysis: dict[str, Any] = {}
    errors = None
    if outcomes is not None and outcomes.answers is not None:
        errors = answer_errors(task, records, outcomes.answers)
    elif output.label_ids is not None and output.predictions is not None:
        if task.name == "classification":
            errors = classification_errors(task, model, records, output, logits, analysis)
        elif task.name == "token-classification":
            errors = entity_errors(task, records, output, analysis)
    if errors is not None and worst:
        analysis["worst_by"] = errors.error_name
        analysis["worst"] = worst_rows(errors, worst)
    if outcomes is not None and outcomes.count == len(records):
        groups = row_groups(records, encoded, errors, slice_by)
        if outcomes.answers is not None:
            groups.update(answer_groups(task, records))
        metric, slices = weakest_slices(task, outcomes, groups)
        if slices:
            analysis["slice_metric"], analysis["slices"] = metric, slices
    return analysis


def explain_worst(
    task, model, tokenizer, records: list[dict[str, Any]], predictions: list[dict], analysis: dict[str, Any]
) -> None:
    """--explain: each worst row gains its word attributions, for the prediction the row file holds where
    there is one. Only these rows: integrated gradients cost dozens of forward and backward passes a row."""
    from llmkit.inference.explain import EXPLANATION, METHOD, explanations

    worst = analysis.get("worst") or []
    if not worst:
        return
    indices = [entry["row"] - 1 for entry in worst]
    guesses = [predictions[i] for i in indices] if predictions else None
    log(f"explaining the {len(worst)} worst rows: {METHOD}")
    found = explanations(task, model, tokenizer, [records[i] for i in indices], guesses)
    for entry, explanation in zip(worst, found, strict=True):
        entry[EXPLANATION] = explanation
    analysis["explained_by"] = METHOD


def classification_errors(task, model, records, output, logits, analysis: dict[str, Any]) -> RowErrors:
    """Per-class precision/recall/F1 and the confusion matrix (single-label), per-label scores
    (multi-label); each row's loss-like error: -log of the gold class's probability, the summed distance of
    the label probabilities from the gold 0/1, or the absolute error of the score."""
    text, pair = task.data["text"], task.data["text_pair"]
    inputs = [f"{row[text]} / {row[pair]}" if pair else str(row[text]) for row in records]
    problem, names = task.inference_problem(model), model.config.id2label
    gold, predicted = np.asarray(output.label_ids), np.asarray(output.predictions)
    if problem == "regression":
        gold, predicted = gold.reshape(-1).astype(np.float64), predicted.reshape(-1).astype(np.float64)
        return RowErrors(
            inputs,
            [f"{g:.4g}" for g in gold],
            [f"{p:.4g}" for p in predicted],
            np.abs(predicted - gold),
            "absolute error",
            gold_is_class=False,
        )
    if problem == "multi_label":
        chosen = predicted >= task.thresholds()
        analysis["per_class"] = class_scores(
            [names[i] for i in range(gold.shape[1])],
            true_positive=(chosen & (gold == 1)).sum(axis=0),
            predicted=chosen.sum(axis=0),
            gold=(gold == 1).sum(axis=0),
        )

        def shown_labels(row: np.ndarray) -> str:
            return ", ".join(names[i] for i in np.flatnonzero(row)) or "(none)"

        return RowErrors(
            inputs,
            [shown_labels(row) for row in gold == 1],
            [shown_labels(row) for row in chosen],
            np.abs(predicted - gold).sum(axis=1),
            "summed label probability error",
        )
    gold, predicted = gold.astype(np.int64), predicted.astype(np.int64)
    classes = [names[i] for i in range(len(names))]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    analysis["per_class"] = class_scores(
        classes, np.diagonal(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    )
    analysis["confusion"] = {"labels": classes, "matrix": confusion.tolist()}
    if logits is not None:
        probabilities = logits.float().softmax(dim=-1).numpy()[np.arange(len(gold)), gold]
        error, error_name = -np.log(np.maximum(probabilities, 1e-12)), "loss (-log gold-class probability)"
    else:
        error, error_name = (gold != predicted).astype(np.float64), "wrong"
    return RowErrors(inputs, [classes[i] for i in gold], [classes[i] for i in predicted], error, error_name)


def class_scores(names: list[str], true_positive, predicted, gold) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 (0 where undefined, as scikit-learn's zero_division=0) and support."""
    scores = {}
    for name, hits, guessed, present in zip(names, true_positive, predicted, gold, strict=True):
        precision = hits / guessed if guessed else 0.0
        recall = hits / present if present else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[str(name)] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(present),
        }
    return scores


def entity_errors(task, records, output, analysis: dict[str, Any]) -> RowErrors:
    """seqeval's per-type report on the scored words, and each row's wrong entities (missed or spurious)."""
    from llmkit.metrics import load_metrics
    from llmkit.tasks.token_classification import entity_spans

    predicted_tags, gold_tags = task.scored_tags(output.predictions, output.label_ids)
    report = load_metrics("seqeval").compute(predictions=predicted_tags, references=gold_tags)
    analysis["per_type"] = {
        kind: {**{k: v for k, v in values.items() if k != "number"}, "support": values.get("number", 0)}
        for kind, values in sorted(report["per_type"].items())
    }
    words = task.data["tokens"]
    inputs, gold_shown, predicted_shown, wrong = [], [], [], []
    for row, gold, predicted in zip(records, gold_tags, predicted_tags, strict=True):
        gold_entities, predicted_entities = set(entity_spans(gold)), set(entity_spans(predicted))
        inputs.append(" ".join(map(str, row[words])))
        gold_shown.append(shown_entities(row[words], gold_entities))
        predicted_shown.append(shown_entities(row[words], predicted_entities))
        wrong.append(len(gold_entities ^ predicted_entities))
    return RowErrors(
        inputs,
        gold_shown,
        predicted_shown,
        np.asarray(wrong, dtype=np.float64),
        "wrong entities",
        gold_is_class=False,
    )


def answer_errors(task, records, answers: tuple[list[str], list[list[str]]]) -> RowErrors:
    """QA: each question's SQuAD F1 against its gold answers; a row's error is 1 - F1 (0: a gold answer
    word for word, 1: no word in common)."""
    from llmkit.metrics import load_metrics

    metric = load_metrics("squad")
    chosen, gold = answers
    question, context = task.data["question"], task.data["context"]
    f1 = np.asarray(
        [
            metric.compute(predictions=[answer], references=[references])["f1"] / 100
            for answer, references in zip(chosen, gold, strict=True)
        ]
    )
    return RowErrors(
        [f"{row[question]} | {shortened(str(row[context]))}" for row in records],
        [" / ".join(references) or "(no answer)" for references in gold],
        [answer or "(no answer)" for answer in chosen],
        1.0 - f1,
        "1 - F1 (SQuAD word overlap with the best gold answer)",
        gold_is_class=False,
    )


def answer_groups(task, records) -> dict[str, dict[str, list[int]]]:
    """QA slices: by the gold answer's length and the context's length, in words (quartiles)."""
    answers, context = task.data["answers"], task.data["context"]
    first_answers = [(list(row[answers]["text"]) or [""])[0] for row in records]
    return {
        "answer length": length_groups([len(text.split()) for text in first_answers], "words"),
        "context length": length_groups([len(str(row[context]).split()) for row in records], "words"),
    }


def shortened(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_entities(words: list[Any], entities: set[tuple[str, int, int]]) -> str:
    return (
        "; ".join(
            f"{kind}: {' '.join(map(str, words[start:end]))}"
            for kind, start, end in sorted(entities, key=lambda e: e[1])
        )
        or "(none)"
    )


def worst_rows(errors: RowErrors, count: int) -> list[dict[str, Any]]:
    """The ``count`` rows with the largest error (ties: file order), wrong or not."""
    order = np.argsort(-errors.error, kind="stable")[:count]
    return [
        {
            "row": int(i) + 1,
            "input": errors.inputs[i],
            "gold": errors.gold[i],
            "prediction": errors.predicted[i],
            "error": round(float(errors.error[i]), 6),
        }
        for i in order
    ]


def row_groups(
    records: list[dict[str, Any]], encoded, errors: RowErrors | None, slice_by: list[str] | tuple[str, ...]
) -> dict[str, dict[str, list[int]]]:
    """Grouping name -> value -> row indices: by gold label, by input length in tokens (quartiles), and by
    each --slice-by column (its largest MAX_SLICE_VALUES groups)."""
    groups: dict[str, dict[str, list[int]]] = {}
    if errors is not None and errors.gold_is_class:
        groups["label"] = grouped(errors.gold)
    if len(encoded) == len(records) and "input_ids" in encoded.column_names:
        groups["input length"] = length_groups([len(ids) for ids in encoded["input_ids"]])
    for column in slice_by:
        by_value = grouped([slice_value(row.get(column)) for row in records])
        largest = sorted(by_value, key=lambda value: -len(by_value[value]))[:MAX_SLICE_VALUES]
        groups[column] = {value: by_value[value] for value in largest}
    return groups


def slice_value(value: Any) -> str:
    """A --slice-by cell as its slice's name (missing and empty cells form one slice)."""
    return "(empty)" if value is None or value == "" else str(value)


def grouped(values: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(value, []).append(index)
    return groups


def length_groups(lengths: list[int], unit: str = "tokens") -> dict[str, list[int]]:
    """Rows cut at the quartiles of their lengths, each group named by its shortest and longest."""
    values = np.asarray(lengths)
    cuts = np.unique(np.quantile(values, LENGTH_QUANTILES).astype(np.int64))
    bucket = np.searchsorted(cuts, values, side="left")
    groups = {}
    for number in np.unique(bucket):
        members = np.flatnonzero(bucket == number)
        low, high = int(values[members].min()), int(values[members].max())
        groups[f"{low}-{high} {unit}" if low != high else f"{low} {unit}"] = members.tolist()
    return groups


def weakest_slices(
    task, outcomes: RowOutcomes, groups: dict[str, dict[str, list[int]]]
) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The task's metric on each slice's rows, weakest first: its headline (accuracy, F1, ...) where the
    metric reports it, else its first score."""
    metric = ""
    slices: dict[str, list[dict[str, Any]]] = {}
    for grouping, by_value in groups.items():
        scored = []
        for value, indices in by_value.items():
            values = outcomes.on_rows(np.asarray(indices))
            metric = metric or slice_metric(task, values)
            if isinstance(values.get(metric), (int, float)):
                scored.append({"value": value, "rows": len(indices), metric: float(values[metric])})
        slices[grouping] = sorted(scored, key=lambda group: (group[metric], -group["rows"]))
    return metric, {grouping: found for grouping, found in slices.items() if found}


def slice_metric(task, values: dict[str, Any]) -> str:
    for name in (task.headline_metric, *task.other_headline_metrics):
        if isinstance(values.get(name), (int, float)):
            return name
    return next((key for key, value in values.items() if isinstance(value, (int, float))), "")


# -- intervals ------------------------------------------------------------------------------------
def add_intervals(evaluation: Evaluation, resamples: int) -> None:
    """Percentile intervals per model, and paired p-values against the first model, on shared resamples."""
    scored = [s for s in evaluation.scores if s.outcomes is not None]
    if resamples == 0 or not scored:
        return
    sizes = {s.outcomes.count for s in scored}
    if len(sizes) > 1:
        log(f"warning: the models scored different numbers of rows ({sorted(sizes)}); intervals are unpaired")
    draws = {size: np.random.default_rng(SEED).integers(0, size, size=(resamples, size)) for size in sizes}
    began = time.perf_counter()
    values = {id(s): resampled_metrics(s.outcomes, draws[s.outcomes.count]) for s in scored}
    log(f"{resamples} bootstrap resamples in {time.perf_counter() - began:.1f} s")
    tail = (1 - CONFIDENCE) / 2
    for s in scored:
        for key, samples in values[id(s)].items():
            finite = samples[np.isfinite(samples)]
            if finite.size:
                s.intervals[f"{PREFIX}_{key}"] = tuple(
                    float(q) for q in np.quantile(finite, [tail, 1 - tail])
                )
    first = evaluation.scores[0]
    if id(first) not in values:
        return
    for s in evaluation.scores[1:]:
        if id(s) not in values or s.outcomes.count != first.outcomes.count:
            continue
        for key, samples in values[id(s)].items():
            name = f"{PREFIX}_{key}"
            if key in values[id(first)] and name in s.metrics and name in first.metrics:
                s.differences[name] = (
                    s.metrics[name] - first.metrics[name],
                    paired_p_value(samples - values[id(first)][key]),
                )


def resampled_metrics(outcomes: RowOutcomes, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on every resample: vectorized where the task allows, else one compute per resample."""
    if outcomes.on_counts is not None:
        return outcomes.on_counts(draw_counts(draws, outcomes.count))
    collected: dict[str, list[float]] = {}
    for indices in draws:
        for key, value in outcomes.on_rows(indices).items():
            if isinstance(value, (int, float)):
                collected.setdefault(key, []).append(float(value))
    return {key: np.asarray(samples) for key, samples in collected.items() if len(samples) == len(draws)}


def draw_counts(draws: np.ndarray, size: int) -> np.ndarray:
    """How often each row is drawn in each resample (resamples x rows), counted in one bincount."""
    offsets = (np.arange(len(draws)) * size)[:, None]
    counted = np.bincount((draws + offsets).ravel(), minlength=len(draws) * size)
    return counted.reshape(len(draws), size).astype(np.float64)


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided paired bootstrap p-value: how often a resample's difference falls on either side of zero,
    doubled (at least 1 / (resamples + 1): more resamples cannot say less)."""
    finite = differences[np.isfinite(differences)]
    if not finite.size:
        return float("nan")
    one_side = min(np.mean(finite <= 0), np.mean(finite >= 0))
    return float(max(min(1.0, 2 * one_side), 1 / (finite.size + 1)))


# -- outputs --------------------------------------------------------------------------------------
def write_evaluation(evaluation: Evaluation, folder: Path) -> None:
    """evaluation.json, evaluation.md and each model's predictions (rows as `llmkit predict` writes them);
    with --explain, explanations.html."""
    from llmkit.runs.folder import write_json_atomic, write_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    evaluation.output_dir = folder
    names = prediction_file_names(evaluation.scores)
    for scored, name in zip(evaluation.scores, names, strict=True):
        if scored.predictions:
            write_jsonl(folder / name, scored.predictions)
        if "confusion" in scored.analysis:
            draw_confusion_matrix(scored.analysis, folder, name.replace("predictions", "confusion_matrix"))
    record = evaluation_record(evaluation, names)
    if len(evaluation.scores) > 1:
        draw_comparison(record, folder)
    write_json_atomic(folder / EVALUATION_FILE, record)
    (folder / EVALUATION_REPORT).write_text(evaluation_markdown(evaluation, record), encoding="utf-8")
    explained = [(s.model, s.analysis) for s in evaluation.scores if s.analysis.get("explained_by")]
    if explained:
        from llmkit.inference.evaluation_report import explanations_html

        page = explanations_html(f"Why: the worst rows of {evaluation.data} explained", explained)
        (folder / EXPLANATIONS_PAGE).write_text(page, encoding="utf-8")


def draw_comparison(record: dict[str, Any], folder: Path) -> None:
    """Several models: their shared scores as one chart; the record says which file, or why not."""
    from llmkit.inference.evaluation_report import write_comparison_chart

    skipped = write_comparison_chart(record["models"], folder / COMPARISON_CHART)
    record["comparison_chart"] = {"skipped": skipped} if skipped else {"file": COMPARISON_CHART}
    if skipped:
        log(f"comparison chart skipped: {skipped}")


def draw_confusion_matrix(analysis: dict[str, Any], folder: Path, name: str) -> None:
    """The confusion matrix as a PNG beside the predictions; the analysis records the file or why not."""
    from llmkit.inference.evaluation_report import write_confusion_matrix

    image = Path(name).with_suffix(".png").name
    skipped = write_confusion_matrix(analysis["confusion"], folder / image)
    analysis["confusion_image"] = {"skipped": skipped} if skipped else {"file": image}
    if skipped:
        log(f"confusion matrix image skipped: {skipped}")


def prediction_file_names(scores: list[ModelScores]) -> list[str]:
    if len(scores) == 1:
        return [PREDICTIONS_FILE]
    return [
        f"predictions-{number}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', s.folder.name)}.jsonl"
        for number, s in enumerate(scores, start=1)
    ]


def evaluation_record(evaluation: Evaluation, names: list[str]) -> dict[str, Any]:
    return {
        "data": evaluation.data,
        "resamples": evaluation.resamples,
        "confidence": CONFIDENCE,
        "seed": SEED,
        "models": [
            {
                "model": s.model,
                "folder": str(s.folder),
                "task": s.task,
                "rows": s.rows,
                "seconds": s.seconds,
                "metrics": s.metrics,
                "intervals": {key: list(bounds) for key, bounds in s.intervals.items()},
                "difference_to_first": {
                    key: {"difference": d, "p_value": p} for key, (d, p) in s.differences.items()
                },
                "predictions": name if s.predictions else None,
                "analysis": s.analysis,
            }
            for s, name in zip(evaluation.scores, names, strict=True)
        ],
    }


def evaluation_markdown(evaluation: Evaluation, record: dict[str, Any] | None = None) -> str:
    """One table: a row per metric, a column per model (score and interval; later models: the difference
    to the first and its p-value)."""
    from llmkit.core.markdown import table

    scores = evaluation.scores
    keys = list(dict.fromkeys(key for s in scores for key in s.metrics))
    header = ["metric", *[f"{s.model} ({s.rows} rows)" for s in scores]]
    body = []
    for key in keys:
        cells = [key.removeprefix(f"{PREFIX}_")]
        for s in scores:
            cells.append(metric_cell(s, key))
        body.append(cells)
    lines = [f"# Evaluation on {evaluation.data}", "", *table(header, body), ""]
    if any(s.intervals for s in scores):  # none where every score is a mean of batch losses
        unit = next((s.outcomes.unit for s in scores if s.outcomes is not None), "rows")
        lines.append(
            f"[low, high]: {CONFIDENCE:.0%} bootstrap interval ({evaluation.resamples} resamples of the "
            f"{unit}, seed {SEED}): the range the score would likely fall in on another sample of such rows."
        )
        if len(scores) > 1:
            lines.append(
                f"Δ: difference to {scores[0].model} on the same resampled rows; p: paired bootstrap p-value "
                f"(small: the difference is unlikely to be chance)."
            )
    chart = (record or {}).get("comparison_chart", {})
    if "file" in chart:
        lines += ["", f"![the models' scores with their intervals]({chart['file']})"]
    elif "skipped" in chart:
        lines += ["", f"(comparison chart skipped: {chart['skipped']})"]
    from llmkit.inference.evaluation_report import analysis_markdown

    for s in scores:
        if s.analysis:
            lines += ["", *analysis_markdown(s.model, s.analysis)]
    return "\n".join(lines) + "\n"


def metric_cell(scored: ModelScores, key: str) -> str:
    if key not in scored.metrics:
        return "-"
    cell = shown(scored.metrics[key])
    if key in scored.intervals:
        low, high = scored.intervals[key]
        cell += f" [{shown(low)}, {shown(high)}]"
    if key in scored.differences:
        difference, p_value = scored.differences[key]
        cell += f" (Δ {difference:+.4g}, p {p_value:.3g})"
    return cell


def shown(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def summary_lines(evaluation: Evaluation) -> list[str]:
    """What the CLI prints: each model's scores in one line, then where the outputs are."""
    lines = []
    for s in evaluation.scores:
        shown_scores = ", ".join(
            f"{key.removeprefix(PREFIX + '_')} {metric_cell(s, key)}" for key in s.metrics
        )
        lines.append(f"{s.model}: {shown_scores}")
    lines.append(f"written to {evaluation.output_dir}")
    return lines


__all__ = ["Evaluation", "ModelScores", "RowOutcomes", "evaluate_models", "score_model"]
