"""Students with fewer layers: a model folder that keeps some transformer layers of another model.

``model: {init_from: MODEL, layers: [0, 2, 4]}`` starts a run from MODEL (a model folder, alias or hub id, or
an llmkit run: its ``merged/`` model when a LoRA run wrote one, else the adapter merged onto its base) with
only those layers, renumbered 0, 1, 2, and everything else as it was: the embeddings, the pooler, any task
head, a decoder's final norm and LM head (tied to the embeddings or not). That is how DistilBERT's student was
initialised from BERT (every other layer), and it is the usual start for knowledge distillation (``distill:``,
``llmkit.models.teacher``); it is independent of it: fine-tuning such a student on the labels alone is the
baseline distillation is measured against.

The folder is built once into llmkit's cache (atomically, like the from-scratch folders of
``llmkit.models.scratch``), keyed on the source folder's model and tokenizer files, the layer list, the
libraries and this code, so a rerun or a resumed run reuses it. It is a plain Hugging Face folder (config
with ``num_hidden_layers`` set to the layers kept, safetensors, the source's tokenizer) plus
``llmkit_student.json``, the record the run's report reads.

The architectures of ``LAYER_STACKS`` have their layers in one list and the depth in one config field:
BERT-family encoders (BERT, MiniLM, tiny-bert, RoBERTa, XLM-R, ELECTRA: ``encoder.layer``), Llama-family
decoders (Llama, SmolLM2, Mistral, Qwen2/3: ``layers``) and GPT-2 (``h``); a config list with an entry per
layer (``PER_LAYER_CONFIG``: ``layer_types``, Qwen's full or sliding attention) keeps the kept layers'
entries. Any other architecture is a one-line error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from llmkit.core.digests import files_digest
from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log, quiet_library_progress
from llmkit.core.versions import library_versions
from llmkit.models.adaptation import (
    adapter_base,
    from_pretrained,
    is_adapter_folder,
    load_config,
    trained_model_folder,
)
from llmkit.models.resolve import (
    WEIGHT_SUFFIXES,
    build_folder_atomically,
    cache_dir,
    check_weights,
    load_tokenizer,
    resolve_model,
)

#: The ``model:`` keys of a student (beside ``name``, which they replace); null: the model is ``name``.
STUDENT_DEFAULTS: dict[str, Any] = {
    # instead of name: start from this model (folder, alias, hub id or llmkit run) with only some of its
    # layers, as DistilBERT's student: {init_from: runs/x, layers: [0, 2, 4]} (BERT-family encoders,
    # Llama-family and GPT-2 decoders)
    "init_from": None,
    "layers": None,  # with init_from: the transformer layers kept, in order
}
#: Model type -> where its layers are under the base model (a ModuleList; the depth is num_hidden_layers).
LAYERED_ENCODERS = dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra"), "encoder.layer")
LAYERED_DECODERS = {**dict.fromkeys(("llama", "mistral", "qwen2", "qwen3"), "layers"), "gpt2": "h"}
LAYER_STACKS = {**LAYERED_ENCODERS, **LAYERED_DECODERS}
#: Config lists with an entry per layer: a student keeps its layers' entries.
PER_LAYER_CONFIG = ("layer_types",)
STUDENT_CACHE = "students"
#: How a student folder was built (source, layers, sizes), for the run's report.
STUDENT_RECORD_FILE = "llmkit_student.json"
#: The files of a model folder that decide its model and tokenizer (a run folder's reports do not).
MODEL_FILE_PATTERNS = (
    "config.json",
    "model_config.json",
    "adapter_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "*.model",
)


# -- the recipe's keys ------------------------------------------------------------------------------------
def check_student(init_from: Any, layers: Any, where: str) -> dict[str, Any] | None:
    """``model.init_from`` and ``model.layers`` as ``{init_from, layers}``; None when neither is given. The
    layer numbers are checked against the model's depth when the folder is built."""
    if init_from is None and layers is None:
        return None
    if init_from is None:
        raise LlmkitError(
            f"{where}: model.layers goes with model.init_from (the model whose layers are kept): "
            f"model: {{init_from: NAME, layers: {layers}}}"
        )
    if not isinstance(init_from, str) or not init_from.strip():
        raise LlmkitError(
            f"{where}: model.init_from must be a model (a folder, an llmkit run, an alias or a hub id), "
            f"got {init_from!r}"
        )
    if layers is None:
        raise LlmkitError(
            f"{where}: model.init_from needs model.layers, the layers to keep (e.g. [0, 2, 4]); "
            f"to start from the whole model, write model: {init_from}"
        )
    valid = (
        isinstance(layers, list)
        and layers
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in layers)
    )
    if not valid or any(b <= a for a, b in itertools.pairwise(layers)):
        raise LlmkitError(
            f"{where}: model.layers must be a non-empty list of layer numbers (from 0), each once, in "
            f"increasing order, e.g. [0, 2, 4]; got {layers!r}"
        )
    return {"init_from": init_from, "layers": list(layers)}


