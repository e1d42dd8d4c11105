"""`llmkit translate`: translations with a translation run, a model folder or an alias.

A folder written by a translation recipe brings its own settings (languages, prompt, prefix, lengths, column
names) from its recipe.yaml, so it translates exactly as it was evaluated; any other model (e.g.
``smollm2-135m``, zero-shot) gets the task's defaults and needs the two languages (--source-lang,
--target-lang). The demo machinery is shared with `llmkit summarize` (``text_demo``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from llmkit.core.errors import LlmkitError
from llmkit.inference import text_demo
from llmkit.tasks.translation import TranslationTask

HOW_TO_MAKE_ONE = "llmkit finetune recipes/translate-multi30k.yaml"


def translation_task_for(model_dir: Path, settings: dict[str, Any] | None = None) -> TranslationTask:
    """The task with a run's saved data settings, or the defaults fitted to any other model's context."""
    return cast(TranslationTask, text_demo.task_for(TranslationTask, model_dir, settings))


def translate(
    text: str | None = None,
    input_file: Path | None = None,
    model: str | None = None,
    source_lang: str | None = None,
    target_lang: str | None = None,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    column: str | None = None,
) -> list[dict[str, Any]]:
    """Each input row with its ``generated_translation``; raises LlmkitError for anything the user can fix.

    ``source_lang``/``target_lang`` name the languages (codes such as en, de, or names); a translation run
    knows its own. ``column`` names the source column of a table --input (default: the run's source column,
    else the column named after the source language).
    """
    folder = text_demo.model_folder(TranslationTask, model, HOW_TO_MAKE_ONE)
    settings: dict[str, Any] = text_demo.generation_settings(max_new_tokens, num_beams)
    for key, value in (("source_lang", source_lang), ("target_lang", target_lang)):
        if value is not None:
            if not value.strip():
                raise LlmkitError(f"--{key.replace('_', '-')} is empty; give a language, e.g. en or German")
            settings[key] = value
    if text_demo.saved_data(TranslationTask, folder) is None and (source_lang is None or target_lang is None):
        raise LlmkitError(
            f"model {folder} is not a translation run, so nothing says which languages to translate between; "
            f"pass --source-lang and --target-lang (e.g. --source-lang en --target-lang de)"
        )
    task = translation_task_for(folder, settings)
    return text_demo.run(task, folder, text, input_file, column)


def check_output(path: Path | None) -> None:
    """--output takes JSON lines in a writable place; checked before anything loads."""
    text_demo.check_output(path, "translations")
