"""llmkit: Hugging Face fine-tuning recipes from one CLI, one config format and a small Python API.

Heavy libraries (torch, transformers, datasets) are imported lazily, so ``import llmkit`` and
``llmkit --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError

__version__ = "0.1.0"
#: The public API: name -> "module:attribute", imported on first use (``llmkit.finetune``...). Everything
#: else is reached through its package (``llmkit.data``, ``llmkit.models``, ...; the docs' Design page).
PUBLIC: dict[str, str] = {
    "finetune": "llmkit.training.spine:finetune",
    "FinetuneResult": "llmkit.training.spine:FinetuneResult",
    "load_recipe": "llmkit.recipe.loader:load_recipe",
    "validate": "llmkit.training.validate:validate",
    "sweep": "llmkit.training.sweep:sweep",
    "write_report": "llmkit.runs.report:write_report",
    "predict_file": "llmkit.inference.predict:predict_file",
    "evaluate_models": "llmkit.inference.evaluate:evaluate_models",
    "export": "llmkit.inference.export:export",
    "generate": "llmkit.inference.generate:generate",
    "SamplingSettings": "llmkit.tasks.decoding:SamplingSettings",
    "answer": "llmkit.inference.answer:answer",
    "fill_mask": "llmkit.inference.fill_mask:fill_mask",
    "summarize": "llmkit.inference.summarize:summarize",
    "translate": "llmkit.inference.translate:translate",
}
__all__ = [
    "FinetuneResult",
    "LlmkitError",
    "SamplingSettings",
    "__version__",
    "answer",
    "evaluate_models",
    "export",
    "fill_mask",
    "finetune",
    "generate",
    "load_recipe",
    "predict_file",
    "summarize",
    "sweep",
    "translate",
    "validate",
    "write_report",
]

if TYPE_CHECKING:
    from llmkit.inference.answer import answer
    from llmkit.inference.evaluate import evaluate_models
    from llmkit.inference.export import export
    from llmkit.inference.fill_mask import fill_mask
    from llmkit.inference.generate import generate
    from llmkit.inference.predict import predict_file
    from llmkit.inference.summarize import summarize
    from llmkit.inference.translate import translate
    from llmkit.recipe.loader import load_recipe
    from llmkit.runs.report import write_report
    from llmkit.tasks.decoding import SamplingSettings
    from llmkit.training.spine import FinetuneResult, finetune
    from llmkit.training.sweep import sweep
    from llmkit.training.validate import validate


def __getattr__(name: str) -> Any:
    if name not in PUBLIC:
        raise AttributeError(f"module 'llmkit' has no attribute {name!r}")
    module_name, attribute = PUBLIC[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)
