"""A step means the same on any batch split: gradient accumulation x batch = one batch of the same rows.

For every task, one optimizer step over the same 16 rows, taken as 4 micro-batches of 4
(``gradient_accumulation_steps=4``) and as one batch of 16, logs the same training loss and the same
gradient norm (the norm is measured before clipping and before the update, so the learning rate plays no
part). Dropout is off and the rows are collated once, so both splits see the same masks and padding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LAUNCHES_PROCESSES, NEGATIVE, POSITIVE, write_csv

ROWS = 16
TEXTS = POSITIVE + NEGATIVE


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def classification(folder: Path) -> dict[str, Any]:
    rows = [[text, "positive" if text in POSITIVE else "negative"] for text in TEXTS]
    return {
        "task": "classification",
        "data": {"train": str(write_csv(folder / "t.csv", ["text", "label"], rows))},
    }


def multi_label(folder: Path) -> dict[str, Any]:
    emotions = ["joy", "anger", "surprise"]
    rows = [
        {"text": t, "labels": [emotions[i % 3]] + [emotions[(i + 1) % 3]] * (i % 4 == 0)}
        for i, t in enumerate(TEXTS)
    ]
    return {
        "task": "classification",
        "data": {"train": str(write_jsonl(folder / "t.jsonl", rows)), "label": "labels"},
    }


def regression(folder: Path) -> dict[str, Any]:
    rows = [[t, round((i * 0.37) % 5, 2)] for i, t in enumerate(TEXTS)]
    train = write_csv(folder / "t.csv", ["text", "label"], rows)
    return {"task": "classification", "data": {"train": str(train), "problem": "regression"}}


def ner(folder: Path) -> dict[str, Any]:
    people, places = ["Anna Schmidt", "John Smith", "Maria", "Peter Jones"], ["Berlin", "Paris", "New York"]
    rows = []
    for i in range(20):
        person, place = people[i % 4].split(), places[i % 3].split()
        filler = ["really"] * (i % 5)  # rows of different lengths: micro-batches hold different token counts
        tokens = [*person, "works", *filler, "in", *place, "."]
        tags = ["B-PER"] + ["I-PER"] * (len(person) - 1) + ["O"] * (2 + len(filler))
        rows.append({"tokens": tokens, "ner_tags": [*tags, "B-LOC"] + ["I-LOC"] * (len(place) - 1) + ["O"]})
    return {"task": "ner", "data": {"train": str(write_jsonl(folder / "t.jsonl", rows))}}


def question_answering(folder: Path) -> dict[str, Any]:
    rows = []
    for i, text in enumerate(TEXTS):
        context = f"{text} said reviewer {i}."
        answer = f"reviewer {i}"
        rows.append(
            {
                "id": str(i),
                "question": "Who said it?",
                "context": context,
                "answers": {"text": [answer], "answer_start": [context.index(answer)]},
            }
        )
    return {"task": "question-answering", "data": {"train": str(write_jsonl(folder / "t.jsonl", rows))}}


def fill_mask(folder: Path) -> dict[str, Any]:
    (folder / "t.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return {"task": "fill-mask", "data": {"train": str(folder / "t.txt"), "mlm_probability": 0.3}}


def next_sentence(folder: Path) -> dict[str, Any]:
    documents = ["\n".join(TEXTS[i : i + 4]) for i in range(0, 20, 4)] * 2
    (folder / "t.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    data = {
        "train": str(folder / "t.txt"),
        "next_sentence": True,
        "txt_unit": "paragraph",
        "mlm_probability": 0.3,
    }
    return {"task": "fill-mask", "data": data}


def generation(folder: Path) -> dict[str, Any]:
    rows = [{"instruction": f"Repeat: {t}", "input": "", "output": t} for t in TEXTS]
    train = write_jsonl(folder / "t.jsonl", rows)
    return {
        "task": "generation",
        "model": "tiny-gpt2",
        "data": {"train": str(train), "use_chat_template": False},
    }


def summarization(model: str):
    def recipe(folder: Path) -> dict[str, Any]:
        rows = [{"document": f"{t}. {TEXTS[-1 - i]}. {t}.", "summary": t} for i, t in enumerate(TEXTS)]
        train = write_jsonl(folder / "t.jsonl", rows)
        data = {"train": str(train), "use_chat_template": False, "max_length": 128, "max_target_length": 32}
        return {"task": "summarization", "model": model, "data": data}

    return recipe


def preference(method: str):
    def recipe(folder: Path) -> dict[str, Any]:
        colours = ["red", "blue", "green", "yellow"]
        rows = [
            {"prompt": f"Name the colour {c}.", "chosen": c, "rejected": f"{o} {o} {'x ' * (i % 3)}"}
            for i in range(20)
            for c, o in [(colours[i % 4], colours[(i + 1) % 4])]
        ]
        data = {
            "train": str(write_jsonl(folder / "t.jsonl", rows)),
            "use_chat_template": False,
            "max_length": 128,
            "max_prompt_length": 64,
        }
        return {"task": "preference", "model": "tiny-gpt2", "data": data, "preference": {"method": method}}

    return recipe


CASES = {
    "classification": classification,
    "multi-label": multi_label,
    "regression": regression,
    "ner": ner,
    "question-answering": question_answering,
    "fill-mask": fill_mask,
    "next-sentence": next_sentence,
    "generation": generation,
    "summarization-t5": summarization("tiny-t5"),
    "summarization-bart": summarization("tiny-bart"),
    "summarization-decoder-only": summarization("tiny-gpt2"),
    "dpo": preference("dpo"),
    "simpo": preference("simpo"),
}


def first_step(
    recipe: dict[str, Any], folder: Path, accumulation: int, batch_size: int | None = None
) -> dict[str, float]:
    """The logged loss and gradient norm of one optimizer step over the first 16 training rows (on every
    process together)."""
    import torch
    from datasets import Dataset

    from llmkit.recipe.loader import load_recipe
    from llmkit.training.spine import build_trainer, prepare

    training = {
        "max_steps": 1,
        "logging_steps": 1,
        "per_device_train_batch_size": batch_size or ROWS // accumulation,
        "gradient_accumulation_steps": accumulation,
        "learning_rate": 1e-8,
        "precision": "fp32",
        "save_strategy": "no",
        "report_to": "none",
    }
    recipe = {
        "model": "tiny-bert",
        **recipe,
        "data": {**recipe["data"], "validation_split": 0},
        "training": training,
        "output_dir": str(folder / f"out-{accumulation}-{batch_size}"),
    }
    run = prepare(load_recipe(recipe))
    switch_off_dropout(run.model)
    rows = run.encoded["train"]
    assert len(rows) >= ROWS, f"{len(rows)} encoded training rows"
    rows = rows.select(range(ROWS))
    frozen = run.task.name != "preference"  # TRL's CPO trainer pads its own columns
    if frozen:  # one collation for both splits: the same masks (fill-mask draws them) and padding
        batch = run.task.collator(run.tokenizer)([rows[i] for i in range(ROWS)])
        rows = Dataset.from_dict({key: value.tolist() for key, value in batch.items()})
    run.encoded["train"] = rows
    trainer = build_trainer(run)
    if frozen:
        trainer.data_collator = lambda features: {
            key: torch.tensor([feature[key] for feature in features]) for key in features[0]
        }
    trainer.train()
    logged = trainer.state.log_history[0]
    return {"loss": logged["loss"], "grad_norm": logged["grad_norm"]}


def switch_off_dropout(model: Any) -> None:
    """Dropout layers and the dropout rates attention and BART/T5 blocks read from their attributes."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)


