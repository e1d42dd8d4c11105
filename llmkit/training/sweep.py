"""`llmkit sweep`: hyperparameter search with Optuna, each trial an ordinary llmkit run.

A trial is ``llmkit.finetune(recipe, overrides + the trial's params)`` into ``DIR/trials/NNN``, with the
recipe's own seed, so trials differ only in their params and every task (LoRA included) sweeps with no code
of its own. Optuna's TPE sampler, seeded with the recipe's seed, picks the params; a median pruner stops a
trial whose validation scores during training trail the earlier trials' (when the recipe evaluates during
training). The study lives in ``DIR/study.db``: the same command again resumes it. Sweeps choose on
validation data, never on test.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmkit.core.errors import LlmkitError, missing_package
from llmkit.core.markdown import format_value, table
from llmkit.core.progress import format_seconds, log
from llmkit.data.files import load_splits
from llmkit.recipe.loader import (
    RUNS_DIR,
    Recipe,
    apply_overrides,
    load_recipe,
    may_have_validation,
    read_recipe_file,
)
from llmkit.runs.entries import remove_weights
from llmkit.runs.folder import write_json_atomic
from llmkit.runs.plots import Series, build_figure, matplotlib_missing
from llmkit.tasks import Task, build_task, get_task_class

SWEEPS_DIR = f"{RUNS_DIR}/sweeps"
STUDY_FILE = "study.db"
STUDY_NAME = "llmkit-sweep"
TRIALS_DIR = "trials"
TRIALS_JSON = "trials.json"
TRIALS_MD = "trials.md"
PLOT_FILE = "trials.png"
BEST_RECIPE_FILE = "best_recipe.yaml"
BEST_RUN_DIR = "best"  # best_recipe.yaml's output_dir, inside the sweep's folder

#: Metrics where lower is better (by the end of their name); every other metric is maximized.
LOWER_IS_BETTER = ("loss", "perplexity", "mse")
#: Recipe keys a space may not search, and why.
UNSEARCHABLE_KEYS = {
    "task": "a sweep tunes one task; sweep each task on its own",
    "output_dir": "the sweep gives each trial its folder (DIR/trials/NNN); set --output",
    "overwrite": "each trial writes a folder of its own",
    "training.seed": "trials share the recipe's seed so they differ only in their params",
}
RANGE_KEYS = ("low", "high", "log")

#: The search space without --space: (recipe key, when it is searched, distribution). "×k" is k times the
#: recipe's own value: its settings are its author's best guess, so the learning rate spans a decade either
#: way of it and the batch size half to double it, whatever the task (full fine-tuning, LoRA, DPO, from
#: scratch). docs/sweep.md lists this table.
DEFAULT_SPACE: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("training.learning_rate", "always", {"low": "×0.1", "high": "×10", "log": True}),
    ("training.warmup_steps", "always", {"low": 0.0, "high": 0.2}),  # a share of the training steps
    ("training.weight_decay", "always", {"low": 0.0, "high": 0.1}),
    ("training.per_device_train_batch_size", "always", {"choices": ["×0.5", "×1", "×2"]}),
    ("peft.r", "peft", {"choices": [8, 16, 32]}),
    ("peft.alpha", "peft", {"choices": [16, 32, 64]}),
    ("data.threshold", "multi_label", {"low": 0.1, "high": 0.6}),
)


@dataclass(frozen=True)
class Param:
    """One searched recipe key: a numeric range (integers when both ends are) or a list of choices."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """The trial's value for this key, drawn by Optuna's sampler."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)

    def edge_values(self) -> list[Any]:
        """Values the recipe schema must accept: both ends of a range, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, **({"log": True} if self.log else {})}


@dataclass
class SweepResult:
    """What a sweep left: its folder, a row per trial, the best row (None before any trial completed)."""

    output_dir: Path
    metric: str
    direction: str
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: list[Path] = field(default_factory=list)

    def table_lines(self) -> list[str]:
        return trials_table(self.rows, self.metric)

    def best_line(self) -> str:
        if self.best is None:
            return f"no trial completed yet; rerun to go on ({self.output_dir / STUDY_FILE} keeps the study)"
        params = ", ".join(f"{key}={format_value(value)}" for key, value in self.best["params"].items())
        return (
            f"best: trial {self.best['number']}, {self.metric} = {format_value(self.best['metric'])} "
            f"({params}); train it again: llmkit finetune {self.output_dir / BEST_RECIPE_FILE}"
        )


@dataclass
class Plan:
    """A sweep's settings as trials use them."""

    recipe: str | Path | dict[str, Any]
    overrides: list[str]
    params: list[Param]
    metrics: tuple[str, ...]  # the metric, or the task's headline candidates until one trial settles it
    direction: str
    output_dir: Path
    task: str


