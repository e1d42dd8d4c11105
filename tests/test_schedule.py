"""No silent no-ops: a schedule setting in a recipe either takes effect or is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.core.errors import LlmkitError
from llmkit.recipe.loader import load_recipe

BASE = {"task": "classification", "model": "tiny-bert", "data": {"train": "train.csv"}}
NO_VALIDATION = {**BASE, "data": {"train": "train.csv", "validation_split": 0}}


@pytest.mark.parametrize(
    ("steps_key", "strategy_key"),
    [("save_steps", "save_strategy"), ("eval_steps", "eval_strategy"), ("logging_steps", "logging_strategy")],
)
def test_steps_alone_switch_their_strategy_to_steps(steps_key: str, strategy_key: str) -> None:
    recipe = load_recipe(BASE, [f"training.{steps_key}=10"])
    assert recipe.training[strategy_key] == "steps" and recipe.training[steps_key] == 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["training.save_steps=10", "training.save_strategy=epoch"],
            "save_steps has no effect with save_strategy",
        ),
        (
            ["training.eval_steps=5", "training.eval_strategy=epoch"],
            "eval_steps has no effect with eval_strategy",
        ),
        (["training.logging_steps=5", "training.logging_strategy=epoch"], "logging_steps has no effect"),
        (["training.save_total_limit=2"], "save_total_limit has no effect without checkpoints"),
        (
            ["training.load_best_model_at_end=true", "training.save_strategy=no"],
            "load_best_model_at_end needs checkpoints",
        ),
    ],
)
def test_contradictions_are_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(LlmkitError, match=message):
        load_recipe(BASE, overrides)


@pytest.mark.parametrize(
    "setting",
    [
        "training.eval_steps=5",
        "training.eval_strategy=steps",
        "training.eval_on_start=true",
        "training.load_best_model_at_end=true",
        "training.early_stopping_patience=2",
    ],
)
def test_evaluation_settings_without_validation_data_are_errors(setting: str) -> None:
    with pytest.raises(LlmkitError, match="needs validation data, and there is none"):
        load_recipe(NO_VALIDATION, [setting])


def test_best_model_and_early_stopping_save_at_each_evaluation() -> None:
    best = load_recipe(BASE, ["training.load_best_model_at_end=true"])
    assert best.training["save_strategy"] == best.training["eval_strategy"] == "epoch"
    stepwise = load_recipe(BASE, ["training.early_stopping_patience=2", "training.eval_steps=4"])
    assert stepwise.training["load_best_model_at_end"] is True
    assert stepwise.training["save_strategy"] == "steps" and stepwise.training["save_steps"] == 4
    with pytest.raises(LlmkitError, match="early_stopping_patience must be a positive integer"):
        load_recipe(BASE, ["training.early_stopping_patience=0"])


def test_an_explicit_no_switches_evaluation_off_knowingly() -> None:
    """A recipe's eval_steps stay inert once the user says eval_strategy=no (e.g. with validation_split=0)."""
    recipe = load_recipe(NO_VALIDATION, ["training.eval_steps=100", "training.eval_strategy=no"])
    assert recipe.training["eval_strategy"] == "no"


def test_save_total_limit_with_checkpoints_is_fine() -> None:
    recipe = load_recipe(BASE, ["training.save_steps=5", "training.save_total_limit=1"])
    assert recipe.training["save_strategy"] == "steps"


def test_save_steps_alone_writes_checkpoints(finetune_tiny, tmp_path: Path) -> None:
    """The repro: save_steps under llmkit's default save_strategy "no" used to write nothing."""
    finetune_tiny("training.max_steps=4", "training.save_steps=2", "training.precision=fp32")
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_early_stopping_stops_and_keeps_the_best(finetune_tiny) -> None:
    import json

    result = finetune_tiny(
        "training.max_steps=40",
        "training.eval_steps=1",
        "training.learning_rate=0.5",  # diverges at once: eval loss stops improving
        "training.early_stopping_patience=2",
        "training.precision=fp32",
    )
    history = json.loads((result.output_dir / "log_history.json").read_text())
    evals = [entry for entry in history if "eval_loss" in entry and "train_runtime" not in entry]
    assert evals[-1]["step"] < 40  # stopped early
    best = min(entry["eval_loss"] for entry in evals)
    assert result.metrics["eval_loss"] == pytest.approx(best, rel=1e-4)  # the best model was kept
