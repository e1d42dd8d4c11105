"""`llmkit summarize`: summaries of documents with a summarization run, a model folder or an alias.

A folder written by a summarization recipe brings its own settings (prompt, prefix, lengths, column names)
from its recipe.yaml, so it summarizes exactly as it was evaluated; any other model (e.g. ``smollm2-135m``,
zero-shot) gets the task's defaults. The model is checked (encoder-decoder or causal LM) before its
weights load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import yaml

from llmkit.data import read_split
from llmkit.errors import LlmkitError
from llmkit.tasks.summarization import PREDICTION_KEY, SummarizationTask

HOW_TO_MAKE_ONE = "llmkit finetune recipes/summarize-dialogsum.yaml"


def summarization_task_for(model_dir: Path) -> SummarizationTask:
    """The task with a run's saved data settings, or the defaults fitted to any other model's context."""
    from llmkit.predict import task_with_defaults
    from llmkit.run_folder import RECIPE_FILE

    recipe_file = model_dir / RECIPE_FILE
    if recipe_file.exists():
        saved = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
        if saved.get("task") == SummarizationTask.name:
            return cast(SummarizationTask, task_with_defaults(SummarizationTask, saved.get("data") or {}))
    task = cast(SummarizationTask, task_with_defaults(SummarizationTask))
    task.fit_context(model_dir)
    return task


def read_rows(task: SummarizationTask, text: str | None, input_file: Path | None) -> list[dict[str, Any]]:
    """Rows to summarize: TEXT ('-' or nothing: all of stdin) or an --input file, checked.

    A table (CSV, JSONL, ...) must have the task's document column; a .txt file holds documents
    separated by blank lines (a dialogue spans several lines) and sets the column to ``text``.
    """
    if input_file is not None:
        if text is not None:
            raise LlmkitError("give either a TEXT or --input FILE, not both")
        from llmkit.predict import refuse_prediction_columns

        split = read_split("test", input_file, "--input", txt_unit="paragraph")
        if input_file.suffix.lower() == ".txt":
            task.data["document"] = "text"
        column = task.data["document"]
        if column not in split.dataset.column_names:
            raise LlmkitError(
                f"--input {input_file}: no document column '{column}'; columns are: "
                f"{', '.join(split.dataset.column_names)}; pass --column <one of them>"
            )
        task.check_inputs(split)
        refuse_prediction_columns(split, task.prediction_keys)
        return split.dataset.to_list()
    if text is None or text == "-":
        if text is None and sys.stdin.isatty():
            raise LlmkitError("give a TEXT, --input FILE, or pipe a document in on standard input")
        text = sys.stdin.read()
    if not text.strip():
        raise LlmkitError("the document is empty; give some text to summarize")
    return [{task.data["document"]: text}]


def summarize(
    text: str | None = None,
    input_file: Path | None = None,
    model: str | None = None,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    column: str | None = None,
) -> list[dict[str, Any]]:
    """Each input row with its ``generated_summary``; raises LlmkitError for anything the user can fix.

    ``column`` names the document column of a table --input (default: the run's ``data.document``).
    """
    from llmkit.models import check_weights, load_for_inference, load_tokenizer, resolve_model
    from llmkit.progress import quiet_library_progress
    from llmkit.run_folder import latest_run

    if model is None:
        folder = latest_run(SummarizationTask.name)
        if folder is None:
            raise LlmkitError(
                f"no summarization model yet: make one with `{HOW_TO_MAKE_ONE}`, or pass --model DIR|ALIAS "
                f"(e.g. --model smollm2-135m, zero-shot)"
            )
    else:
        folder = resolve_model(model)
    task = summarization_task_for(folder)
    for key, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        if value is not None:
            if value < 1:
                raise LlmkitError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
            task.data[key] = value
    if column is not None:
        task.data["document"] = column
    rows = read_rows(task, text, input_file)
    task.check_model(folder)
    tokenizer = load_tokenizer(folder)
    with quiet_library_progress():
        loaded = load_for_inference(task, folder, **check_weights(folder))
    summaries = task.summarize(loaded, tokenizer, [row[task.data["document"]] for row in rows])
    return [{**row, PREDICTION_KEY: summary} for row, summary in zip(rows, summaries, strict=True)]


def check_output(path: Path | None) -> None:
    """--output takes JSON lines in a writable place; checked before anything loads."""
    from llmkit.predict import check_output_file

    hint = "summaries are written as JSON lines; use a .jsonl file name"
    check_output_file(path, (".jsonl", ".json"), hint)
