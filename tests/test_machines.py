"""Every machine kind a user has, simulated on whatever CPU runs the suite.

For each kind (CPU with and without native bf16, Ampere-class and older CUDA GPUs, several GPUs, Apple MPS)
the capability probes are patched, and the settings llmkit derives are handed to the real
``TrainingArguments``, which must accept them. One real bf16 run on this CPU closes the loop.
"""

from __future__ import annotations

import functools
import json
import math
import types
from pathlib import Path

import pytest
import torch

from llmkit.core.devices import (
    Machine,
    choose_precision,
    device_settings,
    launch_command,
    one_gpu_per_process,
    probe_machine,
)
from llmkit.core.errors import LlmkitError

CPU_PLAIN = Machine(cpu_name="Intel Xeon (Cascade Lake)", cpu_cores=8, cpu_bf16=False)
CPU_BF16 = Machine(cpu_name="Intel Xeon (Sapphire Rapids)", cpu_cores=8, cpu_bf16=True)
A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_gib": 39.4, "capability": [8, 0]}
T4 = {"name": "Tesla T4", "memory_gib": 14.6, "capability": [7, 5]}
CUDA_AMPERE = Machine(cpu_name="AMD EPYC", cpu_cores=16, cpu_bf16=False, cuda_gpus=[A100])
CUDA_T4 = Machine(cpu_name="Intel Xeon", cpu_cores=4, cpu_bf16=False, cuda_gpus=[T4])
CUDA_FOUR = Machine(cpu_name="AMD EPYC", cpu_cores=64, cpu_bf16=True, cuda_gpus=[A100] * 4)
MAC = Machine(cpu_name="Apple M2", cpu_cores=8, cpu_bf16=True, mps=True)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (CPU_PLAIN, "fp32"),
        (CPU_BF16, "bf16"),
        (CUDA_AMPERE, "bf16"),
        (CUDA_T4, "fp16"),  # torch calls T4 bf16-capable (emulation); llmkit does not
        (CUDA_FOUR, "bf16"),
        (MAC, "fp32"),
    ],
    ids=["cpu", "cpu-bf16", "cuda-ampere", "cuda-t4", "cuda-4-gpus", "mps"],
)
def test_auto_precision_per_machine_kind(machine: Machine, expected: str) -> None:
    choice = choose_precision("auto", machine, "r")
    assert choice.precision == expected and choice.reason


def test_explicit_precisions() -> None:
    for machine in (CPU_PLAIN, CPU_BF16, CUDA_T4, MAC):
        assert choose_precision("bf16", machine, "r").precision == "bf16"  # bf16 works on any CPU
        assert choose_precision("fp32", machine, "r").precision == "fp32"
    assert choose_precision("fp16", CUDA_T4, "r").precision == "fp16"
    for machine in (CPU_PLAIN, CPU_BF16, MAC):
        with pytest.raises(LlmkitError, match="fp16 needs a CUDA GPU"):
            choose_precision("fp16", machine, "r")
    with pytest.raises(LlmkitError, match="must be one of auto, bf16, fp16, fp32"):
        choose_precision("half", CPU_PLAIN, "r")


def cached_device_property(setup) -> functools.cached_property:
    """Computed once per arguments object, like the ``_setup_devices`` it replaces."""
    replacement = functools.cached_property(setup)
    replacement.__set_name__(None, "_setup_devices")
    return replacement


def simulate_cuda(monkeypatch: pytest.MonkeyPatch, machine: Machine) -> None:
    """Make torch (and so transformers) see ``machine``'s GPUs: availability, bf16, TF32 and the device."""
    from transformers import TrainingArguments

    gpus = machine.cuda_gpus
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    # torch reports emulated bf16 on T4/V100 as supported; simulate that honestly
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr("transformers.training_args.is_torch_tf32_available", lambda: machine.cuda_bf16)
    monkeypatch.setattr("transformers.training_args.enable_tf32", lambda enabled: None)

    def cuda_device(self):
        self._n_gpu = len(gpus)  # what transformers sets for a single process that sees every GPU
        return torch.device("cuda:0")

    monkeypatch.setattr(TrainingArguments, "_setup_devices", cached_device_property(cuda_device))


def simulate_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainingArguments

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)

    def mps_device(self):
        self._n_gpu = 1  # what transformers sets before it picks MPS
        return torch.device("mps")

    monkeypatch.setattr(TrainingArguments, "_setup_devices", cached_device_property(mps_device))


