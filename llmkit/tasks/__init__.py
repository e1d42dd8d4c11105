"""The tasks: one file per task honouring the ``Task`` protocol (``base.py``), and their registry (recipe
``task:`` name -> task class, imported only when used); plus what several tasks share (causal LMs and chat
templates, decoding, next-sentence pairs) and classification's zero-shot prompts and verbalisers.

May import: core, metrics, data, models
"""

from __future__ import annotations

import importlib
from typing import Any

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.tasks.base import Task

#: name -> "module:Class"; each module is imported on first use.
TASKS: dict[str, str] = {
    "classification": "llmkit.tasks.classification:ClassificationTask",
    "fill-mask": "llmkit.tasks.fill_mask:FillMaskTask",
    "generation": "llmkit.tasks.generation:GenerationTask",
    "summarization": "llmkit.tasks.summarization:SummarizationTask",
    "translation": "llmkit.tasks.translation:TranslationTask",
    "token-classification": "llmkit.tasks.token_classification:TokenClassificationTask",
    "question-answering": "llmkit.tasks.question_answering:QuestionAnsweringTask",
    "preference": "llmkit.tasks.preference:PreferenceTask",
    "reward-model": "llmkit.tasks.reward_model:RewardModelTask",
    "embedding": "llmkit.tasks.embedding:EmbeddingTask",
    "grpo": "llmkit.tasks.grpo:GrpoTask",
}
#: Other names a recipe may give a task.
TASK_ALIASES: dict[str, str] = {"ner": "token-classification"}


def task_names() -> list[str]:
    return list(TASKS)


def task_names_with_scratch() -> list[str]:
    """The tasks that can start from a model built from scratch (``Task.scratch_style``)."""
    return [name for name in task_names() if get_task_class(name).scratch_style]


def get_task_class(name: str, where: str = "recipe") -> type[Task]:
    name = TASK_ALIASES.get(name, name)
    if name not in TASKS:
        raise LlmkitError(
            f"{where}: unknown task '{name}'{did_you_mean(name, TASKS)}; tasks: {', '.join(TASKS)}"
        )
    module_name, class_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_task(name: str, data: dict[str, Any], options: dict[str, Any] | None = None) -> Task:
    """The task for a recipe: its data settings and, for a task with a section of its own, that section."""
    task_cls = get_task_class(name)
    return task_cls(data, options) if task_cls.options_section else task_cls(data)


def inference_data(task_cls: type[Task], saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data settings a trained model is used with: the task's defaults, overlaid with those its run saved
    (`llmkit predict` and a reward-model run scoring GRPO's completions read a run so)."""
    return {**COMMON_DATA_DEFAULTS, **task_cls.data_defaults, **(saved or {})}


__all__ = [
    "TASKS",
    "TASK_ALIASES",
    "Task",
    "build_task",
    "get_task_class",
    "inference_data",
    "task_names",
    "task_names_with_scratch",
]
