"""`llmkit export`: a run folder as an ONNX graph (fp32, dynamic int8 or fp16) or as PyTorch dynamic int8.

The exported folder is a model folder of its own (:mod:`llmkit.models.exported`): the weights, config.json
(labels, ``id2label``, ``problem_type``, ``label_thresholds`` where the run chose them), the tokenizer, the
run's recipe.yaml, ``export.json`` and a README.md model card with an "Exported model" section. `llmkit
predict` and `llmkit evaluate` read it as they read the run. A LoRA run is exported with its adapter merged
into the base (as `llmkit merge` writes it).

How, and why so:

* **ONNX graph**: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` and onnxscript), the exporter
  PyTorch has shipped as its default since 2.9, with the batch and sequence axes dynamic
  (``torch.export.Dim``); the graph takes the tokenizer's ``input_ids``, ``attention_mask`` (and
  ``token_type_ids`` where it makes them) and returns ``logits``. The TorchScript exporter (``dynamo=False``)
  exports a BERT classifier as well, but is deprecated and due to be removed. Optimum is not used:
  optimum 2.x moved its ONNX export to optimum-onnx, whose only release (0.1.0) requires
  transformers < 4.58 and optimum ~= 2.1, while llmkit runs on transformers 5.
* **int8 (ONNX)**: ``onnxruntime.quantization.quantize_dynamic`` on the fp32 graph: the weights of every
  MatMul/Gemm as int8 (per tensor), activations quantized per batch at run time; no calibration data.
* **fp16 (ONNX)**: ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 inputs and
  outputs kept: half the size; for a GPU's onnxruntime (on the CPU it runs, with casts, no faster).
* **int8 (PyTorch, --format torch)**: ``torch.ao.quantization.quantize_dynamic`` on every Linear layer; the
  quantized state_dict is saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``
  (tensors only: no pickled code runs, which is why not TorchScript, whose archive is code), into the
  task's model built from config.json and quantized the same way.

Every export is checked before the folder is written: the exported model runs on a few fixed sentences and
its logits are compared with the PyTorch model's (fp32 ONNX must agree within 1e-3; int8 and fp16 report
how many predictions agree); ``export.json`` keeps the numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log, quiet_library_progress
from llmkit.models.exported import (
    EXPORT_EXTRA,
    EXPORT_FILE,
    ONNX_FILE,
    TORCH_INT8_FILE,
    is_exported_folder,
    load_exported,
    quantize_linear_int8,
    require,
)
from llmkit.runs.folder import MODEL_CARD_FILE, RECIPE_FILE

#: Tasks whose models export: one logits output over encoder inputs.
EXPORTED_TASKS = ("classification", "token-classification")
#: --format -> the --quantize values it takes (None: full precision).
FORMATS: dict[str, tuple[str | None, ...]] = {"onnx": (None, "int8", "fp16"), "torch": ("int8",)}
#: The inputs an exported graph may take, in this order.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: fp32 ONNX logits must be this close to PyTorch's on the check sentences.
FP32_TOLERANCE = 1e-3
#: What the export is checked on: sentences of different lengths, so padding is exercised.
CHECK_TEXTS = (
    "A wonderful film with a great cast.",
    "I hated every minute of it",
    "The food was cold and the staff were rude, so we left before the main course arrived.",
    "ok",
    "George Washington went to Washington on Monday.",
    "brilliant, funny and moving",
    "The app crashes constantly and support never answers my emails",
    "Paris is lovely in the spring",
)


def export(
    run_or_model: str | Path,
    output: str | Path,
    format: str = "onnx",
    quantize: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the model of a run (or model) folder into the new folder ``output``; returns ``output``.

    ``format``: ``onnx`` (``quantize`` None, ``int8`` or ``fp16``) or ``torch`` (``quantize="int8"``).
    """
    from llmkit.inference.predict import task_for_model
    from llmkit.models.resolve import check_weights, load_model, load_tokenizer
    from llmkit.models.sentence_classifier import is_sentence_classifier

    source, output = Path(run_or_model), Path(output)
    check_source(source)
    check_format(format, quantize)
    task = task_for_model(source)
    if task.name not in EXPORTED_TASKS:
        raise LlmkitError(
            f"{source} is a {task.name} model, which llmkit export does not support; it exports "
            f"{' and '.join(EXPORTED_TASKS)} models"
        )
    if is_sentence_classifier(source):
        raise LlmkitError(
            f"{source} is a SetFit run (a sentence-transformers body and a linear head), which llmkit export "
            f"does not support; llmkit predict and evaluate read the run folder itself"
        )
    if format == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "llmkit export --format onnx")
    check_output(output, source, overwrite)
    tokenizer = load_tokenizer(source)
    with quiet_library_progress(errors_only=True):
        model = load_model(task, source, **check_weights(source))  # a LoRA run: merged into its base
    model = model.float().cpu().eval()  # weights stored in bf16 too: the export starts from fp32
    model.config.architectures = [type(model).__name__]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
    try:
        inputs = check_inputs(model, tokenizer)
        if format == "onnx":
            write_onnx(model, inputs, staging, quantize)
            weights = ONNX_FILE
        else:
            write_torch_int8(model, staging)
            weights = TORCH_INT8_FILE
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if (source / RECIPE_FILE).is_file():
            shutil.copy2(source / RECIPE_FILE, staging / RECIPE_FILE)
        manifest = {
            "format": format,
            "quantize": quantize,
            "file": weights,
            "bytes": (staging / weights).stat().st_size,
            "task": task.name,
            "source": str(source.resolve()),
            "inputs": list(inputs),
        }
        # written twice: the check loads the staging folder as predict will (manifest first), then its numbers
        # join the manifest
        (staging / EXPORT_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        manifest["check"] = check_export(task, model, staging, inputs, quantize)
        (staging / EXPORT_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        write_model_card(staging, source, manifest, output.name)
        replace_folder(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"exported {source} to {output}: {summary(manifest)}")
    return output


def check_source(source: Path) -> None:
    from llmkit.runs.folder import MODEL_FOLDER_MARKERS

    if not source.is_dir():
        raise LlmkitError(f"{source}: no such folder; give a run folder written by llmkit finetune")
    if is_exported_folder(source):
        raise LlmkitError(f"{source} is an exported model already; export the run folder it came from")
    if not any((source / marker).is_file() for marker in MODEL_FOLDER_MARKERS):
        raise LlmkitError(
            f"{source} is not a model folder (no config.json); give a run folder written by llmkit finetune"
        )


def check_format(format: str, quantize: str | None) -> None:
    if format not in FORMATS:
        raise LlmkitError(f"--format {format}: not a format; choose {' or '.join(FORMATS)}")
    if quantize not in FORMATS[format]:
        shown = ", ".join("none" if q is None else q for q in FORMATS[format])
        extra = " (full-precision PyTorch weights: the run folder itself)" if format == "torch" else ""
        raise LlmkitError(f"--quantize {quantize or 'none'}: --format {format} takes {shown}{extra}")


def check_output(output: Path, source: Path, overwrite: bool) -> None:
    """A new or empty folder, or (with --overwrite) one an earlier export wrote; never the run itself."""
    if output.exists() and not output.is_dir():
        raise LlmkitError(f"--output {output} is a file; give a folder name")
    if output.resolve() == source.resolve() or output.resolve() in source.resolve().parents:
        raise LlmkitError(f"--output {output} holds the run {source}; choose a new folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not overwrite:
        raise LlmkitError(
            f"--output {output} already exists and is not empty; choose another folder or --overwrite"
        )
    if not is_exported_folder(output):
        raise LlmkitError(
            f"--output {output}: --overwrite replaces only a folder llmkit export wrote (with "
            f"{EXPORT_FILE}), and this one is not; choose another folder"
        )


def replace_folder(staging: Path, output: Path) -> None:
    """Put the finished export in place: an earlier one is removed only once the new one is complete."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{staging.name}")
        output.rename(old)
    staging.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the model's inputs -------------------------------------------------------------------------------
def check_inputs(model: Any, tokenizer: Any) -> dict[str, Any]:
    """The check sentences as the model's input tensors (only those the model's forward takes)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    encoded = tokenizer(list(CHECK_TEXTS), padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {name: encoded[name] for name in INPUT_NAMES if name in encoded and name in accepted}


def logits_module(model: Any, names: list[str]) -> Any:
    """The model as a Module of positional inputs (``names``, in order) returning only its logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            given = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            return self.model(**{name: given[name] for name in names}).logits

    return Logits().eval()  # a new Module trains: the exporter would hand its mode back to the model


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """The exporters' progress lines, deprecation notes and 'torchvision is not installed' logs, hidden."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# -- the formats ----------------------------------------------------------------------------------------
def write_onnx(model: Any, inputs: dict[str, Any], folder: Path, quantize: str | None) -> None:
    """``folder/model.onnx``: the fp32 graph, then quantized to int8 or converted to fp16 in place."""
    import torch

    names = list(inputs)
    if "attention_mask" not in names:
        raise LlmkitError(
            f"{type(model).__name__}: its tokenizer makes no attention_mask; llmkit export needs one"
        )
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    fp32 = folder / ("model_fp32.onnx" if quantize else ONNX_FILE)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > 1_800_000_000  # protobuf's 2 GB
    with quiet_export(), torch.no_grad():
        try:
            torch.onnx.export(
                logits_module(model, names),
                tuple(inputs.values()),
                str(fp32),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                dynamo=True,
                external_data=large,
                verbose=False,
            )
        except Exception as exc:  # torch.export's many error types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LlmkitError(
                f"torch.onnx.export cannot export this {type(model).__name__} ({first_line}); export a run "
                f"of another model, or --format torch --quantize int8"
            ) from None
    if quantize == "int8":
        quantization = require("onnxruntime.quantization", "--quantize int8")
        with quiet_export():
            quantization.quantize_dynamic(
                str(fp32),
                str(folder / ONNX_FILE),
                weight_type=quantization.QuantType.QInt8,
                use_external_data_format=large,
            )
    elif quantize == "fp16":
        import onnx

        float16 = require("onnxruntime.transformers.float16", "--quantize fp16")
        with quiet_export():
            half = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(half, str(folder / ONNX_FILE), save_as_external_data=large)
    for leftover in folder.iterdir():  # the fp32 graph and any external-data files beside it
        if leftover.name != ONNX_FILE and not (large and leftover.name.startswith(ONNX_FILE)):
            leftover.unlink()


def write_torch_int8(model: Any, folder: Path) -> None:
    import copy

    import torch

    quantized = quantize_linear_int8(copy.deepcopy(model))
    torch.save(quantized.state_dict(), folder / TORCH_INT8_FILE)


# -- the check --------------------------------------------------------------------------------------------
def check_export(task: Any, model: Any, folder: Path, inputs: dict[str, Any], quantize: str | None) -> dict:
    """Run the written folder as predict loads it on the check sentences; compare with the PyTorch model."""
    import torch

    with torch.no_grad():
        expected = model(**inputs).logits.float()
        loaded = load_exported(task, folder)
        got = loaded(**inputs).logits.float()
    if got.shape != expected.shape:
        raise LlmkitError(
            f"the exported model's logits have shape {tuple(got.shape)}, not {tuple(expected.shape)}"
        )
    mask = inputs["attention_mask"].bool()
    kept_expected = expected[mask] if expected.dim() == 3 else expected  # tokens: the real ones only
    kept_got = got[mask] if got.dim() == 3 else got
    difference = float((kept_got - kept_expected).abs().max())
    if expected.shape[-1] > 1:
        agree = int((kept_got.argmax(-1) == kept_expected.argmax(-1)).sum())
    else:  # regression: one score; "agreeing" means within 0.1
        agree = int(((kept_got - kept_expected).abs() < 0.1).sum())
    check = {
        "items": int(kept_expected.shape[0]),
        "agree": agree,
        "max_abs_logit_difference": float(f"{difference:.3g}"),
    }
    if quantize is None and difference > FP32_TOLERANCE:
        raise LlmkitError(
            f"the exported graph does not reproduce the model: logits differ by up to {difference:.2g} on "
            f"the check sentences (tolerance {FP32_TOLERANCE:g}); nothing was written"
        )
    return check


def summary(manifest: dict[str, Any]) -> str:
    check = manifest["check"]
    unit = "tokens" if manifest["task"] == "token-classification" else "sentences"
    return (
        f"{manifest['file']} ({manifest['bytes'] / 1e6:.1f} MB, {precision(manifest)}); on "
        f"{check['items']} check {unit} {check['agree']} predictions agree with PyTorch's, logits within "
        f"{check['max_abs_logit_difference']:.2g}"
    )


def precision(manifest: dict[str, Any]) -> str:
    if manifest["quantize"] == "int8":
        return "dynamic int8"
    return manifest["quantize"] or "fp32"


# -- the model card -----------------------------------------------------------------------------------------
def write_model_card(folder: Path, source: Path, manifest: dict[str, Any], name: str) -> None:
    """README.md: the "Exported model" section, then the run's own model card (front matter first)."""
    card = source / MODEL_CARD_FILE
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    front, body = "", text
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        end = text.index("\n---\n", 4) + 5
        front, body = text[:end] + "\n", text[end:].lstrip("\n")
    section = export_section(manifest, name)
    run_card = f"\n{demoted(body)}" if body else ""
    (folder / MODEL_CARD_FILE).write_text(front + section + run_card, encoding="utf-8")


def demoted(markdown: str) -> str:
    """The run card under this one: its title as "The run it was exported from: ...", its sections a level
    down."""
    lines, fenced, titled = [], False, False
    for line in markdown.splitlines():
        fenced ^= line.startswith("```")
        if line.startswith("# ") and not fenced and not titled:
            lines.append(f"## The run it was exported from: {line[2:]}")
            titled = True
        else:
            lines.append(f"#{line}" if line.startswith("#") and not fenced else line)
    if not titled:
        lines.insert(0, "## The run it was exported from\n")
    return "\n".join(lines) + "\n"


def export_section(manifest: dict[str, Any], name: str) -> str:
    check = manifest["check"]
    onnx = manifest["format"] == "onnx"
    what = f"{'ONNX' if onnx else 'PyTorch'} {precision(manifest)}"
    if onnx:
        how = f"""```python
import numpy as np, onnxruntime
from transformers import AutoConfig, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{name}")
config = AutoConfig.from_pretrained("{name}")
session = onnxruntime.InferenceSession("{name}/{ONNX_FILE}", providers=["CPUExecutionProvider"])
encoded = tokenizer(["a wonderful film"], padding=True, return_tensors="np")
inputs = {{i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}}
logits = session.run(["logits"], inputs)[0]
```

optimum's `ORTModelFor...` classes read a folder of `model.onnx` and `config.json`, but optimum's ONNX
package (optimum-onnx 0.1) does not install beside transformers 5; llmkit does not use it."""
    else:
        how = f"""```python
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification  # ...ForTokenClassification for NER

config = AutoConfig.from_pretrained("{name}")
model = AutoModelForSequenceClassification.from_config(config).eval()
model = torch.ao.quantization.quantize_dynamic(model, {{torch.nn.Linear}}, dtype=torch.qint8)
model.load_state_dict(torch.load("{name}/{TORCH_INT8_FILE}", weights_only=True))
```

Dynamic int8 runs on the CPU only."""
    unit = "tokens" if manifest["task"] == "token-classification" else "sentences"
    return f"""# {name}: {what} export

## Exported model

`llmkit export` wrote this folder from `{manifest["source"]}`: a {manifest["task"]} model as {what}
(`{manifest["file"]}`, {manifest["bytes"] / 1e6:.1f} MB), with its config (labels), tokenizer and recipe.
Checked on {check["items"]} {unit}: {check["agree"]} predictions agree with the PyTorch model's, logits
within {check["max_abs_logit_difference"]:.2g}.

`llmkit predict --model {name} --input FILE` and `llmkit evaluate {name} --data FILE` read this folder
as they read the run, on the CPU (`pip install -e '.[export]'` installs onnxruntime). Without llmkit:

{how}
"""


__all__ = ["EXPORTED_TASKS", "EXPORT_EXTRA", "FORMATS", "export"]