@pytest.mark.parametrize(
    "machine",
    [CPU_PLAIN, CPU_BF16, CUDA_AMPERE, CUDA_T4, CUDA_FOUR, MAC],
    ids=["cpu", "cpu-bf16", "cuda-ampere", "cuda-t4", "cuda-4-gpus", "mps"],
)
def test_training_arguments_accept_each_machine_kind(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, sentiment_files, tmp_path: Path
) -> None:
    """The whole path: recipe -> llmkit's settings for that machine -> the real TrainingArguments."""
    from llmkit.recipe.loader import load_recipe
    from llmkit.training.arguments import training_arguments

    if machine.kind == "cuda":
        simulate_cuda(monkeypatch, machine)
    elif machine.kind == "mps":
        simulate_mps(monkeypatch)
    train, validation = sentiment_files
    recipe = load_recipe(None, ["model=tiny-bert", f"data.train={train}", f"data.validation={validation}"])
    args = training_arguments(recipe, tmp_path / "out", has_eval=True, machine=machine)
    expected = choose_precision("auto", machine, "r").precision
    assert (args.bf16, args.fp16) == (expected == "bf16", expected == "fp16")
    assert args.device.type == machine.kind
    assert args.use_cpu is (machine.kind == "cpu")
    assert args.dataloader_pin_memory is (machine.kind == "cuda")
    assert args.tf32 is (True if machine.cuda_bf16 else None)
    assert args.n_gpu == (1 if machine.kind == "cuda" else 0 if machine.kind == "cpu" else 1)


def test_explicit_bf16_on_a_cpu_without_native_bf16_is_accepted(sentiment_files, tmp_path: Path) -> None:
    from llmkit.recipe.loader import load_recipe
    from llmkit.training.arguments import training_arguments

    train, _ = sentiment_files
    for overrides in (["training.precision=bf16"], ["training.bf16=true"]):
        recipe = load_recipe(None, ["model=tiny-bert", f"data.train={train}", *overrides])
        args = training_arguments(recipe, tmp_path / "out", has_eval=True, machine=CPU_PLAIN)
        assert args.bf16 and args.use_cpu and args.device.type == "cpu"


def test_explicit_fp16_on_a_cpu_is_one_line_exit_2(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    settings = ["model=tiny-bert", f"data.train={train}", f"data.validation={validation}"]
    settings.append(f"output_dir={tmp_path / 'out'}")
    for command in ("finetune", "validate"):  # validate runs finetune's checks: it never calls this valid
        for flag in ("training.precision=fp16", "training.fp16=true"):
            result = run_cli(command, *settings, flag)
            assert result.exit_code == 2 and "fp16 needs a CUDA GPU" in result.stderr, (command, result)
            assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_recipe_settings_win_over_machine_defaults() -> None:
    choice = choose_precision("auto", CUDA_AMPERE, "r")
    settings = device_settings(choice, CUDA_AMPERE, {"tf32": False, "dataloader_pin_memory": False})
    assert "tf32" not in settings and "dataloader_pin_memory" not in settings and settings["bf16"] is True


def test_several_gpus_and_one_process_train_on_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not nn.DataParallel over every GPU (a different global batch, slower than DDP): one GPU, and a hint."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = types.SimpleNamespace(n_gpu=4, _n_gpu=4)
    notice = one_gpu_per_process(args, CUDA_FOUR)
    assert args._n_gpu == 1 and "--num-processes 4" in notice
    monkeypatch.setenv("WORLD_SIZE", "4")  # under DDP each process already has one GPU
    assert one_gpu_per_process(types.SimpleNamespace(n_gpu=1, _n_gpu=1), CUDA_FOUR) is None


def test_launcher_shares_cpu_cores_among_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate's multi-GPU launcher gives each process one thread; llmkit gives each its share."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    command, env = launch_command(["finetune"], 2, CPU_BF16)
    assert command[command.index("--num_cpu_threads_per_process") + 1] == "4"
    assert env["ACCELERATE_USE_CPU"] == "true"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # a user's own setting is kept
    command, _ = launch_command(["finetune"], 2, CPU_BF16)
    assert command[command.index("--num_cpu_threads_per_process") + 1] == "3"
    command, env = launch_command(["finetune"], 4, CUDA_FOUR)
    assert "--num_cpu_threads_per_process" not in command and "ACCELERATE_USE_CPU" not in env
    with pytest.raises(LlmkitError, match="--main-process-ip"):
        launch_command(["finetune"], 1, CPU_PLAIN, num_machines=2)


def test_probe_reads_cpu_flags_cuda_and_mps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import llmkit.core.devices as distributed

    sapphire = tmp_path / "cpuinfo"
    sapphire.write_text(
        "model name\t: Intel Xeon Platinum 8480\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16\n"
    )
    cascade = tmp_path / "cpuinfo-old"
    cascade.write_text("model name\t: Intel Xeon Gold 6230\nflags\t\t: fpu avx512f avx512bw\n")
    graviton = tmp_path / "cpuinfo-arm"
    graviton.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert distributed.NATIVE_BF16_CPU_FLAGS & distributed.cpu_flags(sapphire)
    assert not distributed.NATIVE_BF16_CPU_FLAGS & distributed.cpu_flags(cascade)
    assert distributed.NATIVE_BF16_CPU_FLAGS & distributed.cpu_flags(graviton)
    assert distributed.cpu_name(sapphire) == "Intel Xeon Platinum 8480"

    read_flags = distributed.cpu_flags
    monkeypatch.setattr(distributed, "cpu_flags", lambda: read_flags(cascade))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    properties = types.SimpleNamespace(name="Tesla V100-SXM2-16GB", total_memory=16 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: properties)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (7, 0))
    machine = probe_machine()
    assert machine.kind == "cuda" and not machine.cpu_bf16 and not machine.cuda_bf16
    assert (
        machine.cuda_gpus == [{"name": "Tesla V100-SXM2-16GB", "memory_gib": 16.0, "capability": [7, 0]}] * 2
    )
    assert choose_precision("auto", machine, "r").precision == "fp16"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert probe_machine().kind == "mps"


