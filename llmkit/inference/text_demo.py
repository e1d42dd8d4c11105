"""The demos of the text-to-text tasks (`llmkit summarize`, `llmkit translate`): texts in, texts out.

A folder written by a recipe of the task brings its own settings (prompt, prefix, lengths, languages, column
names) from its recipe.yaml, so it generates exactly as it was evaluated; any other model (e.g.
``smollm2-135m``, zero-shot) gets the task's defaults and the settings the command line gives. The model is
checked (encoder-decoder or causal LM) before its weights load.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.data.files import read_split

if TYPE_CHECKING:
    from llmkit.tasks.text_to_text import TextToTextTask


def saved_data(task_cls: type[TextToTextTask], model_dir: Path) -> dict[str, Any] | None:
    """The data settings of a run of this task (its recipe.yaml), None for any other folder."""
    from llmkit.runs.folder import RECIPE_FILE

    recipe_file = model_dir / RECIPE_FILE
    if recipe_file.exists():
        saved = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
        if saved.get("task") == task_cls.name:
            return saved.get("data") or {}
    return None


def task_for(
    task_cls: type[TextToTextTask], model_dir: Path, settings: dict[str, Any] | None = None
) -> TextToTextTask:
    """The task with a run's saved data settings, or the defaults fitted to any other model's context;
    ``settings`` (data keys from the command line) go over either, and are never fitted."""
    from llmkit.inference.predict import task_with_defaults

    data = saved_data(task_cls, model_dir)
    task = cast("TextToTextTask", task_with_defaults(task_cls, {**(data or {}), **(settings or {})}))
    if data is None:
        task.fit_context(model_dir)
        task.data.update(settings or {})
    return task


def read_rows(task: TextToTextTask, text: str | None, input_file: Path | None) -> list[dict[str, Any]]:
    """Rows to work on: TEXT ('-' or nothing: standard input) or an --input file, checked.

    A table (CSV, JSONL, ...) must have the task's source column; a .txt file holds one text a line or a
    paragraph each (``task.txt_unit``) and sets the column to ``text``. Standard input is one text, or for
    a line-by-line task one text a non-empty line.
    """
    if input_file is not None:
        if text is not None:
            raise LlmkitError("give either a TEXT or --input FILE, not both")
        from llmkit.inference.predict import refuse_prediction_columns

        split = read_split("test", input_file, "--input", txt_unit=task.txt_unit)
        if input_file.suffix.lower() == ".txt":
            task.set_source_column("text")
        column = task.source_column()
        if column not in split.dataset.column_names:
            raise LlmkitError(
                f"--input {input_file}: no {task.source_noun} column '{column}'; columns are: "
                f"{', '.join(split.dataset.column_names)}; pass --column <one of them>"
            )
        task.check_inputs(split)
        refuse_prediction_columns(split, task.prediction_keys)
        return split.dataset.to_list()
    if text is None or text == "-":
        if text is None and sys.stdin.isatty():
            raise LlmkitError(f"give a TEXT, --input FILE, or pipe a {task.source_noun} in on standard input")
        text = sys.stdin.read()
    if not text.strip():
        raise LlmkitError(f"the {task.source_noun} is empty; give some text to {task.verb}")
    if task.txt_unit == "line" and "\n" in text.strip():
        return [{task.source_column(): line} for line in text.splitlines() if line.strip()]
    return [{task.source_column(): text}]


def model_folder(task_cls: type[TextToTextTask], model: str | None, how_to_make_one: str) -> Path:
    """--model as a folder, or the newest run of the task under ./runs (said on stderr)."""
    from llmkit.models.resolve import resolve_model
    from llmkit.runs.folder import newest_run_here

    if model is not None:
        return resolve_model(model)
    folder = newest_run_here(task_cls.name)
    if folder is None:
        raise LlmkitError(
            f"no {task_cls.name} run under ./runs: make one with `{how_to_make_one}`, or pass --model "
            f"DIR|ALIAS (e.g. --model smollm2-135m, zero-shot)"
        )
    log(f"{folder} answers (the newest {task_cls.name} run under ./runs)")
    return folder


def generation_settings(max_new_tokens: int | None, num_beams: int | None) -> dict[str, int]:
    """--max-new-tokens and --num-beams as data settings, checked."""
    settings = {}
    for key, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        if value is not None:
            if value < 1:
                raise LlmkitError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
            settings[key] = value
    return settings


def run(
    task: TextToTextTask, folder: Path, text: str | None, input_file: Path | None, column: str | None
) -> list[dict[str, Any]]:
    """Each input row with the generated text under the task's prediction key."""
    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import check_weights, load_for_inference, load_tokenizer

    if column is not None:
        task.set_source_column(column)
    rows = read_rows(task, text, input_file)
    task.check_model(folder)
    tokenizer = load_tokenizer(folder)
    with quiet_library_progress():
        loaded = load_for_inference(task, folder, **check_weights(folder))
    generated = task.generate_targets(loaded, tokenizer, [row[task.source_column()] for row in rows])
    return [{**row, task.prediction_key: output} for row, output in zip(rows, generated, strict=True)]


def check_output(path: Path | None, noun: str) -> None:
    """--output takes JSON lines in a writable place; checked before anything loads."""
    from llmkit.inference.predict import check_output_file

    check_output_file(path, (".jsonl", ".json"), f"{noun} are written as JSON lines; use a .jsonl file name")
