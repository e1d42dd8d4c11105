"""The spine: recipe -> data -> model -> ``Trainer`` -> saved model + metrics.

Every task runs through :func:`run`; a task only supplies the hooks of ``llmkit.tasks.base.Task``.
All user input is validated before anything is written, so a bad recipe never clobbers a folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.config import Recipe, dump_recipe, load_recipe
from llmkit.data import load_splits
from llmkit.errors import LlmkitError
from llmkit.models import resolve_model
from llmkit.tasks import Task, get_task_class

METRICS_FILE = "metrics.json"
RECIPE_FILE = "recipe.yaml"


@dataclass
class FinetuneResult:
    """What a run produced: its metrics (flat, Trainer-style keys) and the saved model folder."""

    metrics: dict[str, float]
    output_dir: Path

    def quality_metrics(self) -> dict[str, float]:
        """Eval/test scores without the timing entries, e.g. {'eval_accuracy': 0.87, ...}."""
        return {
            key: value
            for key, value in self.metrics.items()
            if key.startswith(("eval_", "test_")) and not key.endswith(("_runtime", "_per_second"))
        }


def log(message: str) -> None:
    """Progress for people, on stderr so stdout stays clean for results."""
    print(f"llmkit: {message}", file=sys.stderr, flush=True)


def finetune(
    recipe: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    overwrite: bool | None = None,
) -> FinetuneResult:
    """Fine-tune from a recipe (file path, bundled name, dict, or None for the default) and save the model.

    ``overrides`` are dotted ``key=value`` strings, as on the command line. Returns the metrics and
    the output folder; raises :class:`llmkit.LlmkitError` for anything the user can fix.
    """
    resolved = load_recipe(recipe, overrides)
    if overwrite is not None:
        resolved.overwrite = overwrite
    return run(resolved)


def check_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise LlmkitError(f"output_dir {path} is a file; choose a folder, e.g. output_dir=runs/my-run")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LlmkitError(
            f"output_dir {path} is not empty; pass --overwrite (overwrite=true) to replace it "
            f"or choose another output_dir=..."
        )


def run(recipe: Recipe) -> FinetuneResult:
    """Run a validated recipe end to end."""
    from transformers import set_seed

    task: Task = get_task_class(recipe.task)(recipe.data)
    output_dir = Path(recipe.output_dir)
    check_output_dir(output_dir, recipe.overwrite)

    splits = load_splits(recipe.data, seed=recipe.training["seed"])
    task.check_data(splits)
    model_path = resolve_model(recipe.model)
    task.check_model(model_path)
    tokenizer = load_tokenizer(model_path)
    sizes = ", ".join(f"{role} {len(split.dataset)}" for role, split in splits.items())
    log(f"task {recipe.task}, model {recipe.model} ({model_path}), rows: {sizes}")

    with quiet_library_progress():
        encoded = {role: task.encode(split.dataset, tokenizer) for role, split in splits.items()}
        set_seed(recipe.training["seed"])
        model = load_model(task, model_path)
    args = training_arguments(recipe, output_dir, has_eval="validation" in encoded)

    trainer = task.trainer_class()(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded.get("validation"),
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
    )
    if recipe.overwrite and output_dir.exists():
        shutil.rmtree(output_dir)
    train_output = trainer.train()
    metrics: dict[str, float] = dict(train_output.metrics)
    if args.eval_on_start:
        metrics.update(metrics_before_training(trainer.state.log_history))
    if "validation" in encoded:
        metrics.update(trainer.evaluate())
    if "test" in encoded and "labels" in encoded["test"].column_names:
        metrics.update(trainer.evaluate(encoded["test"], metric_key_prefix="test"))

    with quiet_library_progress():
        trainer.save_model(str(output_dir))
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    dump_recipe(recipe, output_dir / RECIPE_FILE)
    if "test" in encoded and "labels" not in encoded["test"].column_names:
        write_jsonl(
            output_dir / "test_predictions.jsonl",
            task.predict(model, tokenizer, splits["test"].dataset.to_list()),
        )
    result = FinetuneResult(metrics=metrics, output_dir=output_dir)
    log(f"saved to {output_dir}")
    return result


def metrics_before_training(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The untrained model's scores from ``training.eval_on_start``, as ``eval_before_<metric>``."""
    first = next((entry for entry in log_history if "eval_loss" in entry), {})
    return {
        "eval_before_" + key.removeprefix("eval_"): value
        for key, value in first.items()
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
    }


@contextmanager
def quiet_library_progress() -> Iterator[None]:
    """Hide the per-step bars of datasets.map and weight loading/saving (short, and noisy in logs)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_were_on = datasets.is_progress_bar_enabled()
    transformers_were_on = hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_were_on:
            datasets.enable_progress_bars()
        if transformers_were_on:
            hf_logging.enable_progress_bar()


def load_tokenizer(model_path: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmkitError(
            f"model folder {model_path}: cannot load its tokenizer ({first_line}); "
            f"save one there with tokenizer.save_pretrained"
        ) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only models ship without a pad token
    return tokenizer


def load_model(task: Task, model_path: Path):
    """Load through the task's Auto class; new heads are announced once instead of a wall of warnings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = task.load_model(model_path)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(
            f"model folder {model_path}: cannot load it for {task.name} ({first_line}); check the folder"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def training_arguments(recipe: Recipe, output_dir: Path, has_eval: bool):
    """TrainingArguments from the recipe's merged training section; its own ValueErrors become one line."""
    from transformers import TrainingArguments

    values = dict(recipe.training)
    if "dataloader_pin_memory" not in recipe.user_training:
        import torch

        values["dataloader_pin_memory"] = torch.cuda.is_available()  # pinning without a GPU only warns
    if not has_eval:
        values["eval_strategy"] = "no"
        values["eval_on_start"] = False  # nothing to evaluate (the Trainer would raise mid-run)
    try:
        return TrainingArguments(output_dir=str(output_dir), **values)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise LlmkitError(f"recipe {recipe.source}: invalid training settings: {first_line}") from None


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