@pytest.mark.parametrize("case", list(CASES))
def test_accumulated_micro_batches_equal_one_batch(case: str, tmp_path: Path) -> None:
    recipe = CASES[case](tmp_path)
    one_batch = first_step(recipe, tmp_path, accumulation=1)
    accumulated = first_step(recipe, tmp_path, accumulation=4)
    print(case, one_batch, accumulated)
    assert accumulated["loss"] == pytest.approx(one_batch["loss"], rel=1e-4)
    assert accumulated["grad_norm"] == pytest.approx(one_batch["grad_norm"], rel=1e-3)


def test_a_micro_batch_without_labelled_tokens_adds_nothing_to_the_step(tmp_path: Path) -> None:
    """A model's own mean over no labelled tokens is 0/0 (NaN): the step leaves that micro-batch out."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForMaskedLM, Trainer, TrainingArguments

    from llmkit.models.resolve import resolve_model
    from llmkit.training.loss_scaling import step_weighted_trainer

    model = AutoModelForMaskedLM.from_pretrained(resolve_model("tiny-bert"))
    switch_off_dropout(model)
    ids = torch.arange(5, 37).view(4, 8)
    labels = torch.full_like(ids, -100)
    labels[2:, 1:4] = ids[2:, 1:4]  # the first micro-batch (rows 0-1) has no labelled token
    rows = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    settings = {"max_steps": 1, "logging_steps": 1, "per_device_train_batch_size": 2, "report_to": "none"}
    settings["logging_nan_inf_filter"] = False  # the Trainer would log a guess in place of a NaN
    args = TrainingArguments(str(tmp_path), gradient_accumulation_steps=2, learning_rate=0.0, **settings)
    trainer = step_weighted_trainer(Trainer, ("labels",))(model=model, args=args, train_dataset=rows)
    trainer.train()
    with torch.no_grad():
        expected = model(input_ids=ids[2:], labels=labels[2:]).loss.item()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-5)


@LAUNCHES_PROCESSES
@pytest.mark.parametrize("case", ["ner", "next-sentence"])
def test_two_processes_accumulating_equal_one_batch(case: str, tmp_path: Path) -> None:
    """2 CPU processes (DDP over gloo) x 2 accumulated micro-batches x 4 rows = one batch of 16 rows."""
    import os
    import subprocess

    from llmkit.core.devices import launch_command, probe_machine

    recipe = CASES[case](tmp_path)
    one_batch = first_step(recipe, tmp_path, accumulation=1)  # also builds the tiny model both processes load
    (tmp_path / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
    command, env = launch_command([], 2, probe_machine())
    command = [*command[:-2], "-m", "tests.test_batch_split", str(tmp_path)]  # this module's worker below
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    two_processes = json.loads((tmp_path / "two-processes.json").read_text())
    print(case, one_batch, two_processes)
    assert two_processes["loss"] == pytest.approx(one_batch["loss"], rel=1e-4)
    assert two_processes["grad_norm"] == pytest.approx(one_batch["grad_norm"], rel=1e-3)


if __name__ == "__main__":  # one process of test_two_processes_accumulating_equal_one_batch
    from llmkit.core.devices import is_main_process

    folder = Path(sys.argv[1])
    steps = first_step(json.loads((folder / "recipe.json").read_text()), folder, accumulation=2, batch_size=4)
    if is_main_process():
        (folder / "two-processes.json").write_text(json.dumps(steps), encoding="utf-8")
