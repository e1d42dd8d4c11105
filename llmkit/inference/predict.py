"""Batch predictions from a saved llmkit (or plain Hugging Face) model folder."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from llmkit.core.errors import LlmkitError
from llmkit.data.files import Split, read_split
from llmkit.models.adaptation import ADAPTER_CONFIG_FILE, is_adapter_folder, model_config_dict
from llmkit.models.resolve import check_weights, load_for_inference, load_tokenizer, resolve_model
from llmkit.recipe.loader import apply_overrides, check_section
from llmkit.runs.folder import RECIPE_FILE
from llmkit.tasks import Task, get_task_class, inference_data

#: Architecture name suffix -> task, for folders that llmkit did not write (no recipe.yaml).
ARCHITECTURE_TASKS = {
    "ForSequenceClassification": "classification",
    "ForMaskedLM": "fill-mask",
    "ForPreTraining": "fill-mask",  # BERT pre-trained with next-sentence prediction: its MLM head fills masks
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}

#: The file that makes a folder a sentence-transformers model (its modules: encoder, pooling, ...).
SENTENCE_TRANSFORMERS_MODULES = "modules.json"


def task_for_model(model_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Task:
    """The task (and its column mapping) a model folder was trained for: recipe.yaml, else its config.

    ``overrides`` (``data.text=review``) map the input's columns when they are not the training data's;
    ``task=NAME`` among them uses the model for another task than its own (a causal LM as a zero-shot
    classifier: ``task=classification data.verbalizer=...``), with that task's default data settings."""
    named, overrides = named_task(overrides)
    recipe_file = model_dir / RECIPE_FILE
    if recipe_file.exists():
        saved = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
        task_cls = get_task_class(saved.get("task", "classification"), where=str(recipe_file))
        if named is None or named is task_cls:
            return task_with_defaults(task_cls, saved.get("data") or {}, overrides)
    if named is not None:
        return task_with_defaults(named, overrides=overrides)
    if (model_dir / SENTENCE_TRANSFORMERS_MODULES).exists():  # a sentence-transformers folder: embeddings
        return task_with_defaults(get_task_class("embedding"), overrides=overrides)
    found = architectures(model_dir)
    for architecture in found:
        for suffix, name in ARCHITECTURE_TASKS.items():
            if architecture.endswith(suffix):
                return task_with_defaults(get_task_class(name), overrides=overrides)
    raise LlmkitError(
        f"model folder {model_dir}: cannot tell which task it was trained for (no {RECIPE_FILE}, "
        f"architectures {found or None}); use a folder written by `llmkit finetune`, or name the task "
        f"(task=NAME; a causal LM classifies zero-shot with task=classification data.verbalizer=...)"
    )


def named_task(overrides: list[str] | tuple[str, ...]) -> tuple[type[Task] | None, list[str]]:
    """``task=NAME`` taken out of the overrides (the last one wins), and the rest."""
    from llmkit.recipe.loader import parse_override

    named, rest = None, []
    for override in overrides:
        key, value = parse_override(override)
        if key == ["task"]:
            named = get_task_class(str(value), where="task=")
        else:
            rest.append(override)
    return named, rest


def task_with_defaults(
    task_cls: type[Task], data: dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Task:
    """A task object for inference: default data settings, overlaid with a saved recipe's, then with
    ``data.KEY=VALUE`` overrides (checked as a recipe's are: unknown keys and wrong types are errors)."""
    settings = inference_data(task_cls, data)
    if overrides:
        settings = check_section(
            data_overrides(overrides), settings, "data", "llmkit predict", task_cls.data_words
        )
    return task_cls(settings)


def data_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``data.text=review`` ... -> ``{"text": "review"}``; inference reads data only, so nothing else."""
    raw = apply_overrides({}, overrides)
    others = [key for key in raw if key != "data"]
    if others:
        raise LlmkitError(
            f"llmkit predict: '{others[0]}' is not a data setting; predict takes data.KEY=VALUE overrides "
            f"only, e.g. data.text=review to read the text from column 'review'"
        )
    data = raw.get("data")
    if not isinstance(data, dict):
        raise LlmkitError("llmkit predict: give data.KEY=VALUE, e.g. data.text=review")
    return data


def predict_file(
    model: str,
    input_path: str | Path,
    output_path: str | Path | None = None,
    base: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    explain: bool = False,
) -> list[dict[str, Any]]:
    """Predict every row of ``input_path``; write JSONL/CSV/TSV to ``output_path`` or stdout.

    Each output row is the input row unchanged plus the task's prediction keys (``predicted_label``,
    ``predicted_score`` for classification), so a labelled file keeps its gold labels beside them.
    ``overrides`` (``data.text=review``) name the input's columns when they differ from the training data's.
    ``explain``: each row also gets an ``explanation`` of its prediction (:mod:`llmkit.inference.explain`).
    """
    from llmkit.inference.explain import EXPLANATION, check_explainable, explanations

    model_dir = resolve_model(model)
    task = task_for_model(model_dir, overrides)
    if explain:
        check_explainable(task, model_dir)
    path = Path(input_path)
    split = read_split("test", path, "--input")
    task.check_inputs(split)
    refuse_prediction_columns(split, (*task.prediction_keys, *([EXPLANATION] if explain else [])))
    output = Path(output_path) if output_path else None
    check_output_file(output, (".jsonl", ".json", ".csv", ".tsv"), "use a .jsonl, .csv or .tsv file name")
    tokenizer = load_tokenizer(model_dir)
    weights = check_weights(model_dir, exported=True)
    loaded = load_for_inference(task, model_dir, **weights, **base_option(model_dir, base))
    rows = split.dataset.to_list()
    results = task.rows_with_predictions(loaded, tokenizer, rows)
    if explain:  # the predictions as they are, each row's explanation beside them
        found = explanations(task, loaded, tokenizer, rows, results)
        results = [{**row, EXPLANATION: why} for row, why in zip(results, found, strict=True)]
    text = rows_as_text(results, output.suffix.lower() if output else ".jsonl")
    if output is None:
        sys.stdout.write(text)
    else:
        with output.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return results


def refuse_prediction_columns(split: Split, keys: tuple[str, ...]) -> None:
    """Predictions go beside the input's columns and never over them; checked before the model loads."""
    taken = [key for key in keys if key in split.dataset.column_names]
    if taken:
        raise LlmkitError(
            f"{split.origin} already has a column '{taken[0]}', which the predictions are written to; "
            f"rename or drop that column"
        )


