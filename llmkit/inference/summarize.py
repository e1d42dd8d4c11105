"""`llmkit summarize`: summaries of documents with a summarization run, a model folder or an alias.

A folder written by a summarization recipe brings its own settings (prompt, prefix, lengths, column names)
from its recipe.yaml, so it summarizes exactly as it was evaluated; any other model (e.g. ``smollm2-135m``,
zero-shot) gets the task's defaults. The demo machinery is shared with `llmkit translate` (``text_demo``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from llmkit.inference import text_demo
from llmkit.tasks.summarization import SummarizationTask

HOW_TO_MAKE_ONE = "llmkit finetune recipes/summarize-dialogsum.yaml"


def summarization_task_for(model_dir: Path) -> SummarizationTask:
    """The task with a run's saved data settings, or the defaults fitted to any other model's context."""
    return cast(SummarizationTask, text_demo.task_for(SummarizationTask, model_dir))


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
    folder = text_demo.model_folder(SummarizationTask, model, HOW_TO_MAKE_ONE)
    settings = text_demo.generation_settings(max_new_tokens, num_beams)
    task = text_demo.task_for(SummarizationTask, folder, settings)
    return text_demo.run(task, folder, text, input_file, column)


def check_output(path: Path | None) -> None:
    """--output takes JSON lines in a writable place; checked before anything loads."""
    text_demo.check_output(path, "summaries")