# -- building the folder ----------------------------------------------------------------------------------
def build_student(
    settings: dict[str, Any], allow_pickle: bool = False, trust_remote_code: bool = False
) -> Path:
    """The student folder of ``settings`` (``check_student``'s), built into llmkit's cache or found there."""
    name, layers = settings["init_from"], settings["layers"]
    where = f"model.init_from {name}"
    try:
        source = trained_model_folder(resolve_model(name, allow_pickle, trust_remote_code))
    except LlmkitError as exc:
        raise LlmkitError(f"{where}: {exc}") from None
    config = load_config(source)
    check_layers(config, layers, where)
    check_weights(source, allow_pickle)
    target = cache_dir() / STUDENT_CACHE / student_key(source, layers)
    if (target / "config.json").exists():
        log(f"model {name} with layers {_listed(layers)}: the folder built earlier ({target})")
        return target
    options = {"trust_remote_code": True} if trust_remote_code else {}
    record = build_folder_atomically(
        target, lambda staging: _build(name, source, config, layers, staging, options)
    )
    log(describe_student(record) + f" ({target})")
    return target


def check_layers(config: Any, layers: list[int], where: str) -> None:
    """An architecture of ``LAYER_STACKS``, and layer numbers below its depth."""
    if config.model_type not in LAYER_STACKS:
        raise LlmkitError(
            f"{where}: model.layers keeps layers of BERT-family encoders ({', '.join(LAYERED_ENCODERS)}) "
            f"and of Llama-family or GPT-2 decoders ({', '.join(LAYERED_DECODERS)}), and this model is a "
            f"{config.model_type}; start from one of those, or leave model.layers out"
        )
    depth = config.num_hidden_layers
    beyond = [n for n in layers if n >= depth]
    if beyond:
        raise LlmkitError(
            f"{where}: model.layers {layers} names layer {beyond[0]}, and the model has {depth} layers "
            f"(0 to {depth - 1})"
        )


def _build(
    name: str, source: Path, config: Any, layers: list[int], folder: Path, options: dict[str, Any]
) -> dict[str, Any]:
    import torch

    with quiet_library_progress(errors_only=True):
        model = from_pretrained(model_class(config), source, **options)
        tokenizer = load_tokenizer(source, trust_remote_code=bool(options))
    parameters = sum(parameter.numel() for parameter in model.parameters())
    path = LAYER_STACKS[config.model_type]
    owner_path, _, attribute = path.rpartition(".")
    owner = model.base_model.get_submodule(owner_path) if owner_path else model.base_model
    stack = getattr(owner, attribute, None)
    if not isinstance(stack, torch.nn.ModuleList) or len(stack) != config.num_hidden_layers:
        raise LlmkitError(
            f"model.init_from {name}: {type(model).__name__} keeps its layers elsewhere than {path}; "
            f"model.layers works for {', '.join(LAYER_STACKS)} models as transformers builds them"
        )
    setattr(owner, attribute, torch.nn.ModuleList([stack[n] for n in layers]))
    keep_layers_in_config(model.config, layers)
    with quiet_library_progress(errors_only=True):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    record = {
        "init_from": name,
        "source": str(source),
        "layers": list(layers),
        "source_layers": config.num_hidden_layers,
        "model_class": type(model).__name__,
        "source_parameters": parameters,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }
    (folder / STUDENT_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def keep_layers_in_config(config: Any, layers: list[int]) -> None:
    """The depth (``num_hidden_layers``; GPT-2's ``n_layer`` through its alias) and every per-layer list of
    the config for the kept layers, so the saved folder loads as a model of those layers."""
    depth = config.num_hidden_layers
    for key in PER_LAYER_CONFIG:
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == depth:
            setattr(config, key, [values[n] for n in layers])
    config.num_hidden_layers = len(layers)


def model_class(config: Any) -> Any:
    """The class the folder was saved as (its task head kept), else the bare model."""
    import transformers

    for architecture in getattr(config, "architectures", None) or []:
        found = getattr(transformers, architecture, None)
        if found is not None:
            return found
    return transformers.AutoModel


def student_key(source: Path, layers: list[int]) -> str:
    """A digest of the source's model and tokenizer files (an adapter's base's too), the layers, the
    libraries that load and save, and this code."""
    folders = [source, *([adapter_base(source)] if is_adapter_folder(source) else [])]
    identity = {
        "files": [model_files_digest(folder) for folder in folders],
        "layers": layers,
        "libraries": library_versions(("transformers", "torch")),
        "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def model_files_digest(folder: Path) -> str:
    """A digest of the names and contents of a folder's model and tokenizer files."""
    files = {path for pattern in MODEL_FILE_PATTERNS for path in folder.glob(pattern) if path.is_file()}
    files |= {path for path in folder.iterdir() if path.is_file() and path.suffix in WEIGHT_SUFFIXES}
    return files_digest(list(files))


def describe_student(record: dict[str, Any]) -> str:
    """One line for the log and the report: where the layers came from and the sizes."""
    return (
        f"model {record['init_from']} with layers {_listed(record['layers'])} of its "
        f"{record['source_layers']}: {record['source_parameters'] / 1e6:.1f}M -> "
        f"{record['parameters'] / 1e6:.1f}M parameters"
    )


def student_record(model_path: Path | None) -> dict[str, Any] | None:
    """How a student folder was built (None for any other model folder)."""
    if model_path is None:
        return None
    try:
        return json.loads((Path(model_path) / STUDENT_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _listed(layers: list[int]) -> str:
    return ", ".join(str(n) for n in layers)
