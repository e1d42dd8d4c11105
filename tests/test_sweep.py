"""`llmkit sweep`: trials as runs, the study resumed, the best recipe runnable, bad input in one line."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.recipe.loader import load_recipe
from llmkit.tasks import get_task_class
from llmkit.training.sweep import default_space, optuna_reporter, sweep
from tests.test_classification import recipe_for


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def read_trials(folder: Path) -> dict:
    return json.loads((folder / "trials.json").read_text(encoding="utf-8"))


def test_sweep_scores_trials_keeps_the_best_and_resumes(sentiment_files, tmp_path: Path, run_cli) -> None:
    train, validation = sentiment_files
    recipe = write_recipe(tmp_path / "tiny.yaml", recipe_for(train, validation, tmp_path / "unused"))
    out = tmp_path / "sweep"

    result = sweep(recipe, trials=3, output=out)

    summary = read_trials(out)
    assert summary["metric"] == "eval_accuracy" and summary["direction"] == "maximize"
    rows = summary["trials"]
    assert [row["state"] for row in rows] == ["complete"] * 3
    searched = {"training.learning_rate", "training.warmup_steps", "training.weight_decay"}
    searched |= {"training.per_device_train_batch_size"}
    assert all(set(row["params"]) == searched for row in rows)
    assert all(1e-4 <= row["params"]["training.learning_rate"] <= 1e-2 for row in rows)  # x0.1..x10 of 1e-3
    assert len({row["params"]["training.learning_rate"] for row in rows}) == 3
    for row in rows:  # each trial is an ordinary run with its params in its recipe
        run_recipe = load_recipe(Path(row["output_dir"]) / "recipe.yaml")
        assert run_recipe.training["learning_rate"] == row["params"]["training.learning_rate"]
        assert run_recipe.training["seed"] == 42
        metrics = json.loads((Path(row["output_dir"]) / "metrics.json").read_text())
        assert metrics["eval_accuracy"] == row["metric"]
    best = max(rows, key=lambda row: row["metric"])  # optuna's best: the first of equal scores
    assert summary["best_trial"] == best["number"] == result.best["number"]
    kept = [row["number"] for row in rows if (Path(row["output_dir"]) / "model.safetensors").exists()]
    assert kept == [best["number"]]  # the others' weights are gone, their metrics and reports stay
    assert all((Path(row["output_dir"]) / "report.md").exists() for row in rows)
    assert "| trial | state | eval_accuracy |" in (out / "trials.md").read_text()
    assert (out / "trials.png").stat().st_size > 0

    best_recipe = load_recipe(out / "best_recipe.yaml")
    for key, value in best["params"].items():
        section, name = key.split(".")
        assert getattr(best_recipe, section)[name] == value
    assert Path(best_recipe.output_dir) == out / "best" and not best_recipe.overwrite
    again = llmkit.finetune(out / "best_recipe.yaml")
    assert again.metrics["eval_accuracy"] == best["metric"]  # same params and seed: the best trial again

    resumed = run_cli("sweep", recipe, "--trials", "4", "--output", out)
    assert resumed.exit_code == 0, resumed.stderr
    rows_after = read_trials(out)["trials"]
    assert len(rows_after) == 4 and rows_after[:3] == rows  # one more trial; the first three as they were
    assert rows_after[3]["params"] not in [row["params"] for row in rows]  # new values, not a replay
    started = [
        line for line in resumed.stderr.splitlines() if line.startswith("llmkit: trial ") and "=" in line
    ]
    assert (
        "resuming the sweep" in resumed.stderr
        and len(started) == 1
        and started[0].startswith("llmkit: trial 3:")
    )
    assert "| 3 | complete |" in resumed.stdout and "best: trial " in resumed.stdout

    other = run_cli("sweep", recipe, "--trials", "4", "--output", out, "--metric", "eval_f1")
    assert other.exit_code == 2
    assert (
        other.stderr == f"error: {out} holds a sweep with other settings (metric); give another --output, "
        f"or delete {out / 'study.db'} to start over\n"
    )


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            "training.learning_rat: {low: 1.0e-5, high: 1.0e-3}\n",
            "training.learning_rat=1e-05: unknown key 'training.learning_rat' "
            "(did you mean 'learning_rate'?)",
        ),
        ("peft.r: {choices: [8, 16]}\n", "peft.r: the recipe has no peft section"),
        (
            "training.weight_decay: {low: 0.0, hi: 0.1}\n",
            "training.weight_decay: unknown distribution key 'hi'",
        ),
        ("training.learning_rate: {low: 0, high: 1.0e-3, log: true}\n", "a log scale needs low > 0"),
        (
            "data.threshold: {low: 0.1, high: 1.5}\n",
            "data.threshold=1.5: data.threshold must be a probability",
        ),
    ],
)
def test_bad_space_file_is_one_line(
    sentiment_files, tmp_path: Path, run_cli, space: str, expected: str
) -> None:
    train, validation = sentiment_files
    recipe = write_recipe(tmp_path / "tiny.yaml", recipe_for(train, validation, tmp_path / "out"))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(space, encoding="utf-8")

    result = run_cli("sweep", recipe, "--trials", "2", "--space", space_file, "--output", tmp_path / "sweep")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: space file {space_file}: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr
    assert not (tmp_path / "sweep").exists()  # refused before anything was written


def test_sweep_without_validation_data_is_refused(sentiment_files, tmp_path: Path) -> None:
    train, _ = sentiment_files
    recipe = recipe_for(train, None, tmp_path / "out", validation_split=0)

    with pytest.raises(LlmkitError, match=r"a sweep chooses on validation data \(never on test\)"):
        sweep(recipe, trials=2, output=tmp_path / "sweep")
    with pytest.raises(LlmkitError, match="never on test"):
        sweep(recipe_for(train, train, tmp_path / "out"), trials=2, metric="test_accuracy")


def test_a_spent_budget_starts_no_trial(sentiment_files, tmp_path: Path) -> None:
    train, validation = sentiment_files
    recipe = recipe_for(train, validation, tmp_path / "out")

    result = sweep(recipe, trials=3, budget_minutes=0, output=tmp_path / "sweep")

    assert result.rows == [] and result.best is None and read_trials(tmp_path / "sweep")["trials"] == []
    assert (
        not (tmp_path / "sweep" / "trials").exists()
        and not (tmp_path / "sweep" / "best_recipe.yaml").exists()
    )
    assert result.best_line().startswith("no trial completed yet")


def test_default_space_follows_the_recipe(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"  # load_recipe reads no data: the path need not exist
    single = load_recipe(recipe_for(train, None, tmp_path / "out"))
    multi = load_recipe(recipe_for(train, None, tmp_path / "out", problem="multi_label"))
    lora = load_recipe({**recipe_for(train, None, tmp_path / "out"), "peft": {"r": 8}})

    keys = {param.key: param for param in default_space(multi)}
    assert keys["data.threshold"].low == 0.1 and keys["data.threshold"].high == 0.6
    assert "data.threshold" not in {param.key for param in default_space(single)}
    assert "data.threshold" in {param.key for param in default_space(single, problem="multi_label")}
    on_validation = {"problem": "multi_label", "threshold": "validation"}
    chosen = load_recipe(recipe_for(train, None, tmp_path / "out", **on_validation))
    assert "data.threshold" not in {param.key for param in default_space(chosen)}  # each label's own already
    rate = keys["training.learning_rate"]
    assert (rate.low, rate.high, rate.log) == (1e-4, 1e-2, True)  # the recipe's 1e-3, a decade either way
    assert keys["training.per_device_train_batch_size"].choices == (4, 8, 16)
    assert {"peft.r", "peft.alpha"} <= {param.key for param in default_space(lora)}
    assert not {"peft.r", "peft.alpha"} & set(keys)


class ScriptedTrial:
    """Optuna's trial as the reporter uses it: reported values recorded, pruning decided by the test."""

    def __init__(self, prune_after: int) -> None:
        self.reported: list[tuple[int, float]] = []
        self.prune_after = prune_after

    def report(self, value: float, step: int) -> None:
        self.reported.append((step, value))

    def should_prune(self) -> bool:
        return len(self.reported) >= self.prune_after


