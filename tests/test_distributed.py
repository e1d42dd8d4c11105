"""The same recipe on 2 CPU processes (DDP over gloo, launched through Accelerate) matches 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LAUNCHES_PROCESSES


def finetune(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llmkit", "finetune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@LAUNCHES_PROCESSES
def test_two_cpu_processes_match_one_process(sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    common = [
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        "training.max_steps=4",
        "training.learning_rate=1e-3",
        "training.train_sampling_strategy=sequential",
        "training.logging_steps=1",
        "training.precision=fp32",  # compare DDP with one process exactly, not through bf16 rounding
    ]
    one = finetune(
        [*common, "training.per_device_train_batch_size=8", f"output_dir={tmp_path / 'one'}"], tmp_path
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = finetune(
        [
            "--num-processes",
            "2",
            *common,
            "training.per_device_train_batch_size=4",
            f"output_dir={tmp_path / 'two'}",
        ],
        tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stderr and "2 processes" not in one.stderr

    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # Same global batch (8 = 1 x 8 = 2 x 4): same loss, not doubled by token averaging across devices.
    assert double["train_loss"] == pytest.approx(single["train_loss"], rel=0.05)
    assert double["eval_loss"] == pytest.approx(single["eval_loss"], rel=0.05)
    assert double["eval_accuracy"] == pytest.approx(
        single["eval_accuracy"], abs=0.26
    )  # 4 eval rows: 1 row apart
    # One set of outputs, written once, and one summary on stdout.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    assert two.stdout.count("model saved to") == 1


@LAUNCHES_PROCESSES
@pytest.mark.slow
def test_two_machines_train_as_one_job(sentiment_files, tmp_path: Path) -> None:
    """Multi-node, proven locally: machine ranks 0 and 1 on 127.0.0.1, one CPU process each, world size 2."""
    import socket

    train, validation = sentiment_files
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = [
        sys.executable, "-m", "llmkit", "finetune",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        "training.max_steps=3",
        "training.precision=fp32",
        f"output_dir={tmp_path / 'out'}",
        "--num-machines", "2", "--main-process-ip", "127.0.0.1", "--main-process-port", str(port),
    ]  # fmt: skip
    machines = [
        subprocess.Popen(
            [*common, "--machine-rank", str(rank)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=600) for machine in machines]
    for machine, (_, stderr) in zip(machines, outputs, strict=True):
        assert machine.returncode == 0, stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert "2 processes" in outputs[0][1]
    assert outputs[0][0].count("model saved to") + outputs[1][0].count("model saved to") == 1


def test_sharding_without_gpu_is_a_clear_error(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, _ = sentiment_files
    base = ["finetune", "model=tiny-bert", f"data.train={train}", f"output_dir={tmp_path / 'out'}"]
    for fsdp in ("true", "full_shard"):  # transformers 5's `fsdp: true`, and the older strategy string
        result = run_cli(*base, f"training.fsdp={fsdp}")
        assert (
            result.exit_code == 2
            and "training.fsdp shards the model over GPUs and none is visible" in result.stderr
        ), result.stderr
    result = run_cli(*base, "training.deepspeed=ds_config.json")
    assert result.exit_code == 2 and "training.deepspeed needs" in result.stderr
    result = run_cli(*base, "training.precision=half")
    assert (
        result.exit_code == 2 and "training.precision must be one of auto, bf16, fp16, fp32" in result.stderr
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("training.fsdp=true", "training.fsdp shards the model over GPUs and none is visible"),
        ("training.deepspeed=ds_config.json", "training.deepspeed needs the deepspeed package"),
    ],
)
def test_sharding_on_cpu_processes_fails_before_launch(
    run_cli, sentiment_files, tmp_path: Path, setting: str, message: str
) -> None:
    """One line and exit 2 from the launching command, not a failure in every process and the launcher's
    report of it."""
    train, _ = sentiment_files
    result = run_cli(
        "finetune", "--num-processes", "2", "model=tiny-bert", f"data.train={train}",
        f"output_dir={tmp_path / 'out'}", setting,
    )  # fmt: skip
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("llmkit: ")] == [
        result.stderr.splitlines()[-1]
    ]  # the error, beside the recipe's notices
    assert not (tmp_path / "out").exists()


ACCELERATE_FSDP_PROBE = """
import json, sys
import torch
from transformers import Trainer, TrainingArguments
from llmkit.core.devices import confirm_sharding
from llmkit.core.errors import LlmkitError

args = TrainingArguments(output_dir=sys.argv[1], fsdp=True, use_cpu=True, report_to=[])  # FSDP2, gloo
trainer = Trainer(model=torch.nn.Linear(2, 2), args=args)
try:
    confirm_sharding(trainer, "probe")
    refused = None
except LlmkitError as exc:
    refused = str(exc)
if args.process_index == 0:
    state = trainer.accelerator.state
    print(json.dumps({"world_size": args.world_size, "type": str(state.distributed_type),
                      "fsdp": trainer.is_fsdp_enabled, "refused": refused}))
"""


@LAUNCHES_PROCESSES
def test_accelerate_would_train_fsdp_on_cpu_unsharded(tmp_path: Path) -> None:
    """Why llmkit refuses training.fsdp on a CPU: on 2 gloo processes Accelerate drops the FSDP plugin and
    prepares plain DDP (torch's own fully_shard does run on CPU; Accelerate only shards on GPUs), and
    confirm_sharding, run after every Trainer is built, says so. If this starts failing, Accelerate shards on
    CPU: lift the CPU check in check_sharding and compare an FSDP run's loss with one process."""
    script = tmp_path / "probe.py"
    script.write_text(ACCELERATE_FSDP_PROBE, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    probe = json.loads(launched.stdout.strip().splitlines()[-1])
    assert probe["world_size"] == 2 and probe["type"] == "DistributedType.MULTI_CPU"
    assert probe["fsdp"] is False
    assert "training.fsdp is set but Accelerate did not shard the model" in probe["refused"]
