"""Crash safety: kill and resume, atomic checkpoints, NaN stop, manifest, safe loading, `llmkit validate`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.runs.entries import FINGERPRINT_FILE, RUN_MARKER, complete_checkpoints, is_run_entry
from llmkit.training.checkpoints import checkpoint_to_resume, stop_on_non_finite_loss
from tests.conftest import LAUNCHES_PROCESSES, REPO

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
    (out / RUN_MARKER).write_text("{}")
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
    (out / "metrics.json").unlink()
    assert (
        checkpoint_to_resume(out, str(out / "checkpoint-10"), False, "metrics.json") == out / "checkpoint-10"
    )


def test_a_killed_run_of_an_older_llmkit_is_resumed_but_a_foreign_folder_is_not(tmp_path: Path) -> None:
    old = tmp_path / "old"  # no run marker yet: checkpoints and TensorBoard logs only
    (old / "checkpoint-10").mkdir(parents=True)
    (old / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (old / "tensorboard").mkdir()
    assert checkpoint_to_resume(old, "auto", False, "metrics.json") == old / "checkpoint-10"
    (old / "train.csv").write_text("text,label\n")  # someone's data beside them: not a run to touch
    with pytest.raises(LlmkitError, match=r"holds no llmkit run \(checkpoint-10, tensorboard, train.csv\)"):
        checkpoint_to_resume(old, "auto", True, "metrics.json")


def test_an_explicit_resume_never_writes_over_a_finished_or_foreign_run(tmp_path: Path) -> None:
    finished = tmp_path / "finished"
    (finished / "checkpoint-10").mkdir(parents=True)
    (finished / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (finished / RUN_MARKER).write_text("{}")
    (finished / "metrics.json").write_text("{}")
    with pytest.raises(LlmkitError, match="holds a finished run, which --resume would write over"):
        checkpoint_to_resume(finished, str(finished / "checkpoint-10"), False, "metrics.json")
    other = tmp_path / "other"  # an unfinished run of its own
    other.mkdir()
    (other / RUN_MARKER).write_text("{}")
    with pytest.raises(LlmkitError, match="holds another run than"):
        checkpoint_to_resume(other, str(finished / "checkpoint-10"), False, "metrics.json")
    fresh = tmp_path / "fresh"  # continuing a finished run's checkpoint elsewhere is fine
    assert checkpoint_to_resume(fresh, str(finished / "checkpoint-10"), False, "metrics.json") == (
        finished / "checkpoint-10"
    )


def test_resume_flag_reaches_the_recipe(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, _ = sentiment_files
    result = run_cli("finetune", "model=tiny-bert", f"data.train={train}", "--resume", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert f"--resume {tmp_path / 'nowhere'}: not a complete checkpoint" in result.stderr


def test_ctrl_c_says_what_was_saved_and_how_to_continue(
    run_cli, sentiment_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """typer ends an interrupted command with exit code 130 itself, so a handler around the app never ran and
    Ctrl-C printed nothing."""
    from transformers.trainer_callback import CallbackHandler

    train, validation = sentiment_files
    out = tmp_path / "out"
    step_end = CallbackHandler.on_step_end

    def ctrl_c_after_step_2(self, args, state, control):
        if state.global_step == 2:  # before step 2's checkpoint is saved
            raise KeyboardInterrupt
        return step_end(self, args, state, control)

    monkeypatch.setattr(CallbackHandler, "on_step_end", ctrl_c_after_step_2)
    result = run_cli(
        "finetune", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}",
        f"output_dir={out}", "training.max_steps=4", "training.save_strategy=steps", "training.save_steps=1",
    )  # fmt: skip
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted at step 2; the last complete checkpoint is {out / 'checkpoint-1'}: run the same "
        f"command again to continue from it (training.resume=auto), or pass --resume {out / 'checkpoint-1'}"
    )
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-1"]


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

    from llmkit.models.resolve import resolve_model

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


# -- --overwrite deletes only what llmkit wrote --------------------------------------------------
def test_overwrite_replaces_a_run_but_keeps_the_users_files(run_cli, sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    out = tmp_path / "out"
    args = ["finetune", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}",
            f"output_dir={out}", "training.max_steps=4",
            "training.per_device_train_batch_size=8"]  # fmt: skip
    first = run_cli(*args, "training.save_strategy=steps", "training.save_steps=2", f"data.test={validation}")
    assert first.exit_code == 0, first.stderr[-2000:]
    written = {p.name for p in out.iterdir()}
    assert {"checkpoint-2", "checkpoint-4", RUN_MARKER} <= written
    assert all(is_run_entry(name) for name in written), written  # the list of run files knows every one
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    (out / "data" / "train.csv").write_text("mine too")

    again = run_cli(*args, "--overwrite")
    assert again.exit_code == 0, again.stderr[-2000:]
    assert "--overwrite kept 2 file(s)" in again.stderr and "data, notes.txt" in again.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "data" / "train.csv").read_text() == "mine too"
    assert not (out / "checkpoint-2").exists()  # the old run's files went
    assert (out / "metrics.json").exists() and (out / "model.safetensors").exists()


def test_overwrite_refuses_a_folder_that_holds_no_run(run_cli, tmp_path: Path) -> None:
    """output_dir=. in a project folder: its data, README and config are not llmkit's to delete."""
    project = tmp_path / "project"
    project.mkdir()
    rows = "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(12))
    originals = {"train.csv": rows, "README.md": "# my project", "config.json": "{}"}
    for name, text in originals.items():
        (project / name).write_text(text)
    result = run_cli(
        "finetune", "model=tiny-bert", f"data.train={project / 'train.csv'}", f"output_dir={project}",
        "training.max_steps=1", "--overwrite",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "holds no llmkit run (README.md, config.json, train.csv)" in result.stderr
    assert {p.name: p.read_text() for p in project.iterdir()} == originals


# -- a checkpoint only continues the run that wrote it ------------------------------------------------------
def checkpointing_run(sentiment_files: tuple[Path, Path], out: Path) -> list[str]:
    """`finetune` arguments of a tiny-bert run that saves a checkpoint every 2 steps into ``out``."""
    train, validation = sentiment_files
    return ["finetune", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}",
            f"output_dir={out}", "training.per_device_train_batch_size=8", "training.save_strategy=steps",
            "training.save_steps=2", "training.eval_strategy=no"]  # fmt: skip