def test_bf16_end_to_end_on_this_cpu(finetune_tiny) -> None:
    """A real bf16-autocast run on whatever CPU runs the suite (slow without native bf16, but it runs)."""
    result = finetune_tiny("training.precision=bf16", "training.max_steps=3")
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["precision"] == "bf16" and manifest["device"] == "cpu"
    assert math.isfinite(result.metrics["eval_loss"]) and math.isfinite(result.metrics["train_loss"])
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["dtype"] == "float32"  # autocast over fp32 master weights: the saved model is fp32


def test_env_reports_versions_devices_and_the_auto_choice(run_cli) -> None:
    from llmkit.env import environment, report_lines

    result = run_cli("env", "--json")
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["versions"]["torch"] == torch.__version__
    assert facts["versions"]["transformers"] and facts["versions"]["llmkit"]
    here = probe_machine()
    assert facts["machine"]["kind"] == here.kind and facts["machine"]["cpu_bf16"] == here.cpu_bf16
    assert facts["precision_auto"]["precision"] == choose_precision("auto", here, "r").precision
    assert facts["hub"]["HF_HUB_OFFLINE"] is True  # the suite runs offline
    assert set(facts["aliases"]) >= {"minilm-l6", "tiny-bert", "smollm2-135m"}

    text = run_cli("env")
    assert text.exit_code == 0 and "- torch: " in text.stdout and "- precision auto: " in text.stdout
    simulated = report_lines(environment(CUDA_T4))
    assert "- CUDA GPU 0: Tesla T4, 14.6 GiB, compute capability 7.5" in simulated
    assert any(line.startswith("- precision auto: fp16") for line in simulated)


def test_gpu_check_script_runs_as_a_cpu_smoke_test(tmp_path: Path, real_data_dir: Path) -> None:
    """benchmarks/gpu_check.py is meant for CUDA machines; --allow-cpu proves its mechanics anywhere."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    bundle = tmp_path / "bundle"  # what a machine that downloads nothing gets: configs, no weights
    packed = subprocess.run(
        [
            sys.executable, str(repo / "benchmarks" / "gpu_bundle.py"), str(bundle), "--rows", "20",
            "--shared", str(real_data_dir),
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr[-3000:]
    assert not list((bundle / "models").rglob("*.safetensors"))
    assert len((bundle / "data" / "sst2" / "dev.tsv").read_text().splitlines()) == 21  # header + 20 rows
    command = [
        sys.executable, str(repo / "benchmarks" / "gpu_check.py"),
        "--recipes", "classification", "--steps", "1", "--skip-full", "--skip-adapters", "--allow-cpu",
        "--results", str(tmp_path / "results"), "--work", str(tmp_path / "runs"),
        "--stand-in", f"minilm-l6={bundle / 'models' / 'minilm-l6'}", "--data-root", str(bundle / "data"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "gpu_check.json").read_text())
    assert report["stand_ins"] == {"minilm-l6": "random weights, same architecture"}
    stand_in = tmp_path / "runs" / "stand-ins" / "minilm-l6"
    manifest = json.loads((tmp_path / "runs" / "classification" / "manifest.json").read_text())
    assert str(stand_in) in json.dumps(manifest["recipe"]["model"])
    line = report["recipes"]["classification"]
    assert line["precision"] == choose_precision("auto", probe_machine(), "r").precision
    assert line["device"] == "cpu" and math.isfinite(line["final_train_loss"])
    assert "| classification |" in (tmp_path / "results" / "gpu_check.md").read_text()
    if not torch.cuda.is_available():  # the FSDP step ran, and llmkit refused to shard on a CPU
        assert "training.fsdp shards the model over GPUs and none is visible" in report["fsdp"]["error"]
    if not torch.cuda.is_available():  # without --allow-cpu it refuses to run on a CPU
        refused = subprocess.run(command[:2], capture_output=True, text=True, timeout=600, check=False)
        assert refused.returncode != 0 and "no CUDA GPU is visible" in refused.stderr
