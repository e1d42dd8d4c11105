"""llmkit: Hugging Face fine-tuning recipes from one CLI, one config format and a small Python API.

Heavy libraries (torch, transformers, datasets) are imported lazily, so ``import llmkit`` and
``llmkit --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FinetuneResult", "LlmkitError", "__version__", "finetune", "load_recipe", "write_report"]

from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.config import load_recipe
    from llmkit.report import write_report
    from llmkit.train import FinetuneResult, finetune


def __getattr__(name: str) -> Any:
    if name in ("finetune", "FinetuneResult"):
        from llmkit import train

        return getattr(train, name)
    if name == "load_recipe":
        from llmkit.config import load_recipe

        return load_recipe
    if name == "write_report":
        from llmkit.report import write_report

        return write_report
    raise AttributeError(f"module 'llmkit' has no attribute {name!r}")