def sweep(
    recipe: str | Path | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    trials: int,
    space: str | Path | None = None,
    metric: str | None = None,
    direction: str | None = None,
    budget_minutes: float | None = None,
    output: str | Path | None = None,
) -> SweepResult:
    """Search ``space`` (a YAML file; default: :data:`DEFAULT_SPACE`) for the recipe's best validation score.

    ``trials`` is the total wanted: a rerun with the same ``output`` resumes the study and runs only the
    missing trials (failed ones are retried). ``budget_minutes`` stops starting new trials after that long.
    """
    optuna = import_optuna()
    if trials < 1:
        raise LlmkitError(f"--trials must be at least 1, got {trials}")
    overrides = list(overrides)
    resolved = load_recipe(recipe, overrides)
    candidates, direction = choose_metric(resolved, metric, direction)
    params = searched_params(space, recipe, overrides, resolved)
    plan = Plan(
        recipe=recipe,
        overrides=overrides,
        params=params,
        metrics=candidates,
        direction=direction,
        output_dir=Path(output) if output is not None else default_output(recipe),
        task=resolved.task,
    )
    settings = {
        "recipe": str(resolved.source),
        "overrides": overrides,
        "space": {param.key: param.to_dict() for param in params},
        "metric": metric,
        "direction": direction,
    }
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # llmkit says what each trial did
    try:
        study = open_study(optuna, plan, settings, resolved.training["seed"])
        run_trials(optuna, study, plan, trials, budget_minutes)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return write_outputs(optuna, study, plan)


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise missing_package("llmkit sweep", "optuna", "sweep") from None
    return optuna


# -- the recipe and its data --------------------------------------------------------------------------
def no_validation(recipe: Recipe) -> LlmkitError:
    return LlmkitError(
        f"recipe {recipe.source}: a sweep chooses on validation data (never on test), and there is none; "
        f"give data.validation or a data.validation_split"
    )


def checked_problem(recipe: Recipe) -> str | None:
    """Read and check the splits as a trial will, before any trial starts: a missing validation split or a
    bad row is one error, not N failed trials. Returns ``data.problem`` as the data settles it (a
    classification recipe's ``auto``), or None for a task without one."""
    if not may_have_validation(recipe.data):
        raise no_validation(recipe)
    task = build_task(recipe.task, copy.deepcopy(recipe.data), recipe.options)
    splits = load_splits(task.data, seed=recipe.training["seed"])
    if "validation" not in splits:
        raise no_validation(recipe)
    task.check_data(splits)
    return task.data.get("problem")


def searched_params(
    space: str | Path | None, recipe: str | Path | dict[str, Any], overrides: list[str], resolved: Recipe
) -> list[Param]:
    """The space file's params, checked before any data is read; then the data is checked (it must have a
    validation split); without a file, the default space for the recipe and its data, less the keys the
    command line fixes."""
    params = []
    if space is not None:
        params = read_space(Path(space))
        check_space(params, recipe, overrides, resolved, f"space file {space}")
    problem = checked_problem(resolved)
    if space is None:
        fixed = overridden_keys(overrides)
        params = [param for param in default_space(resolved, problem) if param.key not in fixed]
        check_space(params, recipe, overrides, resolved, "default space")
    return params


