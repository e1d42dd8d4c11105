"""Models pre-trained from scratch: a config instead of a checkpoint, and a tokenizer trained on the data.

A recipe says ``model: {from_scratch: bert-mini}`` (a named size, a ``config.json`` file, or a mapping of
config fields, optionally on top of a size: ``{size: bert-mini, num_hidden_layers: 2}``) and, usually,
``tokenizer: {train: true, vocab_size: 16000, type: wordpiece}``. Before any weight exists, llmkit trains
the tokenizer on the training split, builds the config with that vocabulary, initialises the weights with
the run's seed (``training.seed``) and saves config, weights and tokenizer as an ordinary model folder in
its cache. From there the run is like any other: the spine loads that folder, and the tokenizer is saved
with the trained model. The folder is keyed on everything that decides its content (config, tokenizer
settings, seed, the training text, library versions and this code), so a rerun or a resumed run reuses it.

Only tasks that train a language model from raw text can start from scratch (``Task.scratch_style``):
fill-mask (an encoder: BERT sizes) and generation (a decoder: GPT-2 sizes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.progress import log, quiet_library_progress
from llmkit.core.versions import library_versions
from llmkit.models.resolve import build_folder_atomically, cache_dir, load_tokenizer, resolve_model
from llmkit.models.tokenizer_training import (
    BERT_SPECIAL_TOKENS,
    TOKENIZER_TYPES,
    SpecialTokens,
    check_tokenizer_settings,
    decoder_special_tokens,
    default_lowercase,
    train_on_corpus,
    vocabulary_statistics,
)

ENCODER, DECODER = "encoder", "decoder"
#: The record of how a from-scratch folder was built (sizes, seed, tokenizer statistics), for the report.
SCRATCH_RECORD_FILE = "llmkit_scratch.json"
SCRATCH_CACHE = "scratch"
#: Config keys a config.json carries that are not model settings (or that llmkit sets itself).
NOT_SETTINGS = frozenset({"architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype"})


@dataclass(frozen=True)
class NamedSize:
    """A documented model size: its family's ``model_type``, what it is for, and its config fields."""

    name: str
    model_type: str
    style: str
    fields: dict[str, Any] = field(default_factory=dict)


