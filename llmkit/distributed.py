"""Scale-out through Accelerate: launching N processes, rank checks, and mixed-precision choice.

llmkit has no launcher of its own: `llmkit finetune --num-processes N` re-runs the same command under
``accelerate launch``. On CPU, Accelerate's ``--cpu --num_processes N`` silently starts one process, so
llmkit uses its multi-GPU launcher there too and the Trainer runs on CPU with the gloo backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from llmkit.errors import LlmkitError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on the process that writes outputs and prints (rank 0, or a plain single process)."""
    return os.environ.get("RANK", "0") == "0"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def precision_flags(precision: str, where: str) -> dict[str, Any]:
    """``training.precision`` -> TrainingArguments flags. auto: bf16 where the hardware runs it natively."""
    import torch

    if precision not in PRECISIONS:
        raise LlmkitError(
            f"{where}: training.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    on_gpu = torch.cuda.is_available()
    if precision == "auto":
        if on_gpu:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else "fp32"
    if precision == "fp16" and not on_gpu:
        raise LlmkitError(f"{where}: training.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    flags: dict[str, Any] = {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    if precision == "bf16" and not on_gpu:
        flags["use_cpu"] = True  # TrainingArguments refuses bf16 without a GPU unless told it is on CPU
    return flags


def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_sharding(training: dict[str, Any], where: str) -> None:
    """FSDP / DeepSpeed settings are passed to the Trainer as they are; fail early when they cannot run."""
    if training.get("deepspeed"):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise LlmkitError(
                f"{where}: training.deepspeed needs the deepspeed package (`pip install deepspeed`) "
                f"and a CUDA GPU"
            ) from None
        if not cuda_available():
            raise LlmkitError(f"{where}: training.deepspeed needs a CUDA GPU; none is visible")
    if training.get("fsdp") and not cuda_available():
        raise LlmkitError(
            f"{where}: training.fsdp shards the model over GPUs and none is visible; "
            f"remove it to train on CPU"
        )


def launch(
    argv: list[str],
    num_processes: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
) -> int:
    """Run ``python -m llmkit <argv>`` under ``accelerate launch``, ``num_processes`` per machine."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(num_processes * num_machines), "--num_machines", str(num_machines)]
    if num_machines > 1:
        if not main_process_ip:
            raise LlmkitError("--num-machines > 1 needs --main-process-ip (the address of machine rank 0)")
        command += ["--machine_rank", str(machine_rank), "--main_process_ip", main_process_ip]
    if main_process_port:
        command += ["--main_process_port", str(main_process_port)]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the recipe decides precision
    command += ["-m", "llmkit", *argv]
    env = dict(os.environ)
    if not cuda_available():
        env["ACCELERATE_USE_CPU"] = "true"  # multi-process on CPU: gloo backend
    return subprocess.call(command, env=env)
