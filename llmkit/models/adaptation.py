"""The adaptation axis: full fine-tuning, or LoRA adapters (``peft:`` in a recipe) for every task.

One place wraps a model for training (:func:`adapt_model`), loads an adapter folder as the model it adapts
(:func:`from_pretrained`, used by training's and inference's loaders alike), saves what an adapter run
needs beside the adapter (:func:`save_adapter_extras`) and merges adapters into plain model folders
(:func:`merge_adapter`). Tasks only declare their ``peft_task_type`` and the head modules a new
adapter must train in full (``adapter_modules_to_save``); no task file branches on the method.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (peft's), the
tokenizer, and ``model_config.json``: the adapted model's config (labels of a classification head,
...), which the base folder cannot know. It has no ``config.json``: transformers then reads such a folder
as an adapter on the base named in ``adapter_config.json`` (``pipeline(model=FOLDER)`` works).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError, did_you_mean, missing_package

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
#: The adapted model's own config (a classification head's labels...), beside the adapter.
MODEL_CONFIG_FILE = "model_config.json"
#: Where ``peft.merge: true`` writes the merged model inside a run's output_dir.
MERGED_DIR = "merged"

#: The ``peft:`` section: llmkit's names for LoRA's main settings; any other ``LoraConfig`` field passes
#: through under its own name (e.g. ``layers_to_transform``).
PEFT_DEFAULTS: dict[str, Any] = {
    "method": "lora",
    "r": 16,
    "alpha": 32,  # lora_alpha: the update is scaled by alpha / r
    # lora_dropout; 0 keeps each adapted layer's input as it is: with 0.05, MiniLM on SST-2 trained at 0.73x
    # full fine-tuning's samples/s instead of 1.05x (benchmarks/lora_vs_full.py), a copy per layer being made
    "dropout": 0.0,
    # every linear layer of the transformer blocks (peft's "all-linear": not the output head)
    "target_modules": "all-linear",
    # modules trained in full and saved with the adapter; auto: the task's new head (classifier...)
    "modules_to_save": "auto",
    "use_dora": False,
    "use_rslora": False,
    "quantize": None,  # QLoRA: 4bit | 8bit base weights (bitsandbytes, CUDA only)
    "merge": False,  # also write a plain merged model into output_dir/merged
}
METHODS = ("lora",)
QUANTIZE = ("4bit", "8bit")
#: The heads peft's task types train in full (its modules_to_save defaults for them).
TASK_TYPE_HEADS = {
    "SEQ_CLS": ["classifier", "score"],
    "TOKEN_CLS": ["classifier", "score"],
    "QUESTION_ANS": ["qa_outputs"],
}
#: llmkit's key -> LoraConfig's field.
LORA_FIELD_NAMES = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout"}
#: Keys of the section that are llmkit's own (not passed to LoraConfig).
LLMKIT_KEYS = ("method", "quantize", "merge", "modules_to_save")


def require_peft(why: str) -> Any:
    try:
        import peft
    except ImportError:
        raise missing_package(why, "peft", "lora") from None
    return peft


# -- the recipe section ------------------------------------------------------------------------------
def check_peft_section(raw: Any, where: str) -> dict[str, Any] | None:
    """Validate ``peft:`` (None: full fine-tuning); unknown keys get did-you-mean, bad values one line."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise LlmkitError(
            f"{where}: peft must be a mapping, e.g. {{method: lora, r: 16}}, or null for full fine-tuning"
        )
    lora_fields = lora_config_fields(f"{where}: peft")
    passthrough = set(lora_fields) - set(LORA_FIELD_NAMES.values()) - {"task_type", "base_model_name_or_path"}
    known = [*PEFT_DEFAULTS, *sorted(passthrough)]
    settings = dict(PEFT_DEFAULTS)
    for key, value in raw.items():
        if key not in known:
            hint = did_you_mean(str(key), known)
            raise LlmkitError(
                f"{where}: unknown key 'peft.{key}'{hint}; peft takes {', '.join(PEFT_DEFAULTS)} "
                f"and other peft.LoraConfig fields"
            )
        settings[key] = value
    check_values(settings, where)
    return settings


