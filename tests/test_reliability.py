"""Crash safety: kill and resume, atomic checkpoints, NaN stop, manifest, safe loading, `llmkit validate`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llmkit
from llmkit.checkpoints import checkpoint_to_resume, complete_checkpoints
from llmkit.errors import LlmkitError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def command(train: Path, validation: Path, output_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "llmkit", "finetune", "model=tiny-bert", f"data.train={train}",
        f"data.validation={validation}", f"output_dir={output_dir}", "training.max_steps=150",
        "training.per_device_train_batch_size=4", "training.save_strategy=steps", "training.save_steps=10",
        "training.save_total_limit=2", "training.learning_rate=3e-4", "training.eval_strategy=no",
    ]  # fmt: skip


def test_killed_run_resumes_to_the_same_metrics(sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    reference = subprocess.run(
        command(train, validation, tmp_path / "whole"),
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "killed"
    victim = subprocess.Popen(
        command(train, validation, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not complete_checkpoints(out) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert complete_checkpoints(out) and not (out / "metrics.json").exists()

    resumed = subprocess.run(
        command(train, validation, out), env=ENV, capture_output=True, text=True, check=False, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "llmkit: resuming from" in resumed.stderr
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    assert again["eval_loss"] == pytest.approx(whole["eval_loss"], abs=1e-5)
    assert again["eval_accuracy"] == whole["eval_accuracy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from"].startswith(str(out / "checkpoint-"))


def test_only_complete_checkpoints_are_resumed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-20").mkdir()  # a save cut short by a crash: no trainer state
    (out / ".saving" / "checkpoint-30").mkdir(parents=True)
    assert checkpoint_to_resume(out, "auto", False, "metrics.json") == out / "checkpoint-10"
    with pytest.raises(LlmkitError, match="is not empty"):
        checkpoint_to_resume(out, "never", False, "metrics.json")
    (out / "metrics.json").write_text("{}")
    with pytest.raises(LlmkitError, match="holds a finished run"):
        checkpoint_to_resume(out, "auto", False, "metrics.json")
    with pytest.raises(LlmkitError, match="not a complete checkpoint"):
        checkpoint_to_resume(out, str(out / "checkpoint-20"), False, "metrics.json")
    assert (
        checkpoint_to_resume(out, str(out / "checkpoint-10"), False, "metrics.json") == out / "checkpoint-10"
    )


def test_resume_flag_reaches_the_recipe(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, _ = sentiment_files
    result = run_cli("finetune", "model=tiny-bert", f"data.train={train}", "--resume", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert f"--resume {tmp_path / 'nowhere'}: not a complete checkpoint" in result.stderr


def test_checkpoints_are_written_whole_and_manifest_describes_the_run(
    sentiment_files, tmp_path: Path
) -> None:
    train, validation = sentiment_files
    result = llmkit.finetune(
        {"model": "tiny-bert", "data": {"train": str(train), "validation": str(validation)},
         "training": {"max_steps": 6, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 2,
                      "seed": 7},
         "output_dir": str(tmp_path / "out")}
    )  # fmt: skip
    out = result.output_dir
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-4", "checkpoint-6"]
    assert not (out / ".saving").exists() and not (out / ".final").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["recipe"]["training"]["max_steps"] == 6
    assert manifest["data_files"][str(train)]["sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert manifest["versions"]["transformers"] and manifest["world_size"] == 1


def test_diverging_loss_stops_with_the_step(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    out = tmp_path / "out"
    result = run_cli(
        "finetune",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        "training.max_steps=20",
        "training.learning_rate=1e30",
        "training.max_grad_norm=0",
        "training.logging_steps=1",
        "training.warmup_steps=0",
    )
    assert result.exit_code == 2, result.stderr[-1000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training ") and " at step " in message
    assert not (out / "metrics.json").exists()


def test_pickle_only_weights_need_an_opt_in(run_cli, sentiment_files, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from llmkit.models import resolve_model

    folder = tmp_path / "pickled"
    source = resolve_model("tiny-bert")
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    model = AutoModel.from_pretrained(source)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    train, validation = sentiment_files
    base = ["finetune", f"data.train={train}", f"data.validation={validation}", "training.max_steps=1"]
    refused = run_cli(*base, f"model={folder}", f"output_dir={tmp_path / 'a'}")
    assert refused.exit_code == 2 and "has only pickle weights" in refused.stderr
    allowed = run_cli(*base, f"model={{name: {folder}, allow_pickle: true}}", f"output_dir={tmp_path / 'b'}")
    assert allowed.exit_code == 0, allowed.stderr[-1500:]
    assert (tmp_path / "b" / "model.safetensors").exists()  # what llmkit writes is always safetensors


def test_validate_shows_examples_lengths_and_labels(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    result = run_cli(
        "validate",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        "data.max_length=8",
        "-n",
        "2",
        f"output_dir={tmp_path / 'never'}",
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "train: 16 rows" in out and "validation: 4 rows" in out
    assert "labels in train: negative: 8, positive: 8" in out
    assert "reach max_length 8 (truncated)" in out
    assert (
        sum(line.startswith("example ") for line in out.splitlines()) == 2
        and "[CLS]" in out
        and "label: " in out
    )
    assert not (tmp_path / "never").exists()
    bad = run_cli("validate", "model=tiny-bert", f"data.train={train}", "data.text=review")
    assert bad.exit_code == 2 and "no column 'review'" in bad.stderr
