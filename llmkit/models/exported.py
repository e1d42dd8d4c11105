"""Exported model folders (`llmkit export`): what one holds, and loading it back for predict and evaluate.

An exported folder is a plain model folder (config.json with the labels, the tokenizer, the run's
recipe.yaml) whose weights are one of:

* ``model.onnx``: an ONNX graph (fp32, int8 or fp16 weights) run with onnxruntime on the CPU;
* ``model_int8.pt``: the state_dict of a PyTorch model whose Linear layers were quantized to dynamic int8
  (``torch.ao.quantization.quantize_dynamic``), read back with ``torch.load(weights_only=True)`` (no
  pickled code runs) into the task's model built from config.json and quantized the same way.

``export.json`` says which (format, quantization, the folder it was exported from).
:func:`load_exported` turns either into something the tasks' ``predict`` and a Trainer's evaluation take
as they take a transformers model: ``model(**batch)`` returns an output whose ``.logits`` is a float
tensor (and ``.loss`` when the batch has ``labels``), with ``.config`` and ``.device``. Both run on the
CPU only (dynamic int8 kernels, onnxruntime's CPU execution provider), whatever device the machine has.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError

#: The manifest that marks an exported folder.
EXPORT_FILE = "export.json"
ONNX_FILE = "model.onnx"
TORCH_INT8_FILE = "model_int8.pt"
#: How to install the export libraries, named by every error about a missing one.
EXPORT_EXTRA = "pip install -e '.[export]'"


def is_exported_folder(folder: Path) -> bool:
    return (Path(folder) / EXPORT_FILE).is_file()


def read_export(folder: Path) -> dict[str, Any]:
    """The folder's export.json, checked enough that loading can trust it."""
    path = Path(folder) / EXPORT_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmkitError(f"{path}: cannot be read ({exc}); export the model again") from None
    weights = Path(folder) / str(manifest.get("file", ""))
    if manifest.get("format") not in ("onnx", "torch") or not weights.is_file():
        raise LlmkitError(f"{path}: names no weights file in {folder} ({manifest.get('file')}); export again")
    return manifest


def require(module: str, what: str) -> Any:
    """Import an export library, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LlmkitError(
            f"{what} needs {module.split('.')[0]}, which is not installed; install it with llmkit's extra: "
            f"`{EXPORT_EXTRA}`"
        ) from None


def exported_refusal(folder: Path, what: str = "this command") -> LlmkitError:
    """What a command needing the PyTorch model (training, --explain, the demos) says of an exported one."""
    manifest = read_export(folder)
    source = manifest.get("source") or "the run folder it was exported from"
    return LlmkitError(
        f"{folder} is an exported model ({manifest['file']}), which llmkit predict and llmkit evaluate read; "
        f"{what} needs the PyTorch model: use {source}"
    )


def load_exported(task: Any, folder: Path, threads: int | None = None) -> Any:
    """The exported model of ``folder`` in eval mode, on the CPU, ready for ``task.predict``; ``threads``
    bounds onnxruntime's (None: its default, every core)."""
    manifest = read_export(folder)
    if manifest["format"] == "onnx":
        from llmkit.models.onnx_runner import OnnxModel

        path = Path(folder) / manifest["file"]
        return OnnxModel(path, onnx_session(path, threads))
    return load_torch_int8(task, Path(folder), manifest)


def quantize_linear_int8(model: Any) -> Any:
    """Dynamic int8 on every Linear layer (weights int8, activations quantized per batch), on the CPU."""
    import torch

    with warnings.catch_warnings():  # torch.ao.quantization: deprecated in favour of torchao, still there
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )


def load_torch_int8(task: Any, folder: Path, manifest: dict[str, Any]) -> Any:
    """The task's model built from config.json, quantized as the export did, then its saved state_dict."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    model = quantize_linear_int8(task.auto_class().from_config(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation inside torch's own unpickler
        state = torch.load(folder / manifest["file"], map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"{folder / manifest['file']}: does not fit its config.json ({first_line})"
        ) from None
    return model.eval()


def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU; ``threads`` bounds its intra-op threads (None: onnxruntime's)."""
    ort = require("onnxruntime", f"running {path.name}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmkitError(
            f"{path}: onnxruntime cannot load it ({first_line}); export the model again"
        ) from None