def lora_config_fields(why: str) -> list[str]:
    import dataclasses

    peft = require_peft(why)
    return [field.name for field in dataclasses.fields(peft.LoraConfig) if field.init]


def check_values(settings: dict[str, Any], where: str) -> None:
    if settings["method"] not in METHODS:
        raise LlmkitError(
            f"{where}: peft.method must be one of {', '.join(METHODS)}, got {settings['method']!r}"
        )
    r = settings["r"]
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise LlmkitError(f"{where}: peft.r must be a positive integer (the adapter's rank), got {r!r}")
    for key in ("alpha", "dropout"):
        value = settings[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LlmkitError(f"{where}: peft.{key} must be a number, got {value!r}")
    if not 0 <= settings["dropout"] < 1:
        raise LlmkitError(f"{where}: peft.dropout must be in [0, 1), got {settings['dropout']!r}")
    targets = settings["target_modules"]
    if not (isinstance(targets, str) and targets.strip()) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    ):
        raise LlmkitError(
            f"{where}: peft.target_modules must be all-linear, a module name or a list of names "
            f"(e.g. [q_proj, v_proj]), got {targets!r}"
        )
    saved = settings["modules_to_save"]
    if saved not in ("auto", None) and not (
        isinstance(saved, list) and all(isinstance(m, str) for m in saved)
    ):
        raise LlmkitError(
            f"{where}: peft.modules_to_save must be auto, null or a list of names, got {saved!r}"
        )
    if settings["quantize"] not in (None, *QUANTIZE):
        raise LlmkitError(
            f"{where}: peft.quantize must be one of {', '.join(QUANTIZE)} (or null), "
            f"got {settings['quantize']!r}"
        )
    for key in ("use_dora", "use_rslora", "merge"):
        if not isinstance(settings[key], bool):
            raise LlmkitError(f"{where}: peft.{key} must be true or false, got {settings[key]!r}")


# -- training --------------------------------------------------------------------------------------
def quantization_options(settings: dict[str, Any] | None, machine_kind: str, where: str) -> dict[str, Any]:
    """``from_pretrained`` options that load the base in 4 or 8 bits for QLoRA (CUDA + bitsandbytes)."""
    if not settings or not settings["quantize"]:
        return {}
    quantize = settings["quantize"]
    if machine_kind != "cuda":
        raise LlmkitError(
            f"{where}: peft.quantize={quantize} needs a CUDA GPU (bitsandbytes), and this machine has "
            f"{'an Apple GPU' if machine_kind == 'mps' else 'none'}; remove peft.quantize to train LoRA "
            f"on full-precision weights"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LlmkitError(
            f"{where}: peft.quantize={quantize} needs the bitsandbytes package; `pip install bitsandbytes`"
        ) from None
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    }


def adapt_model(
    model: PreTrainedModel,
    settings: dict[str, Any] | None,
    task: Any,
    where: str,
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """Wrap ``model`` in a LoRA adapter per ``settings``; None leaves it whole (full fine-tuning)."""
    if settings is None:
        return model
    peft = require_peft(f"{where}: peft")
    check_target_modules(model, settings["target_modules"], where)
    if settings["quantize"]:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        # frozen embeddings give the checkpointed blocks inputs without grad: let the adapters' grads through
        model.enable_input_require_grads()
    config = peft.LoraConfig(**lora_arguments(settings, model, task))
    try:
        with peft_quietly():
            return peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. a module type LoRA cannot wrap
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"{where}: peft cannot wrap this model ({first_line}); check peft.target_modules"
        ) from None


def lora_arguments(settings: dict[str, Any], model: Any, task: Any) -> dict[str, Any]:
    """``LoraConfig`` keyword arguments from the recipe section and the task's declarations."""
    arguments = {
        LORA_FIELD_NAMES.get(key, key): value for key, value in settings.items() if key not in LLMKIT_KEYS
    }
    saved = settings["modules_to_save"]
    if saved == "auto":
        saved = task.adapter_modules_to_save(model) or None
    arguments["modules_to_save"] = saved
    if "exclude_modules" not in settings:  # a head trained in full gets no adapter inside it as well
        heads = [*(saved or []), *TASK_TYPE_HEADS.get(task.peft_task_type() or "", [])]
        arguments["exclude_modules"] = heads or None
    if "fan_in_fan_out" not in settings and any(type(m).__name__ == "Conv1D" for m in model.modules()):
        arguments["fan_in_fan_out"] = True  # GPT-2's Conv1D stores its weight transposed
    task_type = task.peft_task_type()
    if task_type:
        arguments["task_type"] = task_type
    return arguments