def default_output(recipe: str | Path | dict[str, Any]) -> Path:
    """runs/sweeps/<recipe name>: a file's stem or a bundled recipe's name (a dict recipe: its task)."""
    if isinstance(recipe, dict):
        return Path(SWEEPS_DIR) / str(recipe.get("task", "classification"))
    return Path(SWEEPS_DIR) / Path(recipe).stem


# -- the search space ---------------------------------------------------------------------------------
def default_space(recipe: Recipe, problem: str | None = None) -> list[Param]:
    """:data:`DEFAULT_SPACE` for this recipe: LoRA's keys when it has a peft section, the threshold for
    multi-label classification (``problem``: the data's, default the recipe's ``data.problem``) unless it
    is chosen on validation, and "×k" values as multiples of the recipe's own."""
    problem = problem or recipe.data.get("problem")
    # thresholds chosen on validation (data.threshold: validation) are each label's best already
    searched_threshold = problem == "multi_label" and recipe.data.get("threshold") != "validation"
    applies = {"always": True, "peft": recipe.peft is not None, "multi_label": searched_threshold}
    settings = recipe.to_dict()
    space = {}
    for key, when, distribution in DEFAULT_SPACE:
        if applies[when]:
            current = dotted_value(settings, key)
            space[key] = {name: scaled(value, current) for name, value in distribution.items()}
    return parse_space(space, "default space")


def dotted_value(settings: dict[str, Any], key: str) -> Any:
    node: Any = settings
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def scaled(value: Any, current: Any) -> Any:
    """ "×k" -> k times ``current`` (an integer stays an integer, at least 1); lists item by item."""
    if isinstance(value, list):
        return list(dict.fromkeys(scaled(item, current) for item in value))
    if not (isinstance(value, str) and value.startswith("×")):
        return value
    product = float(value[1:]) * current
    return max(1, round(product)) if isinstance(current, int) else float(f"{product:.6g}")


def read_space(path: Path) -> list[Param]:
    """The space file: a YAML mapping of recipe keys to distributions."""
    where = f"space file {path}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmkitError(f"{where}: cannot be read ({exc}); give a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LlmkitError(f"{where}{line}: invalid YAML ({problem}); fix the syntax") from None
    if not isinstance(raw, dict) or not raw:
        raise LlmkitError(
            f"{where}: expected a mapping of recipe keys to distributions, e.g. "
            f"training.learning_rate: {{low: 1.0e-5, high: 1.0e-3, log: true}}"
        )
    return parse_space(raw, where)


def parse_space(raw: dict[str, Any], where: str) -> list[Param]:
    return [parse_distribution(str(key), value, where) for key, value in raw.items()]


def parse_distribution(key: str, value: Any, where: str) -> Param:
    """``{low, high[, log]}`` or ``{choices: [...]}``; anything else is a one-line error naming the key."""
    shape = "give {low: A, high: B} (log: true for a log scale) or {choices: [...]}"
    if not isinstance(value, dict) or not value:
        raise LlmkitError(f"{where}: {key}: expected a distribution, got {value!r}; {shape}")
    unknown = [name for name in value if name not in (*RANGE_KEYS, "choices")]
    if unknown:
        raise LlmkitError(f"{where}: {key}: unknown distribution key '{unknown[0]}'; {shape}")
    if "choices" in value:
        return parse_choices(key, value, where, shape)
    low, high, log_scale = value.get("low"), value.get("high"), value.get("log", False)
    if not all(is_number(end) for end in (low, high)):
        raise LlmkitError(f"{where}: {key}: low and high must both be numbers, got {low!r} and {high!r}")
    if not low < high:
        raise LlmkitError(f"{where}: {key}: low must be below high, got {low!r} and {high!r}")
    if not isinstance(log_scale, bool):
        raise LlmkitError(f"{where}: {key}: log must be true or false, got {log_scale!r}")
    if log_scale and low <= 0:
        raise LlmkitError(f"{where}: {key}: a log scale needs low > 0, got {low!r}")
    return Param(key, low=low, high=high, log=log_scale)


