"""Machines, devices and precision: what llmkit chooses on each kind of machine, and launching N processes.

One probe (:func:`probe_machine`) reads what the hardware offers; pure functions turn that into the
``TrainingArguments`` settings of a run (:func:`device_settings`), so every machine kind can be tested on any
machine by building a :class:`Machine` by hand.

llmkit has no launcher of its own: `llmkit finetune --num-processes N` re-runs the same command under
``accelerate launch``. On CPU, Accelerate's ``--cpu --num_processes N`` silently starts one process, so
llmkit uses its multi-GPU launcher there too and the Trainer runs on CPU with the gloo backend.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: CPU flags (Linux /proc/cpuinfo) that mean the processor computes bf16 natively: AVX512-BF16 (Cooper Lake,
#: Zen 4/5) and AMX-BF16 (Sapphire Rapids and newer); ``bf16`` is the Arm feature (Graviton 3, Neoverse V1).
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
#: The first CUDA compute capability with bf16 tensor cores (Ampere). Older GPUs (T4, V100) emulate bf16,
#: which ``torch.cuda.is_bf16_supported()`` counts as support; llmkit does not.
NATIVE_BF16_CUDA = (8, 0)


@dataclass(frozen=True)
class Machine:
    """What the hardware offers, as far as llmkit's defaults depend on it."""

    cpu_name: str
    cpu_cores: int  # cores this process may use (affinity), not the host's total
    cpu_bf16: bool  # native bf16 instructions
    cuda_gpus: list[dict[str, Any]] = field(default_factory=list)  # name, memory_gib, capability
    mps: bool = False

    @property
    def kind(self) -> str:
        """``cuda``, ``mps`` or ``cpu``: where the Trainer puts the model."""
        if self.cuda_gpus:
            return "cuda"
        return "mps" if self.mps else "cpu"

    @property
    def cuda_bf16(self) -> bool:
        return bool(self.cuda_gpus) and all(
            tuple(gpu["capability"]) >= NATIVE_BF16_CUDA for gpu in self.cuda_gpus
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind}


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # bf16, fp16 or fp32
    reason: str


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on the process that writes outputs and prints (rank 0, or a plain single process)."""
    return os.environ.get("RANK", "0") == "0"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# -- probing the machine ------------------------------------------------------------------------------------
def probe_machine() -> Machine:
    """Read the CPU, CUDA GPUs and Apple MPS of this machine (cheap: no CUDA context beyond torch's own)."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "name": properties.name,
                    "memory_gib": round(properties.total_memory / 2**30, 1),
                    "capability": list(torch.cuda.get_device_capability(index)),
                }
            )
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    flags = cpu_flags()
    return Machine(
        cpu_name=cpu_name(),
        cpu_cores=usable_cores(),
        cpu_bf16=bool(flags & NATIVE_BF16_CPU_FLAGS) or apple_cpu_bf16(),
        cuda_gpus=gpus,
        mps=mps,
    )


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The processor's feature flags (x86 ``flags``, Arm ``Features``); empty where there is no cpuinfo."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def apple_cpu_bf16() -> bool:
    """Apple silicon from M2 on has the Arm BF16 extension (macOS reports it through sysctl)."""
    if sys.platform != "darwin":
        return False
    try:
        answer = subprocess.run(
            ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return answer.stdout.strip() == "1"


# -- precision ----------------------------------------------------------------------------------------------
def choose_precision(requested: str, machine: Machine, where: str) -> PrecisionChoice:
    """``training.precision`` -> the precision a run uses on ``machine``, and why."""
    if requested not in PRECISIONS:
        raise LlmkitError(
            f"{where}: training.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}"
        )
    if requested == "fp16" and machine.kind != "cuda":
        raise LlmkitError(
            f"{where}: training.precision=fp16 needs a CUDA GPU (its loss scaling is CUDA's); "
            f"use bf16 or fp32 on {'Apple MPS' if machine.kind == 'mps' else 'a CPU'}"
        )
    if requested != "auto":
        return PrecisionChoice(requested, "set by training.precision")
    if machine.kind == "cuda":
        if machine.cuda_bf16:
            return PrecisionChoice("bf16", "the GPU has bf16 tensor cores (compute capability 8.0 or newer)")
        capability = ".".join(map(str, machine.cuda_gpus[0]["capability"]))
        return PrecisionChoice(
            "fp16", f"the GPU (compute capability {capability}) has no native bf16: fp16 with loss scaling"
        )
    if machine.kind == "mps":
        return PrecisionChoice(
            "fp32", "Apple MPS: fp32 trains correctly on every macOS and torch version (bf16 needs macOS 14)"
        )
    if machine.cpu_bf16:
        return PrecisionChoice(
            "bf16", "the CPU has native bf16 (AVX512-BF16/AMX): faster at equal accuracy (docs/machines.md)"
        )
    return PrecisionChoice("fp32", "the CPU has no native bf16, so bf16 would be emulated and slower")


def run_precision(training: dict[str, Any], user_training: dict[str, Any], machine: Machine, where: str):
    """A recipe's precision on ``machine``: TrainingArguments' own ``bf16``/``fp16`` flags, when the recipe
    sets them, win over ``training.precision``."""
    requested = training["precision"]
    if user_training.get("bf16"):
        requested = "bf16"
    elif user_training.get("fp16"):
        requested = "fp16"
    elif "bf16" in user_training or "fp16" in user_training:
        requested = "fp32"
    return choose_precision(requested, machine, where)


def device_settings(
    precision: PrecisionChoice, machine: Machine, user_training: dict[str, Any], processes: int = 1
) -> dict[str, Any]:
    """The TrainingArguments fields llmkit sets for this machine; a field the recipe sets is left alone.

    * precision: ``bf16``/``fp16`` autocast flags; on a CPU ``use_cpu`` (without it TrainingArguments
      refuses bf16, and several processes need it for gloo);
    * ``dataloader_pin_memory`` only with a CUDA GPU (elsewhere pinning only warns);
    * ``tf32`` on GPUs with TF32 tensor cores (Ampere and newer): the fp32 matmuls outside autocast;
    * ``dataloader_num_workers`` 0: batches are pre-tokenized, so collating is cheap, and on a CPU workers
      would compete with the math for cores.
    """
    settings: dict[str, Any] = {
        "bf16": precision.precision == "bf16",
        "fp16": precision.precision == "fp16",
        "dataloader_pin_memory": machine.kind == "cuda",
        "dataloader_num_workers": 0,
    }
    if machine.kind == "cpu":
        settings["use_cpu"] = True
    if machine.kind == "cuda" and machine.cuda_bf16:
        settings["tf32"] = True
    return {key: value for key, value in settings.items() if key not in user_training}


def load_dtype(model_dtype: str | None) -> Any:
    """The dtype weights are loaded in for training: fp32 master weights unless ``model.dtype`` says so.

    transformers 5 loads a checkpoint in the dtype it was stored in; most hub LLMs are stored in bf16, which
    would train in pure bf16 with no fp32 master weights, whatever ``training.precision`` says.
    """
    import torch

    choices = {None: torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16, "auto": "auto"}
    return choices[model_dtype]


def inference_device() -> str:
    """Where the demos and ``predict`` run a model: the GPU where there is one, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def one_gpu_per_process(args: Any, machine: Machine) -> str | None:
    """With several GPUs and one process the Trainer wraps the model in ``nn.DataParallel`` over all of them,
    which changes the global batch and is slower than DDP. llmkit keeps such a run on one GPU and says how to
    use them all; returns that notice, or None."""
    if len(machine.cuda_gpus) > 1 and world_size() == 1 and args.n_gpu > 1:
        args._n_gpu = 1  # the Trainer reads n_gpu for DataParallel and the batch size
        count = len(machine.cuda_gpus)
        return f"{count} GPUs visible, training on one; use all of them with --num-processes {count} (DDP)"
    return None


def shards_parameters(trainer: Any) -> bool:
    """Is the model sharded (FSDP, DeepSpeed)? Then only the root module's forward gathers the parameters
    its own hooks hold (embeddings, final norm, head): calling the model's parts directly would skip that."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))


def check_sharding(training: dict[str, Any], where: str) -> None:
    """FSDP / DeepSpeed settings are passed to the Trainer as they are; fail early when they cannot run.

    Accelerate shards only over GPUs: on a CPU it drops the FSDP plugin without a word and trains plain DDP
    (measured with 2 gloo processes; tests/test_distributed.py keeps checking it)."""
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
            f"{where}: training.fsdp shards the model over GPUs and none is visible (on a CPU Accelerate "
            f"would train it unsharded); remove it: --num-processes N trains data-parallel (DDP) on CPU"
        )