def linear_module_names(model: Any) -> list[str]:
    """The distinct last names of the model's linear layers (q_proj, dense, ...), as target_modules takes."""
    import torch

    names = set()
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear) or kind in ("Linear4bit", "Linear8bitLt", "Conv1D"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def check_target_modules(model: Any, targets: str | list[str], where: str) -> None:
    """A named target the model does not have is an error listing the linear layers it does have."""
    if targets == "all-linear":
        return
    wanted = [targets] if isinstance(targets, str) else targets
    names = [name for name, _ in model.named_modules()]
    for target in wanted:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            available = linear_module_names(model)
            raise LlmkitError(
                f"{where}: peft.target_modules names '{target}', which this model does not have"
                f"{did_you_mean(target, available)}; its linear layers: {', '.join(available)} "
                f"(or all-linear)"
            )


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """peft reads a transformers property deprecated in 5.x: a warning that is not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def trainable_share(model: Any) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def inner_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (its LoRA layers included); other models as they are.

    The fast loss paths call a model's body and head directly, which must be the transformers modules.
    """
    try:
        from peft import PeftModel
    except ImportError:
        return model
    return model.get_base_model() if isinstance(model, PeftModel) else model


def is_adapted(model: Any) -> bool:
    return inner_model(model) is not model


def save_adapter_extras(model: Any, folder: Path) -> None:
    """Beside peft's files: the adapted model's config (labels...), which the base folder cannot give."""
    if is_adapted(model):
        inner = inner_model(model)
        config = inner.config.to_dict()
        config["architectures"] = [type(inner).__name__]  # as save_pretrained records it: the task's head
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# -- loading -----------------------------------------------------------------------------------------
def is_adapter_folder(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG_FILE).is_file() and not (Path(path) / "config.json").exists()


def read_adapter_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmkitError(
            f"{folder / ADAPTER_CONFIG_FILE}: cannot be read ({exc}); rerun the training"
        ) from None


def model_config_dict(folder: Path) -> dict[str, Any]:
    """A model folder's config as a dict: config.json, or an adapter folder's model_config.json."""
    folder = Path(folder)
    path = folder / (MODEL_CONFIG_FILE if is_adapter_folder(folder) else "config.json")
    if not path.exists() and is_adapter_folder(folder):  # an adapter llmkit did not write: its base's
        path = adapter_base(folder) / "config.json"
    return json.loads(path.read_text(encoding="utf-8"))


def config_label_names(config: dict[str, Any]) -> list[str]:
    """A config dict's ``id2label`` as names in id order: config.json keys are strings ("0"), a config built
    in memory has ints; a gap in the ids keeps the id itself as the name."""
    id2label = config.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, i))) for i in range(len(id2label))]


def load_config(folder: Path, base: str | Path | None = None) -> Any:
    """A model folder's ``PretrainedConfig`` (an adapter folder's adapted one, else its base's): attribute
    names resolved, e.g. GPT-2's ``n_positions`` read as ``max_position_embeddings``."""
    from transformers import AutoConfig

    folder = Path(folder)
    if is_adapter_folder(folder):
        own = folder / MODEL_CONFIG_FILE
        return AutoConfig.from_pretrained(str(own) if own.exists() else str(adapter_base(folder, base)))
    return AutoConfig.from_pretrained(str(folder))