#: The named sizes (docs/tasks/pretraining.md has their parameter counts).
SIZES: dict[str, NamedSize] = {
    size.name: size
    for size in (
        NamedSize(
            "bert-mini",
            "bert",
            ENCODER,
            {
                "num_hidden_layers": 4,
                "hidden_size": 256,
                "num_attention_heads": 4,
                "intermediate_size": 1024,
                "max_position_embeddings": 512,
            },
        ),
        NamedSize(
            "bert-small",
            "bert",
            ENCODER,
            {
                "num_hidden_layers": 4,
                "hidden_size": 512,
                "num_attention_heads": 8,
                "intermediate_size": 2048,
                "max_position_embeddings": 512,
            },
        ),
        NamedSize(
            "gpt2-mini", "gpt2", DECODER, {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 512}
        ),
        NamedSize(
            "gpt2-small", "gpt2", DECODER, {"n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 1024}
        ),
    )
}

#: The ``tokenizer:`` section's keys and defaults (the section only goes with ``model.from_scratch``).
TOKENIZER_DEFAULTS: dict[str, Any] = {
    "train": False,  # true: train one on the training split
    "name": None,  # or reuse the tokenizer of this model folder / alias
    "vocab_size": 16000,
    "type": None,  # wordpiece | bpe | unigram; default: wordpiece for an encoder, bpe for a decoder
    "lowercase": None,  # default: as the type's family (wordpiece lower-cases, bpe and unigram keep case)
    "stream_sample": 100000,  # data.streaming: texts sampled from the stream (uniformly, seeded) to train on
}


# -- the recipe's sections ------------------------------------------------------------------------
def check_from_scratch(value: Any, style: str, task_name: str, max_length: int, where: str) -> dict[str, Any]:
    """``model.from_scratch`` resolved to ``{name, model_type, fields, spec}`` for a task that trains a model
    of ``style`` (the recipe loader refuses tasks that cannot start from scratch); every problem one line."""
    name, model_type, fields = _spec_fields(value, where)
    size = SIZES.get(name)
    if size is not None and size.style != style:
        fitting = ", ".join(s.name for s in SIZES.values() if s.style == style)
        raise LlmkitError(
            f"{where}: model.from_scratch {name} is a{'n' if size.style == ENCODER else ''} {size.style} "
            f"({size.model_type}), which task {task_name} cannot train; use one of: {fitting}"
        )
    config = _config(model_type, fields, where)
    _check_model_kind(config, style, task_name, where)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise LlmkitError(
            f"{where}: data.max_length={max_length} is longer than {name}'s {positions} positions; lower "
            f"data.max_length or give more positions (model.from_scratch: {{size: ..., "
            f"max_position_embeddings: N}})"
        )
    return {"name": name, "model_type": model_type, "fields": fields, "spec": value}


def _spec_fields(value: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    """(a name for messages, model_type, config fields) of a size name, a config file or a mapping."""
    if isinstance(value, str) and value in SIZES:
        return value, SIZES[value].model_type, dict(SIZES[value].fields)
    if isinstance(value, str) and value.strip().endswith(".json"):
        return value, *_config_file_fields(Path(value).expanduser(), where)
    if isinstance(value, dict):
        fields = dict(value)
        size_name = fields.pop("size", None)
        if size_name is not None:
            if size_name not in SIZES:
                raise LlmkitError(_unknown_size(str(size_name), where, "model.from_scratch.size"))
            base = SIZES[size_name]
            if fields.get("model_type", base.model_type) != base.model_type:
                raise LlmkitError(
                    f"{where}: model.from_scratch.model_type {fields['model_type']!r} differs from size "
                    f"{size_name}'s ({base.model_type}); give one of them"
                )
            fields.pop("model_type", None)
            return (
                f"{size_name} (changed: {', '.join(fields) or 'nothing'})",
                base.model_type,
                {
                    **base.fields,
                    **fields,
                },
            )
        model_type = fields.pop("model_type", None)
        if not isinstance(model_type, str):
            raise LlmkitError(
                f"{where}: model.from_scratch as a mapping needs size (one of {', '.join(SIZES)}) or "
                f"model_type (e.g. bert, gpt2) beside the config fields"
            )
        return f"{model_type} (inline config)", model_type, fields
    raise LlmkitError(_unknown_size(str(value), where, "model.from_scratch"))


def _unknown_size(name: str, where: str, key: str) -> str:
    return (
        f"{where}: {key} {name!r} is not a named size{did_you_mean(name, SIZES)}; the sizes are "
        f"{', '.join(SIZES)} (or give a config.json file, or config fields: {{size: bert-mini, ...}})"
    )


def _config_file_fields(path: Path, where: str) -> tuple[str, dict[str, Any]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LlmkitError(f"{where}: model.from_scratch config file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise LlmkitError(f"{where}: model.from_scratch config file {path} cannot be read ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise LlmkitError(
            f"{where}: model.from_scratch config file {path} has no model_type; give a config.json "
            f"written by save_pretrained (e.g. of a model of the family you want)"
        )
    fields = {key: value for key, value in raw.items() if key not in NOT_SETTINGS and key != "model_type"}
    return raw["model_type"], fields


def _config(model_type: str, fields: dict[str, Any], where: str):
    """The transformers config; a field the family does not have is an error (configs accept anything)."""
    from transformers import AutoConfig

    try:
        default = AutoConfig.for_model(model_type)
    except ValueError:
        raise LlmkitError(
            f"{where}: model.from_scratch model_type {model_type!r} is not a transformers model type "
            f"(e.g. bert, roberta, gpt2, llama)"
        ) from None
    known = {*default.to_dict(), *getattr(default, "attribute_map", {})}
    for key in fields:
        if key not in known:
            raise LlmkitError(
                f"{where}: model.from_scratch: {model_type} configs have no field {key!r}"
                f"{did_you_mean(key, sorted(known))}; see transformers' {type(default).__name__}"
            )
    try:
        return AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"{where}: model.from_scratch: invalid {model_type} config ({first_line})"
        ) from None


def _check_model_kind(config: Any, style: str, task: str, where: str) -> None:
    """An encoder task needs a family with a masked-LM model, a decoder task one with a causal LM."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    names = MODEL_FOR_MASKED_LM_MAPPING_NAMES if style == ENCODER else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if config.model_type not in names:
        kind = "masked-LM" if style == ENCODER else "causal-LM"
        raise LlmkitError(
            f"{where}: model.from_scratch: {config.model_type} has no {kind} model, which task {task} "
            f"trains; use one of: {', '.join(s.name for s in SIZES.values() if s.style == style)}"
        )


def check_tokenizer_section(
    value: Any, scratch: dict[str, Any] | None, style: str | None, where: str
) -> dict:
    """The ``tokenizer:`` section merged with its defaults; it only makes sense with ``from_scratch``."""
    if value is None and scratch is None:
        return {}
    if scratch is None:
        raise LlmkitError(
            f"{where}: the tokenizer section goes with model.from_scratch (a pre-trained model's embeddings "
            f"belong to its own vocabulary); remove it (tokenizer=null on the command line), or pre-train: "
            f"model: {{from_scratch: bert-mini}}"
        )
    if value is not None and not isinstance(value, dict):
        raise LlmkitError(f"{where}: tokenizer must be a mapping, e.g. {{train: true, vocab_size: 16000}}")
    section = dict(TOKENIZER_DEFAULTS)
    for key, item in (value or {}).items():
        if key not in TOKENIZER_DEFAULTS:
            raise LlmkitError(
                f"{where}: unknown key 'tokenizer.{key}'{did_you_mean(key, TOKENIZER_DEFAULTS)}; "
                f"valid keys: {', '.join(TOKENIZER_DEFAULTS)}"
            )
        section[key] = item
    if not isinstance(section["train"], bool):
        raise LlmkitError(f"{where}: tokenizer.train must be true or false, got {section['train']!r}")
    if section["train"] == bool(section["name"]):
        raise LlmkitError(
            f"{where}: model.from_scratch needs one tokenizer: tokenizer.train=true (trained on the "
            f"training split) or tokenizer.name=<a model folder or alias whose tokenizer to reuse>"
        )
    if section["lowercase"] is not None and not isinstance(section["lowercase"], bool):
        raise LlmkitError(
            f"{where}: tokenizer.lowercase must be true, false or null, got {section['lowercase']!r}"
        )
    if section["train"]:
        section["type"] = section["type"] or ("wordpiece" if style == ENCODER else "bpe")
        check_tokenizer_settings(
            section["type"], section["vocab_size"], special_tokens(style, section["type"]), where
        )
    elif section["type"] is not None and section["type"] not in TOKENIZER_TYPES:
        raise LlmkitError(f"{where}: tokenizer.type must be one of {', '.join(TOKENIZER_TYPES)}")
    return section


def special_tokens(style: str | None, kind: str) -> SpecialTokens:
    """BERT's tokens for an encoder (a mask to predict, [CLS]/[SEP] around texts), GPT-2's for a decoder."""
    return BERT_SPECIAL_TOKENS if style == ENCODER else decoder_special_tokens(kind)


# -- building the folder --------------------------------------------------------------------------
@dataclass(frozen=True)
class ScratchBuild:
    """What decides a from-scratch folder besides its texts: the recipe's model name, ``model.from_scratch``
    and ``tokenizer:`` sections as checked, the training seed, and the task's model style."""

    name: str
    scratch: dict[str, Any]
    tokenizer: dict[str, Any]
    seed: int
    style: str


def build_from_scratch(build: ScratchBuild, texts: list[str], model_class_for: Callable[[Any], Any]) -> Path:
    """Train (or reuse) the tokenizer, build the config and seeded weights; a folder in llmkit's cache.
    ``model_class_for(config)`` is the task's model class for the config (``Task.scratch_model_class``)."""
    model_class = model_class_for(_config(build.scratch["model_type"], build.scratch["fields"], ""))
    key = folder_key(build, texts, model_class)
    target = cache_dir() / SCRATCH_CACHE / key
    if (target / "config.json").exists():
        log(f"model {build.name} from scratch: the folder built earlier from the same settings ({target})")
        return target
    record = build_folder_atomically(target, lambda staging: _build(build, texts, model_class, staging))
    log(describe_build(record))
    return target


def _build(build: ScratchBuild, texts: list[str], model_class: Any, folder: Path) -> dict:
    import torch

    section, scratch, style, seed = build.tokenizer, build.scratch, build.style, build.seed
    if section["train"]:
        kind = section["type"]
        config_positions = _config(scratch["model_type"], scratch["fields"], "").max_position_embeddings
        trained = train_on_corpus(
            texts,
            kind,
            section["vocab_size"],
            special_tokens(style, kind),
            section["lowercase"],
            model_max_length=config_positions,
            segment_ids=style == ENCODER,
        )
        tokenizer = trained.tokenizer
        tokenizer_record = {
            "trained": True,
            "type": kind,
            "vocab_size_asked": section["vocab_size"],
            "lowercase": default_lowercase(kind) if section["lowercase"] is None else section["lowercase"],
            "training_seconds": round(trained.seconds, 2),
            "training_texts": trained.texts,
            "training_characters": trained.characters,
        }
    else:
        tokenizer = load_tokenizer(resolve_model(section["name"]))
        tokenizer_record = {"trained": False, "from": section["name"]}
    tokenizer_record.update(vocabulary_statistics(tokenizer, texts))
    config = _config(scratch["model_type"], {**scratch["fields"], **token_ids(tokenizer)}, "")
    torch.manual_seed(seed)
    with quiet_library_progress():
        model = (
            model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
        )
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    record = {
        "name": build.name,
        "model_type": config.model_type,
        "model_class": type(model).__name__,
        "config": {key: scratch["fields"][key] for key in scratch["fields"]},
        "layers": config.num_hidden_layers,
        "width": config.hidden_size,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "init_seed": seed,
        "tokenizer": tokenizer_record,
    }
    (folder / SCRATCH_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def token_ids(tokenizer: Any) -> dict[str, Any]:
    """The config fields the tokenizer decides: vocabulary size and special token ids (a decoder pads with
    its end-of-text, as ``llmkit.models.resolve.load_tokenizer`` does)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = {"vocab_size": len(tokenizer), "pad_token_id": pad}
    if tokenizer.bos_token_id is not None:
        ids["bos_token_id"] = tokenizer.bos_token_id
    if tokenizer.eos_token_id is not None:
        ids["eos_token_id"] = tokenizer.eos_token_id
    return ids


def folder_key(build: ScratchBuild, texts: Iterable[str], model_class: Any) -> str:
    """A digest of everything that decides the folder: config, tokenizer settings, seed, model class,
    the training text, the libraries that train and initialise, and the code that builds it."""
    texts_digest = hashlib.sha256()
    for text in texts:
        texts_digest.update(text.encode("utf-8") + b"\0")
    code = hashlib.sha256()
    for module in ("scratch.py", "tokenizer_training.py"):
        code.update((Path(__file__).parent / module).read_bytes())
    identity = {
        "model_type": build.scratch["model_type"],
        "fields": build.scratch["fields"],
        "tokenizer": build.tokenizer,
        "seed": build.seed,
        "class": f"{model_class.__module__}.{model_class.__qualname__}",
        "texts": texts_digest.hexdigest(),
        "libraries": library_versions(("transformers", "tokenizers", "torch")),
        "code": code.hexdigest(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:20]


def describe_build(record: dict[str, Any]) -> str:
    """One line for the log: the model's size and seed, and the tokenizer it got."""
    tokenizer = record["tokenizer"]
    if tokenizer["trained"]:
        made = (
            f"a {tokenizer['type']} tokenizer of {tokenizer['vocab_size']:,} tokens trained on "
            f"{tokenizer['training_texts']:,} texts in {tokenizer['training_seconds']:.1f} s"
        )
    else:
        made = f"the tokenizer of {tokenizer['from']} ({tokenizer['vocab_size']:,} tokens)"
    return (
        f"model {record['name']} from scratch: {record['layers']} layers, width {record['width']}, "
        f"{record['parameters'] / 1e6:.1f}M parameters, initialised with seed {record['init_seed']}; {made}"
    )


def scratch_record(model_path: Path | None) -> dict[str, Any] | None:
    """How a from-scratch folder was built (None for any other model folder)."""
    if model_path is None:
        return None
    path = Path(model_path) / SCRATCH_RECORD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def size_table(vocab_sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Each named size's layers, width, heads and parameters (with and without embeddings) at a vocabulary
    size per family, built on the meta device (no memory): the table in docs/tasks/pretraining.md."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    rows = []
    for size in SIZES.values():
        vocab = vocab_sizes[size.model_type]
        ids = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0}
        config = AutoConfig.for_model(size.model_type, **size.fields, **ids)
        auto = AutoModelForMaskedLM if size.style == ENCODER else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(config)
        total = sum(parameter.numel() for parameter in model.parameters())
        embeddings = model.get_input_embeddings().weight.numel()
        rows.append(
            {
                "name": size.name,
                "model_type": size.model_type,
                "layers": config.num_hidden_layers,
                "width": config.hidden_size,
                "heads": config.num_attention_heads,
                "positions": config.max_position_embeddings,
                "vocab_size": vocab,
                "parameters": total,
                "without_token_embeddings": total - embeddings,
            }
        )
    return rows