def parse_choices(key: str, value: dict[str, Any], where: str, shape: str) -> Param:
    choices = value["choices"]
    if set(value) != {"choices"}:
        raise LlmkitError(f"{where}: {key}: choices cannot be combined with low, high or log; {shape}")
    if not isinstance(choices, list) or not choices:
        raise LlmkitError(f"{where}: {key}: choices must be a non-empty list, got {choices!r}")
    odd = [choice for choice in choices if not isinstance(choice, (str, int, float, bool, type(None)))]
    if odd:
        raise LlmkitError(
            f"{where}: {key}: each choice must be a number, string, true/false or null, got {odd[0]!r}"
        )
    return Param(key, choices=tuple(choices))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_space(
    params: list[Param],
    recipe: str | Path | dict[str, Any],
    overrides: list[str],
    resolved: Recipe,
    where: str,
) -> None:
    """Every key must be a recipe key the schema accepts with every value of its range (as `llmkit
    validate` checks a recipe), in a section the recipe has (a peft key needs a peft section)."""
    sections = resolved.to_dict()
    overridden = overridden_keys(overrides)
    for param in params:
        key = param.key
        if key in UNSEARCHABLE_KEYS:
            raise LlmkitError(f"{where}: {key} cannot be searched: {UNSEARCHABLE_KEYS[key]}")
        if key in overridden:
            raise LlmkitError(f"{where}: {key} is also a KEY=VALUE override; keep one of them")
        if key.split(".")[0] not in sections:
            raise LlmkitError(
                f"{where}: {key}: the recipe has no {key.split('.')[0]} section; add one to the recipe "
                f"(or drop {key} from the space)"
            )
        for value in param.edge_values():
            source = str(resolved.source)
            try:
                checked = load_recipe(recipe, [*overrides, param_override(key, value)])
                build_task(checked.task, dict(checked.data), checked.options)  # the task's own value checks
            except LlmkitError as exc:
                problem = str(exc).removeprefix(f"recipe {source}: ")
                raise LlmkitError(f"{where}: {key}={value!r}: {problem}") from None


def overridden_keys(overrides: list[str]) -> set[str]:
    return {text.partition("=")[0].strip() for text in overrides}


def param_override(key: str, value: Any) -> str:
    """``key=value`` with the value in YAML, so it reads back as the same value (1e-05 as a number)."""
    dumped = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    end_of_document = "...\n"  # how PyYAML ends a lone scalar
    return f"{key}={dumped.removesuffix(end_of_document).strip()}"


# -- the metric -----------------------------------------------------------------------------------------
def choose_metric(recipe: Recipe, metric: str | None, direction: str | None) -> tuple[tuple[str, ...], str]:
    """The validation metric(s) to optimize and the direction: ``--metric`` (``f1`` or ``eval_f1``), else the
    task's headline and its others (the first a trial reports wins: a regression classifier's spearman);
    minimized when loss-like (loss, perplexity, mse), else maximized, unless ``--direction`` says."""
    if direction is not None and direction not in ("maximize", "minimize"):
        raise LlmkitError(f"--direction must be maximize or minimize, got {direction!r}")
    if metric is not None:
        if metric.startswith("test_"):
            raise LlmkitError(
                f"--metric {metric}: a sweep chooses on validation, never on test; give an eval_ metric "
                f"(e.g. eval_{metric.removeprefix('test_')})"
            )
        names = (metric if metric.startswith("eval_") else f"eval_{metric}",)
    else:
        task_cls = get_task_class(recipe.task)
        names = tuple(f"eval_{name}" for name in (task_cls.headline_metric, *task_cls.other_headline_metrics))
    lower = names[0].endswith(LOWER_IS_BETTER)
    return names, direction or ("minimize" if lower else "maximize")