def test_reporter_sends_each_evaluation_and_stops_a_pruned_trial() -> None:
    from transformers import TrainerControl, TrainerState

    trial = ScriptedTrial(prune_after=2)
    reporter = optuna_reporter(trial, ("eval_accuracy", "eval_f1_macro"), get_task_class("classification"))
    control, state = TrainerControl(), TrainerState(max_steps=20)
    for step, value in ((5, 0.5), (5, 0.5), (10, 0.6)):  # the final evaluation repeats step 5's: once
        state.global_step = step
        reporter.on_evaluate(None, state, control, metrics={"eval_loss": 1.0, "eval_accuracy": value})
        assert control.should_training_stop == (step == 10)
    assert trial.reported == [(5, 0.5), (10, 0.6)] and reporter.pruned_at == 10

    last = optuna_reporter(ScriptedTrial(prune_after=1), ("eval_accuracy",), get_task_class("classification"))
    control, state.global_step = TrainerControl(), 20  # the evaluation after the last step: nothing to stop
    last.on_evaluate(None, state, control, metrics={"eval_accuracy": 0.4})
    assert last.pruned_at is None and not control.should_training_stop


def test_reporter_scores_perplexity_from_the_loss_as_the_run_does() -> None:
    """Fill-mask's Trainer evaluations hold eval_loss; the run adds eval_perplexity = exp(loss) after them,
    and so does the reporter, so --metric eval_perplexity prunes as it scores."""
    from transformers import TrainerControl, TrainerState

    trial = ScriptedTrial(prune_after=99)
    reporter = optuna_reporter(trial, ("eval_perplexity",), get_task_class("fill-mask"))
    state = TrainerState()
    state.global_step = 3
    reporter.on_evaluate(None, state, TrainerControl(), metrics={"eval_loss": 2.0})
    assert trial.reported == [(3, pytest.approx(math.exp(2.0)))]


def test_sweep_without_optuna_says_how_to_install(tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError

    result = run_cli("sweep", "classification", "--trials", "2", "--output", tmp_path / "sweep")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: llmkit sweep needs the optuna package; install it with `pip install optuna` "
        "(or llmkit's extra: `pip install -e '.[sweep]'`)\n"
    )