def check_output_file(output: Path | None, suffixes: tuple[str, ...], hint: str) -> None:
    """An --output that cannot be written is refused before any inference runs, not after it."""
    if output is None:
        return
    if output.suffix.lower() not in suffixes:
        raise LlmkitError(f"--output {output}: {hint}")
    if output.is_dir():
        raise LlmkitError(f"--output {output} is a folder; give a file name")
    folder = output.parent
    if not folder.is_dir():
        raise LlmkitError(f"--output {output}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise LlmkitError(f"--output {output}: not writable; choose another file")


def rows_as_text(rows: list[dict[str, Any]], suffix: str) -> str:
    """Rows as JSON lines or CSV/TSV text; dates, datetimes and Decimals (from Parquet) become strings."""
    if suffix not in (".csv", ".tsv"):
        return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def architectures(model_dir: Path) -> list[str]:
    return list(model_config_dict(model_dir).get("architectures") or [])


def folder_for_task(
    model: str | None, task_name: str, how_to_make_one: str, or_else: str = ""
) -> tuple[Task, Path]:
    """Resolve the model folder for a demo command, and the task object that loads it.

    ``model=None`` takes the newest run of that task under ./runs; a folder trained for another task (a
    classifier asked to fill masks) is refused with a one-line error rather than giving nonsense;
    ``or_else`` names another way forward in that error (fill-mask: a causal LM).
    """
    from llmkit.runs.folder import newest_run_here

    if model is None:
        folder = newest_run_here(task_name)
        if folder is None:
            raise LlmkitError(
                f"no {task_name} run under ./runs: make one with `{how_to_make_one}`, or pass --model DIR"
            )
    else:
        folder = resolve_model(model)
    task_cls = get_task_class(task_name)
    suffixes = tuple(s for s, name in ARCHITECTURE_TASKS.items() if name == task_name)
    found = architectures(folder)
    base_encoder = any(a.endswith("Model") for a in found)  # no head yet: the task adds one
    if found and not base_encoder and not any(a.endswith(suffixes) for a in found):
        raise LlmkitError(
            f"model folder {folder} holds a {found[0]}, which cannot do {task_name}; "
            f"pass a folder trained with a {task_name} recipe (`{how_to_make_one}`)"
            f"{f', or {or_else}' if or_else else ''}"
        )
    return task_with_defaults(task_cls), folder


def base_option(model_dir: Path, base: str | None) -> dict[str, str]:
    """``--base`` for loading: only an adapter folder has a base to point at."""
    if base is None:
        return {}
    if not is_adapter_folder(model_dir):
        raise LlmkitError(f"--base {base}: {model_dir} is a full model, not an adapter; drop --base")
    return {"base": base}


def merge_run(run: Path, output: Path, base: str | None = None) -> Path:
    """`llmkit merge`: the adapter of ``run`` merged into its base, saved as a plain model folder."""
    from llmkit.models.adaptation import merge_adapter

    if not run.is_dir():
        raise LlmkitError(f"{run}: no such folder; give the output_dir of a run trained with a peft: section")
    if not (run / ADAPTER_CONFIG_FILE).is_file():
        raise LlmkitError(
            f"{run}: no adapter to merge (no {ADAPTER_CONFIG_FILE}): it is a full model already, usable as "
            f"it is; llmkit merge takes the output_dir of a run trained with a peft: section"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise LlmkitError(f"--output {output} already exists and is not empty; choose another folder")
    task = task_for_model(run)
    return merge_adapter(task, run, output, base=base)