def first_metric(metrics: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if isinstance(metrics.get(name), (int, float))), None)


def optuna_reporter(trial: Any, names: tuple[str, ...], task_cls: type[Task]) -> Any:
    """A TrainerCallback that reports each validation score to Optuna and stops training (cleanly: the run
    still saves and scores what it has) when the pruner says the trial trails the others."""
    from transformers import TrainerCallback

    from llmkit.training.spine import with_perplexity

    class ReportToOptuna(TrainerCallback):
        def __init__(self) -> None:
            self.pruned_at: int | None = None
            self.reported: set[int] = set()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            scores = with_perplexity(
                task_cls, dict(metrics or {}), "eval"
            )  # as the run's metrics.json has them
            name = first_metric(scores, names)
            if name is None or state.global_step in self.reported:  # the final evaluation repeats a step
                return
            value = float(scores[name])
            if not math.isfinite(value):
                return
            self.reported.add(state.global_step)
            trial.report(value, state.global_step)
            finished = state.global_step >= state.max_steps  # nothing left to save: complete, not pruned
            if self.pruned_at is None and not finished and trial.should_prune():
                self.pruned_at = state.global_step
                control.should_training_stop = True

    return ReportToOptuna()


# -- the study ----------------------------------------------------------------------------------------
def open_study(optuna: Any, plan: Plan, settings: dict[str, Any], seed: int) -> Any:
    """DIR/study.db: resumed when it holds finished trials of the same settings, else started afresh."""
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(plan.output_dir / STUDY_FILE).resolve()}"
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner()
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the storage
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        study = None
    if study is not None:
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # a sweep killed mid-trial
        if not finished_trials(optuna, study):
            optuna.delete_study(study_name=STUDY_NAME, storage=storage)  # nothing to keep
            study = None
        elif study.user_attrs.get("settings") != settings:
            stored = study.user_attrs.get("settings") or {}
            changed = [key for key in settings if stored.get(key) != settings[key]]
            raise LlmkitError(
                f"{plan.output_dir} holds a sweep with other settings ({', '.join(changed)}); give another "
                f"--output, or delete {plan.output_dir / STUDY_FILE} to start over"
            )
        else:
            log(f"resuming the sweep in {plan.output_dir}: {len(finished_trials(optuna, study))} trials done")
            # the sampler's random start would replay the first run's draws: seed it past the trials done
            study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
            metric = study.user_attrs.get("metric")
            plan.metrics = (metric,) if metric else plan.metrics
    if study is None:
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner, direction=plan.direction
        )
        study.set_user_attr("settings", settings)
    return study