def confirm_sharding(trainer: Any, where: str) -> None:
    """Accelerate ignores an FSDP or DeepSpeed setting it cannot use (one process started without a
    launcher, a CPU) and trains the whole model on every device; refuse that rather than run unsharded."""
    if trainer.args.fsdp and not getattr(trainer, "is_fsdp_enabled", False):
        raise LlmkitError(
            f"{where}: training.fsdp is set but Accelerate did not shard the model: FSDP needs a distributed "
            f"launch on GPUs; use --num-processes N (N GPUs), or on one GPU "
            f"`torchrun --nproc_per_node 1 -m llmkit finetune ...`"
        )
    if trainer.args.deepspeed and not getattr(trainer, "is_deepspeed_enabled", False):
        raise LlmkitError(f"{where}: training.deepspeed is set but Accelerate did not start DeepSpeed")


# -- launching N processes --------------------------------------------------------------------------------
def launch_command(
    argv: list[str],
    num_processes: int,
    machine: Machine,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command and environment that run ``python -m llmkit <argv>`` N times."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(num_processes * num_machines), "--num_machines", str(num_machines)]
    if num_machines > 1:
        if not main_process_ip:
            raise LlmkitError("--num-machines > 1 needs --main-process-ip (the address of machine rank 0)")
        command += ["--machine_rank", str(machine_rank), "--main_process_ip", main_process_ip]
    if main_process_port:
        command += ["--main_process_port", str(main_process_port)]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the recipe decides precision
    env = dict(os.environ)
    if machine.kind == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"  # multi-process on CPU: gloo backend
        # the launcher would give each process one thread; share this machine's cores instead
        threads = env.get("OMP_NUM_THREADS") or str(max(1, machine.cpu_cores // num_processes))
        command += ["--num_cpu_threads_per_process", threads]
    command += ["-m", "llmkit", *argv]
    return command, env


def launch(argv: list[str], num_processes: int, **where: Any) -> int:
    """Run ``python -m llmkit <argv>`` under ``accelerate launch``, ``num_processes`` per machine."""
    command, env = launch_command(argv, num_processes, probe_machine(), **where)
    return subprocess.call(command, env=env)