def adapter_base(folder: Path, base: str | Path | None = None) -> Path:
    """The base model folder an adapter folder applies to.

    ``base`` (``--base``) wins; else the folder recorded in adapter_config.json; else the model the run's
    recipe.yaml names (a bundled alias is rebuilt or found again). Not found: one line naming what it needs.
    """
    from llmkit.models.resolve import resolve_model

    if base is not None:
        try:
            return resolve_model(str(base))
        except LlmkitError as exc:
            raise LlmkitError(f"--base {base}: {exc}") from None
    recorded = read_adapter_config(folder).get("base_model_name_or_path")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    named = recipe_model_name(folder)
    for candidate in (named, recorded):
        if not candidate:
            continue
        try:
            return resolve_model(candidate)
        except LlmkitError:
            continue
    shown = " or ".join(f"'{name}'" for name in dict.fromkeys(n for n in (named, recorded) if n)) or "(none)"
    raise LlmkitError(
        f"adapter folder {folder}: its base model {shown} cannot be found; point at a copy of it with "
        f"--base PATH (a folder written by save_pretrained, or a bundled alias)"
    )


def trained_model_folder(folder: Path) -> Path:
    """The plain model of a model folder: a LoRA run's ``merged/`` folder where it wrote one
    (``peft.merge: true``, `llmkit merge`), else the folder itself (an adapter folder loads merged onto its
    base, see :func:`from_pretrained`)."""
    merged = Path(folder) / MERGED_DIR
    return merged if is_adapter_folder(folder) and (merged / "config.json").is_file() else Path(folder)


def saved_recipe(folder: Path) -> dict[str, Any] | None:
    """The recipe a run saved in its folder (``recipe.yaml``, :data:`llmkit.runs.folder.RECIPE_FILE`); None
    when there is none, or none that reads as a mapping."""
    import yaml

    path = Path(folder) / "recipe.yaml"
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return recipe if isinstance(recipe, dict) else None


def recipe_model_name(folder: Path) -> str | None:
    recipe = saved_recipe(folder)
    if recipe is None:
        return None
    model = recipe.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    return str(name) if name else None


def from_pretrained(
    auto_class: Any,
    path: Path,
    *,
    base: str | Path | None = None,
    output_loading_info: bool = False,
    merge: bool = True,
    **options: Any,
) -> Any:
    """``auto_class.from_pretrained(path)``, where ``path`` may also be an adapter folder.

    An adapter is loaded onto its base and merged (inference runs at the plain model's speed, and every
    caller sees a plain transformers model). ``output_loading_info`` then reports as missing only what
    neither the base nor the adapter supplies. ``merge=False`` keeps the adapter apart, computing as training
    did (`llmkit evaluate` reproduces its scores; DPO's reference is the adapter switched off).
    """
    if not is_adapter_folder(path):
        return auto_class.from_pretrained(path, output_loading_info=output_loading_info, **options)
    peft = require_peft(f"adapter folder {path}")
    base_path = adapter_base(path, base)
    config = load_config(path, base_path)
    for key in ("num_labels", "id2label", "label2id", "problem_type"):  # config settings, not model arguments
        if key in options:
            setattr(config, key, options.pop(key))
    model, info = auto_class.from_pretrained(base_path, config=config, output_loading_info=True, **options)
    with peft_quietly():
        model = peft.PeftModel.from_pretrained(model, str(path))
        model = model.merge_and_unload() if merge else model
    supplied = read_adapter_config(path).get("modules_to_save") or []
    info["missing_keys"] = {key for key in info["missing_keys"] if not supplied_by(key, supplied)}
    return (model, info) if output_loading_info else model


def supplied_by(key: str, modules: list[str]) -> bool:
    """Does an adapter's fully trained module supply weight ``key``?

    So does the rest of the head such a module belongs to: beside BERT's trained
    ``cls.predictions.transform``, the decoder is the input embedding matrix (tied, never saved) and its
    bias keeps its initial zeros.
    """
    for module in modules:
        head = module.rsplit(".", 1)[0] if "." in module else module
        if key.startswith(f"{module}.") or key.startswith(f"{head}."):
            return True
    return False


def merge_adapter(task: Any, folder: Path, output: Path, base: str | Path | None = None) -> Path:
    """Write a plain model folder (config, safetensors, tokenizer) with the adapter merged into its base."""
    from transformers import AutoTokenizer

    from llmkit.core.progress import quiet_library_progress

    with quiet_library_progress(errors_only=True):
        model = task.load_model(Path(folder), base=base)  # from_pretrained merges the adapter
        output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(output))
        AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(output))
    return output