def finished_trials(optuna: Any, study: Any) -> list[Any]:
    """Completed and pruned trials: those that count toward --trials (failed ones are tried again)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def run_trials(optuna: Any, study: Any, plan: Plan, trials: int, budget_minutes: float | None) -> None:
    """Start trials until ``trials`` have finished (this call starts at most the missing number) or the
    budget is spent."""
    missing = trials - len(finished_trials(optuna, study))
    if missing <= 0:
        log(f"{trials} trials are done already; give a larger --trials to run more")
    started = time.monotonic()
    for _ in range(max(0, missing)):
        if budget_minutes is not None and time.monotonic() - started >= budget_minutes * 60:
            log(f"--budget-minutes {budget_minutes:g} reached; rerun the same command to go on")
            break
        run_trial(optuna, study, plan)


def run_trial(optuna: Any, study: Any, plan: Plan) -> None:
    """One trial: an llmkit run with the sampled params; its score told to Optuna, its weights kept only
    while it is the best."""
    from llmkit.training.spine import finetune

    State = optuna.trial.TrialState
    trial = study.ask()
    params = {param.key: param.suggest(trial) for param in plan.params}
    folder = plan.output_dir / TRIALS_DIR / f"{trial.number:03d}"
    trial.set_user_attr("output_dir", str(folder))
    log(f"trial {trial.number}: {', '.join(f'{key}={format_value(value)}' for key, value in params.items())}")
    reporter = optuna_reporter(trial, plan.metrics, get_task_class(plan.task))
    overrides = [*plan.overrides, *(param_override(k, v) for k, v in params.items()), f"output_dir={folder}"]
    began = time.perf_counter()
    try:
        result = finetune(plan.recipe, overrides, overwrite=True, callbacks=[reporter])
    except LlmkitError as exc:
        failed(study, trial, str(exc), began, State.FAIL)
        remove_weights(folder)
        if not finished_trials(optuna, study):  # the recipe itself fails, not these params
            raise LlmkitError(f"trial {trial.number} failed: {exc}") from None
        log(f"warning: trial {trial.number} failed ({exc}); the sweep goes on")
        return
    except KeyboardInterrupt:
        failed(study, trial, "interrupted", began, State.FAIL)
        raise
    name = first_metric(result.metrics, plan.metrics)
    if name is None:
        failed(study, trial, "no such metric", began, State.FAIL)
        available = ", ".join(key for key in result.metrics if key.startswith("eval_")) or "none"
        raise LlmkitError(
            f"--metric {plan.metrics[0]}: the trials report no such validation metric (they report: "
            f"{available}); pick one with --metric"
        )
    if len(plan.metrics) > 1:
        plan.metrics = (name,)
        study.set_user_attr("metric", name)
    value, seconds = float(result.metrics[name]), time.perf_counter() - began
    trial.set_user_attr("value", value)
    trial.set_user_attr("seconds", round(seconds, 1))
    previous_best = best_trial(optuna, study)
    if reporter.pruned_at is not None:
        study.tell(trial, state=State.PRUNED)
        log(f"trial {trial.number} pruned at step {reporter.pruned_at}: {name} {format_value(value)}")
    elif not math.isfinite(value):
        failed(study, trial, f"{name} is {value}", began, State.FAIL)
    else:
        study.tell(trial, value)
        log(f"trial {trial.number}: {name} {format_value(value)} in {format_seconds(seconds)}")
    keep_best_weights(optuna, study, previous_best, trial.number, folder)


def failed(study: Any, trial: Any, error: str, began: float, state: Any) -> None:
    trial.set_user_attr("error", error)
    trial.set_user_attr("seconds", round(time.perf_counter() - began, 1))
    study.tell(trial, state=state)


def best_trial(optuna: Any, study: Any) -> Any | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if complete else None


def keep_best_weights(optuna: Any, study: Any, previous: Any | None, number: int, folder: Path) -> None:
    """Only the best trial keeps its model weights: this one if it is the new best (the old best's go),
    otherwise this one's go. Metrics, report and recipe of every trial stay."""
    best = best_trial(optuna, study)
    if best is not None and best.number == number:
        if previous is not None and previous.number != number:
            remove_weights(Path(previous.user_attrs["output_dir"]))
        return
    remove_weights(folder)


# -- outputs ------------------------------------------------------------------------------------------
def trial_row(trial: Any) -> dict[str, Any]:
    """A trial as trials.json holds it; a trial the sweep was killed in is a failure without an error."""
    row = {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "params": dict(trial.params),
        "metric": trial.user_attrs.get("value"),
        "seconds": trial.user_attrs.get("seconds"),
        "output_dir": trial.user_attrs.get("output_dir"),
    }
    if trial.state.name == "FAIL":
        row["error"] = trial.user_attrs.get("error", "stopped before it finished")
    return row


def trials_table(rows: list[dict[str, Any]], metric: str) -> list[str]:
    keys = list(dict.fromkeys(key for row in rows for key in row["params"]))
    header = ["trial", "state", metric, "seconds", *keys]
    body = [
        [
            row["number"],
            row["state"] + (f" ({row['error']})" if row.get("error") else ""),
            format_value(row["metric"]) if row["metric"] is not None else "-",
            row["seconds"] if row["seconds"] is not None else "-",
            *(format_value(row["params"][key]) if key in row["params"] else "-" for key in keys),
        ]
        for row in rows
    ]
    return table(header, body)


def write_outputs(optuna: Any, study: Any, plan: Plan) -> SweepResult:
    """trials.json, trials.md, the plot and best_recipe.yaml, from the study as it stands."""
    rows = [trial_row(trial) for trial in study.get_trials(deepcopy=False)]
    best = best_trial(optuna, study)
    best_row = next((row for row in rows if best is not None and row["number"] == best.number), None)
    result = SweepResult(plan.output_dir, plan.metrics[0], plan.direction, rows, best_row)
    out = plan.output_dir
    write_json_atomic(
        out / TRIALS_JSON,
        {
            "metric": result.metric,
            "direction": result.direction,
            "best_trial": best.number if best is not None else None,
            "trials": rows,
        },
    )
    plot_note = write_plot(rows, result.metric, result.direction, out / PLOT_FILE)
    lines = [
        f"# Sweep: {study.user_attrs['settings']['recipe']}",
        "",
        f"{len(rows)} trials, {result.metric} ({result.direction}); each trial's run is in {TRIALS_DIR}/NNN.",
        "",
        *result.table_lines(),
        "",
        result.best_line(),
        "",
        plot_note or f"![{result.metric} by trial]({PLOT_FILE})",
    ]
    (out / TRIALS_MD).write_text("\n".join(lines) + "\n", encoding="utf-8")
    result.files = [out / TRIALS_JSON, out / TRIALS_MD]
    result.files += [] if plot_note else [out / PLOT_FILE]
    if best_row is not None:
        write_best_recipe(plan, best_row, result.metric)
        result.files.append(out / BEST_RECIPE_FILE)
    return result


def write_plot(rows: list[dict[str, Any]], metric: str, direction: str, path: Path) -> str | None:
    """The metric of each completed trial and the best so far; the reason when it cannot be drawn."""
    missing = matplotlib_missing()
    if missing:
        return f"plot skipped: {missing}"
    scored = [(row["number"], row["metric"]) for row in rows if row["state"] == "complete"]
    if not scored:
        return "plot skipped: no trial completed yet"
    better = min if direction == "minimize" else max
    best, running = [], None
    for number, value in scored:
        running = value if running is None else better(running, value)
        best.append((number, running))
    series = Series("trials", f"{metric} by trial", metric, {"trial": scored, "best so far": best}, "trial")
    build_figure(series).savefig(path)
    return None


def write_best_recipe(plan: Plan, best: dict[str, Any], metric: str) -> None:
    """The recipe as given, with the sweep's overrides and the best trial's params applied, training into a
    new folder (DIR/best): `llmkit finetune DIR/best_recipe.yaml` runs it as it is."""
    raw = copy.deepcopy(plan.recipe) if isinstance(plan.recipe, dict) else read_recipe_file(plan.recipe)
    changes = [*plan.overrides, *(param_override(k, v) for k, v in best["params"].items())]
    raw = apply_overrides(raw, [*changes, f"output_dir={plan.output_dir / BEST_RUN_DIR}"])
    raw.pop("__source__", None)
    raw.pop("overwrite", None)
    header = [
        f"# The best trial ({best['number']}, {metric} = {format_value(best['metric'])}) of the sweep in "
        f"{plan.output_dir}: the recipe with",
        *(f"#   {change}" for change in changes),
        f"# Train it: llmkit finetune {plan.output_dir / BEST_RECIPE_FILE}",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    (plan.output_dir / BEST_RECIPE_FILE).write_text(text, encoding="utf-8")


__all__ = ["DEFAULT_SPACE", "Param", "SweepResult", "default_space", "sweep"]
