"""The same recipe on 2 CPU processes (DDP over gloo, launched through Accelerate) matches 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmkit.errors import LlmkitError


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


def test_precision_choices() -> None:
    from llmkit.distributed import precision_flags

    assert precision_flags("fp32", "r") == {"bf16": False, "fp16": False}
    assert precision_flags("bf16", "r") == {"bf16": True, "fp16": False}
    assert precision_flags("auto", "r")["fp16"] is False  # never fp16 without a GPU
    with pytest.raises(LlmkitError, match="fp16 needs a CUDA GPU"):
        precision_flags("fp16", "r")


def test_sharding_without_gpu_is_a_clear_error(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, _ = sentiment_files
    base = ["finetune", "model=tiny-bert", f"data.train={train}", f"output_dir={tmp_path / 'out'}"]
    result = run_cli(*base, "training.fsdp=full_shard")
    assert (
        result.exit_code == 2
        and "training.fsdp shards the model over GPUs and none is visible" in result.stderr
    )
    result = run_cli(*base, "training.deepspeed=ds_config.json")
    assert result.exit_code == 2 and "training.deepspeed needs" in result.stderr
    result = run_cli(*base, "training.precision=half")
    assert (
        result.exit_code == 2 and "training.precision must be one of auto, bf16, fp16, fp32" in result.stderr
    )
    assert not (tmp_path / "out").exists()