def test_auto_resume_refuses_a_checkpoint_of_another_recipe_or_data(
    run_cli, sentiment_files, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = checkpointing_run(sentiment_files, out)
    assert run_cli(*args, "training.max_steps=4").exit_code == 0
    (out / "metrics.json").unlink()  # as if killed after its last checkpoint
    assert json.loads((out / "checkpoint-4" / FINGERPRINT_FILE).read_text())["data rows"]["train"]

    changed = run_cli(*args, "training.max_steps=6", "training.learning_rate=1e-3")
    assert changed.exit_code == 2
    message = changed.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: cannot resume from {out / 'checkpoint-4'}: the run changed")
    assert "(training.learning_rate: 0.0001 -> 0.001)" in message and "--overwrite" in message

    train = sentiment_files[0]
    train.write_text(train.read_text().replace("wonderful", "marvellous"))
    edited = run_cli(*args, "training.max_steps=6")
    assert edited.exit_code == 2 and "data rows.train: " in edited.stderr
    assert "learning_rate" not in edited.stderr.strip().splitlines()[-1]

    explicit = run_cli(*args, "training.max_steps=6", "--resume", out / "checkpoint-4")
    assert explicit.exit_code == 0, explicit.stderr[-2000:]  # the user's choice: a warning, not an error
    assert "warning: resuming from" in explicit.stderr and "data rows.train" in explicit.stderr


def test_more_steps_resume_the_same_run(run_cli, sentiment_files, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = checkpointing_run(sentiment_files, out)
    assert run_cli(*args, "training.max_steps=4").exit_code == 0
    (out / "metrics.json").unlink()
    longer = run_cli(*args, "training.max_steps=6", "training.logging_steps=1")
    assert longer.exit_code == 0, longer.stderr[-2000:]
    assert f"resuming from {out / 'checkpoint-4'}" in longer.stderr
    assert "llmkit: warning" not in longer.stderr


# -- the divergence guard under fp16 -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fp16", "logs", "stops"),
    [
        (True, {"loss": 2.3, "grad_norm": math.inf}, False),  # an overflow step the loss scaler skips
        (True, {"loss": math.nan, "grad_norm": 1.0}, True),
        (False, {"loss": 2.3, "grad_norm": math.inf}, True),  # no scaler: a real divergence
        (False, {"loss": 2.3, "grad_norm": 1.0}, False),
    ],
)
def test_divergence_guard_lets_fp16_skip_overflowing_steps(tmp_path: Path, fp16, logs, stops) -> None:
    from transformers import TrainerControl, TrainerState

    guard = stop_on_non_finite_loss()
    control = TrainerControl()
    state = TrainerState(global_step=7)
    guard.on_log(SimpleNamespace(fp16=fp16, output_dir=str(tmp_path)), state, control, logs=logs)
    assert control.should_training_stop is stops
    assert (guard.problem is not None) is stops


# -- DDP: every rank's part of a checkpoint is in it --------------------------------------------------
SLOW_RANK = """
import os, time
import transformers.trainer

if os.environ.get("LLMKIT_TEST_SLOW_RANK") == os.environ.get("RANK"):
    save_rng_state = transformers.trainer.Trainer._save_rng_state

    def slow_save_rng_state(self, output_dir):
        time.sleep(3)  # this rank writes its RNG state after rank 0 has finished its own part
        save_rng_state(self, output_dir)

    transformers.trainer.Trainer._save_rng_state = slow_save_rng_state
"""


@LAUNCHES_PROCESSES
def test_two_process_checkpoints_hold_every_ranks_rng_state(sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_RANK)  # imported by every process at start-up
    path = os.pathsep.join([str(hooks), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**ENV, "LLMKIT_TEST_SLOW_RANK": "1", "PYTHONPATH": path}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "llmkit", "finetune", "--num-processes", "2", "model=tiny-bert",
         f"data.train={train}", f"data.validation={validation}", f"output_dir={out}", "training.max_steps=2",
         "training.per_device_train_batch_size=4", "training.save_strategy=steps", "training.save_steps=1",
         "training.eval_strategy=no"],
        env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for checkpoint in ("checkpoint-1", "checkpoint-2"):
        assert {p.name for p in (out / checkpoint).glob("rng_state_*.pth")} == {
            "rng_state_0.pth",
            "rng_state_1.pth",
        }, checkpoint
    assert not (out / ".saving").exists()
