"""The run folder: --overwrite leaves exactly what the new run wrote (and the user's files), whatever
command wrote the old one; the demos default to the newest run of their task under ./runs, nowhere else."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import llmkit
from llmkit.models.adaptation import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MERGED_DIR, MODEL_CONFIG_FILE
from llmkit.runs.entries import is_run_entry
from llmkit.tasks import get_task_class, task_names
from tests.conftest import write_csv
from tests.test_structure import task_recipe

LORA = ["peft.method=lora", "peft.r=4", "peft.alpha=8"]
ADAPTER_ENTRIES = {ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MODEL_CONFIG_FILE, MERGED_DIR}
TEXTS = ["What a wonderful day", "Awful, boring and too long", "the food was cold"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` -> (inode, mtime): a file that keeps both was not written again."""
    return {
        str(path.relative_to(folder)): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


def untouched(before: dict[str, tuple[int, int]], folder: Path) -> set[str]:
    """The files of ``before`` still in ``folder`` as they were."""
    after = snapshot(folder)
    return {path for path, state in before.items() if after.get(path) == state}


# -- every entry any command writes is a run entry; --overwrite leaves none of an older run ------------
@pytest.mark.parametrize("task", task_names())
def test_lora_merge_report_then_a_full_run_leave_only_run_entries_and_the_new_runs_files(
    task: str, tmp_path: Path, run_cli
) -> None:
    """A LoRA run (merged, checkpointed, reported), then a full run with --overwrite into the same folder:
    every entry either wrote is one --overwrite knows, and after it nothing of the LoRA run is left. A task
    that refuses LoRA (``Task.peft_refusal``: embedding) starts from a full run (checkpointed, reported)."""
    out = tmp_path / "out"
    recipe = task_recipe(task, tmp_path)
    recipe["training"].update(save_strategy="steps", save_steps=1)
    adapts = get_task_class(task).peft_refusal is None
    lora = {"peft": {"method": "lora", "r": 4, "merge": True}} if adapts else {}
    llmkit.finetune({**recipe, **lora, "output_dir": str(out)})
    report = run_cli("report", out)
    assert report.exit_code == 0, report.stderr
    names = {path.name for path in out.iterdir()}
    assert {"checkpoint-1", "README.md", *([ADAPTER_CONFIG_FILE, MERGED_DIR] if adapts else [])} <= names
    assert [name for name in sorted(names) if not is_run_entry(name)] == []

    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    llmkit.finetune({**recipe, "output_dir": str(out), "overwrite": True})
    names = {path.name for path in out.iterdir()}
    assert "model.safetensors" in names and not names & ADAPTER_ENTRIES, names
    assert [name for name in sorted(names) if not is_run_entry(name)] == ["notes.txt"]
    assert untouched(before, out) == {"notes.txt"}  # the rest is the new run's


# -- every loader serves the run that wrote the folder last ---------------------------------------------
class Scores(list):
    """(label, score) per text; equal when the labels are and the scores agree within 1e-4: a batch of
    padded rows (predict) and one row at a time (a pipeline) differ in the last float bits."""

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, list)
            and len(self) == len(other)
            and all(a[0] == b[0] and abs(a[1] - b[1]) < 1e-4 for a, b in zip(self, other, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]


def scores(classify, texts: list[str]) -> Scores:
    return Scores((answer["label"], answer["score"]) for answer in (classify(t)[0] for t in texts))


def predicted(run_cli, model: Path, rows: Path) -> Scores:
    result = run_cli("predict", "--model", model, "--input", rows)
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return Scores((row["predicted_label"], row["predicted_score"]) for row in lines)


def test_overwrite_between_lora_and_full_runs_serves_the_new_model_everywhere(
    run_cli, sentiment_files, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    train, validation = sentiment_files
    out = tmp_path / "out"
    rows = write_csv(tmp_path / "rows.csv", ["text"], [[text] for text in TEXTS])
    args = ["finetune", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}",
            f"output_dir={out}"]  # fmt: skip
    lora = run_cli(*args, "training.max_steps=5", "training.learning_rate=0.05", *LORA, "peft.merge=true")
    assert lora.exit_code == 0, lora.stderr[-2000:]
    lora_scores = scores(pipeline("text-classification", model=str(out / MERGED_DIR)), TEXTS)
    (out / "notes.txt").write_text("mine")

    # LoRA -> full: the new weights, as a folder holding nothing but them gives them
    full = run_cli(*args, "training.max_steps=2", "training.learning_rate=1e-3", "--overwrite")
    assert full.exit_code == 0, full.stderr[-2000:]
    assert not {path.name for path in out.iterdir()} & ADAPTER_ENTRIES
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(out / name, weights_only / name)
    tokenizer = AutoTokenizer.from_pretrained(weights_only)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = AutoModelForSequenceClassification.from_pretrained(weights_only).eval()(**batch).logits
        loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()(**batch).logits
    assert torch.allclose(loaded, expected, atol=1e-5)
    new_scores = scores(pipeline("text-classification", model=str(weights_only)), TEXTS)
    assert scores(pipeline("text-classification", model=str(out)), TEXTS) == new_scores
    assert predicted(run_cli, out, rows) == new_scores != lora_scores

    # full -> LoRA: the adapter on its base, and `llmkit merge` writes RUN/merged again
    again = run_cli(*args, "training.max_steps=5", "training.learning_rate=0.05", *LORA, "--overwrite")
    assert again.exit_code == 0, again.stderr[-2000:]
    names = {path.name for path in out.iterdir()}
    assert not names & {"config.json", "model.safetensors", MERGED_DIR}, names
    merged = run_cli("merge", out)
    assert merged.exit_code == 0, merged.stderr
    merged_scores = scores(pipeline("text-classification", model=str(out / MERGED_DIR)), TEXTS)
    assert predicted(run_cli, out, rows) == merged_scores
    labels = {"id2label": {0: "negative", 1: "positive"}}  # an adapter folder: the labels from the card
    adapter_pipeline = pipeline("text-classification", model=str(out), model_kwargs=labels)
    assert scores(adapter_pipeline, TEXTS) == merged_scores
    assert (out / "notes.txt").read_text() == "mine"


# -- the demos' default: the newest run of the task under ./runs ----------------------------------------
@pytest.fixture
def fill_mask_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny fill-mask run trained in another project folder (its own ./runs)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = elsewhere / "text.txt"
    text.write_text("\n".join(f"the {w} sat on the mat ." for w in ("cat", "dog", "bird") * 8) + "\n")
    recipe = {
        "task": "fill-mask",
        "model": "tiny-bert",
        "data": {"train": str(text), "validation_split": 0.25, "max_length": 32},
        "training": {"max_steps": 1, "per_device_train_batch_size": 8},
    }
    return elsewhere / llmkit.finetune(recipe).output_dir  # output_dir's default: runs/fill-mask


def test_fill_mask_ignores_a_run_of_another_folder_and_names_the_default(
    fill_mask_run: Path, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmkit.inference.fill_mask

    assert fill_mask_run == tmp_path / "elsewhere" / "runs" / "fill-mask"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    monkeypatch.setattr(llmkit.inference.fill_mask, "DEFAULT_CAUSAL_MODEL", "tiny-gpt2")  # for smollm2-135m
    result = run_cli("fill-mask", "a [MASK] film", "-k", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(
        "llmkit: tiny-gpt2 answers (the default: no fill-mask run under ./runs): a causal LM"
    )


def test_fill_mask_takes_the_newest_fill_mask_run_under_runs(
    fill_mask_run: Path, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    for name in ("older", "nested/newer"):
        shutil.copytree(fill_mask_run, project / "runs" / name)
    classifier = project / "runs" / "classifier"
    shutil.copytree(fill_mask_run, classifier)
    recipe = classifier / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("task: fill-mask", "task: classification"))
    stamps = {"older": 1_000_000, "nested/newer": 2_000_000, "classifier": 3_000_000}  # newest: not fill-mask
    for name, stamp in stamps.items():
        os.utime(project / "runs" / name / "metrics.json", (stamp, stamp))
    monkeypatch.chdir(project)

    result = run_cli("fill-mask", "a [MASK] film", "-k", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(
        "llmkit: runs/nested/newer answers (the newest fill-mask run under ./runs): a masked LM"
    )
    os.utime(project / "runs" / "older" / "metrics.json", (4_000_000, 4_000_000))
    assert "llmkit: runs/older answers" in run_cli("fill-mask", "a [MASK] film").stderr


def test_summarize_defaults_to_a_run_under_runs_only(tmp_path: Path, run_cli, monkeypatch) -> None:
    elsewhere, fresh = tmp_path / "elsewhere", tmp_path / "fresh"
    elsewhere.mkdir()
    fresh.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = task_recipe("summarization", tmp_path)
    trained = elsewhere / llmkit.finetune(recipe).output_dir  # runs/summarization
    monkeypatch.chdir(fresh)
    missing = run_cli("summarize", "#Person1#: Lunch at noon?", "--max-new-tokens", "3")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: no summarization run under ./runs: make one with `llmkit ")

    shutil.copytree(trained, fresh / "runs" / "dialogues")
    found = run_cli("summarize", "#Person1#: Lunch at noon?", "--max-new-tokens", "3")
    assert found.exit_code == 0, found.stderr
    assert "llmkit: runs/dialogues answers (the newest summarization run under ./runs)" in found.stderr
