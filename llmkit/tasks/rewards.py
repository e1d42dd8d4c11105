"""GRPO's rewards (``grpo.rewards`` in a recipe): the built-ins, functions from a file beside the recipe, and
the final-answer check that both the ``answer`` reward and the held-out exact match use.

A recipe lists its rewards, each a mapping with a ``weight`` (default 1.0):

* ``{name: answer}`` -- 1 when the completion's final answer equals the row's answer column (``column``,
  default ``data.answer``), else 0. The final answer is the text after the last ``Answer:``, else the last
  number in the completion; numbers compare as numbers (``1,200`` = ``1200.0``), other text case-blind;
* ``{name: format}`` -- 1 when ``pattern`` (a regular expression) is found in the completion's last non-empty
  line (``line: last``, the default), or in any line (``line: any``), else 0; the default pattern is a whole
  ``Answer: N`` line. The last line, because that is what the prompt asks for: rewarded anywhere, a model
  learns to open with a guessed ``Answer: N`` and ramble on (measured: docs/tasks/grpo.md);
* ``{name: length}`` -- 1 when the completion has ``min_tokens`` to ``max_tokens`` tokens, else 0;
* ``{function: MODULE:FUNCTION}`` -- ``FUNCTION`` from ``MODULE.py`` in the recipe's folder, called as TRL
  calls a reward function: keyword arguments ``prompts`` and ``completions`` (texts), ``completion_ids``,
  every data column as a list, and ``trainer_state``; it returns one number (or None) per completion. An
  optional ``name`` labels it in the logs (default: the function's name);
* ``{model: RUN}`` -- the score a reward-model run (``task: reward-model``; ``RUN``: its folder, relative to
  the recipe's) gives each completion after its prompt: the prompt's chat messages and the completion's text,
  rendered with the run's own tokenizer and template, scored by the code `llmkit predict` scores replies with
  (:meth:`llmkit.tasks.reward_model.RewardModelTask.score_replies`). The run is checked when the trainer is
  built and loaded once, on the first call; labelled ``model`` (``model_1``, ``model_2``, ... when there are
  several), or by its ``name``.

A function that raises, or returns anything but one number per completion, stops the run with one line
naming the reward and what to fix.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError, did_you_mean

BUILT_INS = ("answer", "format", "length")
#: The column GRPO's encoded rows carry for a model reward: each prompt as chat messages (TRL passes the
#: prompt rendered with the policy's template, which another model's template cannot read).
PROMPT_MESSAGES = "prompt_messages"
#: The keys each kind of reward takes besides ``weight``.
KEYS: dict[str, tuple[str, ...]] = {
    "answer": ("name", "column"),
    "format": ("name", "pattern", "line"),
    "length": ("name", "min_tokens", "max_tokens"),
    "function": ("function", "name", "file"),
    "model": ("model", "name"),
}
DEFAULT_FORMAT = r"^\s*Answer:\s*-?[\d,]*\.?\d+\s*$"
#: Where the format reward looks: the completion's last non-empty line, or any line.
FORMAT_LINES = ("last", "any")
ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- the final answer -------------------------------------------------------------------------------
def last_line(text: str) -> str:
    """The completion's last non-empty line ("" for an empty completion)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def final_answer(text: str) -> str | None:
    """The answer a completion gives: the rest of the line after its last ``Answer:``, else its last number;
    None when it gives neither."""
    marks = list(ANSWER_MARK.finditer(text))
    if marks:
        line = text[marks[-1].end() :].strip().splitlines()
        given = line[0].strip() if line else ""
        number = NUMBER.search(given)
        if number and given[: number.start()].strip(" $=") == "":
            return number.group()
        return given.rstrip(".").strip() or None
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else None


def as_number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.replace(",", "").strip().rstrip("."))
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def answers_match(given: str | None, gold: Any) -> bool:
    """A final answer against the row's: numbers by value, other text stripped and case-blind."""
    if given is None or gold is None:
        return False
    expected = str(gold).strip()
    number, gold_number = as_number(given), as_number(expected)
    if number is not None and gold_number is not None:
        return number == gold_number
    return given.strip().casefold() == expected.casefold()


# -- the recipe's list --------------------------------------------------------------------------------
@dataclass
class RewardSpec:
    """One entry of ``grpo.rewards``, checked: its kind, the label its metrics carry, weight and settings."""

    index: int
    kind: str  # answer | format | length | function | model
    label: str
    weight: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"grpo.rewards[{self.index}] ({self.label})"


def check_rewards(entries: Any, answer_column: str | None) -> list[RewardSpec]:
    """``grpo.rewards`` as RewardSpecs; a wrong entry is one line naming it (no file is read here)."""
    if not isinstance(entries, list) or not entries:
        raise LlmkitError(
            "grpo.rewards must be a non-empty list of rewards, e.g. [{name: answer}, {name: format, weight: "
            "0.5}], [{function: my_rewards:score}] or [{model: runs/my-reward-model}] (docs/tasks/grpo.md)"
        )
    unnamed_models = [
        i for i, entry in enumerate(entries) if reward_kind(entry) == "model" and not entry.get("name")
    ]
    specs = [
        check_reward(index, entry, answer_column, model_label(index, unnamed_models))
        for index, entry in enumerate(entries)
    ]
    labels = [spec.label for spec in specs]
    for spec in specs:
        if labels.count(spec.label) > 1:
            raise LlmkitError(
                f"{spec.where}: two rewards are labelled '{spec.label}'; give one a name: key of its own"
            )
    return specs


def reward_kind(entry: Any) -> Any:
    """An entry's kind: a function or a model by its key, a built-in by its name."""
    if not isinstance(entry, dict):
        return None
    return "function" if "function" in entry else "model" if "model" in entry else entry.get("name")


def model_label(index: int, unnamed_models: list[int]) -> str:
    """A model reward without a name: ``model``, or ``model_1``, ``model_2``, ... when there are several."""
    if len(unnamed_models) < 2 or index not in unnamed_models:
        return "model"
    return f"model_{unnamed_models.index(index) + 1}"


def check_reward(
    index: int, entry: Any, answer_column: str | None, unnamed_model: str = "model"
) -> RewardSpec:
    where = f"grpo.rewards[{index}]"
    if not isinstance(entry, dict):
        raise LlmkitError(f"{where} must be a mapping such as {{name: answer, weight: 1.0}}, got {entry!r}")
    kind = reward_kind(entry)
    if kind not in (*BUILT_INS, "function", "model"):
        raise LlmkitError(
            f"{where}: unknown reward {kind!r}{did_you_mean(str(kind), BUILT_INS)}; built-ins: "
            f"{', '.join(BUILT_INS)}, or {{function: MODULE:FUNCTION}} for a function in MODULE.py beside "
            f"the recipe, or {{model: RUN}} for a reward-model run's folder"
        )
    allowed = (*KEYS[kind], "weight")
    for key in entry:
        if key not in allowed:
            raise LlmkitError(
                f"{where}: unknown key '{key}' for a {kind} reward{did_you_mean(str(key), allowed)}; its "
                f"keys: {', '.join(allowed)}"
            )
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise LlmkitError(f"{where}.weight must be a number, got {weight!r}")
    settings = {key: value for key, value in entry.items() if key not in ("name", "weight", "function")}
    if kind == "function":
        settings.update(split_function_name(entry["function"], where))
        label = entry.get("name") or settings["function"]
    elif kind == "model":
        if not isinstance(entry["model"], str) or not entry["model"].strip():
            raise LlmkitError(
                f"{where}.model must be the folder of a reward-model run (task: reward-model), relative to "
                f"the recipe's folder, got {entry['model']!r}"
            )
        label = entry.get("name") or unnamed_model
    else:
        label = kind
        check_built_in(kind, settings, where, answer_column)
    if not isinstance(label, str) or not IDENTIFIER.match(label):
        raise LlmkitError(f"{where}.name must be a name of letters, digits and _, got {label!r}")
    return RewardSpec(index, kind, label, float(weight), settings)


def check_built_in(kind: str, settings: dict[str, Any], where: str, answer_column: str | None) -> None:
    """Fill in and check a built-in's settings (in place)."""
    if kind == "answer":
        column = settings.setdefault("column", answer_column)
        if not isinstance(column, str) or not column:
            raise LlmkitError(
                f"{where}: the answer reward needs a column of answers: set data.answer (or the reward's "
                f"column:)"
            )
    elif kind == "format":
        pattern = settings.setdefault("pattern", DEFAULT_FORMAT)
        try:
            re.compile(str(pattern), re.MULTILINE)
        except re.error as exc:
            raise LlmkitError(f"{where}.pattern is not a regular expression ({exc}): {pattern!r}") from None
        line = settings.setdefault("line", "last")
        if line not in FORMAT_LINES:
            raise LlmkitError(f"{where}.line must be {' or '.join(FORMAT_LINES)}, got {line!r}")
    elif kind == "length":
        low, high = settings.setdefault("min_tokens", 0), settings.setdefault("max_tokens", None)
        for key, value in (("min_tokens", low), ("max_tokens", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise LlmkitError(f"{where}.{key} must be a whole number of tokens, got {value!r}")
        if high is not None and high < low:
            raise LlmkitError(f"{where}: max_tokens={high} is below min_tokens={low}")


def split_function_name(value: Any, where: str) -> dict[str, str]:
    """``MODULE:FUNCTION`` -> its parts; both plain names (a file beside the recipe, never a dotted path)."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 2 or not all(IDENTIFIER.match(part) for part in parts):
        raise LlmkitError(
            f"{where}.function must be MODULE:FUNCTION (MODULE.py in the recipe's folder), got {value!r}"
        )
    return {"module": parts[0], "function": parts[1]}


def settle_files(entries: Any, recipe_folder: Path) -> Any:
    """The recipe's function rewards with the file each is read from (``MODULE.py`` beside the recipe) and its
    model rewards' run folders, as absolute paths, so that the saved recipe of a run finds them from any
    folder; other entries as they are."""
    if not isinstance(entries, list):
        return entries
    settled = []
    for entry in entries:
        kind = reward_kind(entry)
        if kind == "function" and isinstance(entry["function"], str) and not entry.get("file"):
            module = entry["function"].split(":")[0]
            entry = {**entry, "file": str((recipe_folder / f"{module}.py").resolve())}
        elif kind == "model" and isinstance(entry["model"], str) and entry["model"].strip():
            entry = {**entry, "model": str((recipe_folder / Path(entry["model"]).expanduser()).resolve())}
        settled.append(entry)
    return settled


# -- computing rewards -----------------------------------------------------------------------------------
#: TRL's reward signature: keyword arguments, one float (or None) per completion.
RewardFunction = Callable[..., list[float | None]]


def load_function(spec: RewardSpec) -> Callable[..., Any]:
    """The user's function, from its file only (nothing on sys.path is searched or changed)."""
    file = spec.settings.get("file")
    name = f"{spec.settings['module']}:{spec.settings['function']}"
    if not file or not Path(file).is_file():
        raise LlmkitError(
            f"{spec.where}: no file {file or spec.settings['module'] + '.py'} for function {name}; put "
            f"{spec.settings['module']}.py in the recipe's folder (or give the reward's file:)"
        )
    module_name = f"llmkit_rewards_{spec.settings['module']}_{abs(hash(file))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, file)
    if loader_spec is None or loader_spec.loader is None:
        raise LlmkitError(f"{spec.where}: {file} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise LlmkitError(
            f"{spec.where}: importing {file} failed: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    function = getattr(module, spec.settings["function"], None)
    if not callable(function):
        raise LlmkitError(
            f"{spec.where}: {file} has no function {spec.settings['function']}; define it there"
        )
    return function


def built_in(spec: RewardSpec) -> RewardFunction:
    """A built-in reward as a TRL reward function."""
    if spec.kind == "answer":
        column = spec.settings["column"]

        def answer(completions: list[str], **columns: Any) -> list[float | None]:
            golds = columns[column]
            pairs = zip(completions, golds, strict=True)
            return [float(answers_match(final_answer(text), gold)) for text, gold in pairs]

        return answer
    if spec.kind == "format":
        pattern = re.compile(str(spec.settings["pattern"]), re.MULTILINE)
        searched = last_line if spec.settings["line"] == "last" else str

        def format(completions: list[str], **columns: Any) -> list[float | None]:
            return [float(pattern.search(searched(text)) is not None) for text in completions]

        return format
    low, high = spec.settings["min_tokens"], spec.settings["max_tokens"]

    def length(completions: list[str], completion_ids: list[list[int]], **columns: Any) -> list[float | None]:
        return [float(low <= len(ids) and (high is None or len(ids) <= high)) for ids in completion_ids]

    return length


def model_reward(spec: RewardSpec) -> RewardFunction:
    """A reward-model run's score of each completion after its prompt: the folder is checked now (one line
    when it is not a reward-model run), the model loaded on the first call, once."""
    from llmkit.tasks.reward_model import ReplyScorer, reward_run_task

    folder = Path(spec.settings["model"])
    task = reward_run_task(folder, spec.where)
    loaded: list[ReplyScorer] = []

    def model(completions: list[str], **columns: Any) -> list[float | None]:
        if not loaded:
            loaded.append(ReplyScorer.load(folder, task))
        return loaded[0].score(columns[PROMPT_MESSAGES], completions)

    return model


def reward_function(spec: RewardSpec) -> RewardFunction:
    """The spec as TRL calls a reward function, its failures and wrong results turned into one line. Named
    by the spec's label, which names TRL's metrics (``rewards/<label>/mean``)."""
    inner = {"function": load_function, "model": model_reward}.get(spec.kind, built_in)(spec)

    def checked(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        try:
            values = inner(prompts=prompts, completions=completions, **kwargs)
        except LlmkitError:
            raise
        except Exception as exc:
            raise LlmkitError(
                f"{spec.where} raised {type(exc).__name__}: {one_line(exc)}; {fix(spec)}"
            ) from None
        return checked_values(spec, values, len(completions))

    checked.__name__ = spec.label
    checked.__qualname__ = spec.label
    return checked


def fix(spec: RewardSpec) -> str:
    """What to look at when a reward raises."""
    if spec.kind == "model":
        return f"check the reward-model run {spec.settings['model']} (does `llmkit predict` score with it?)"
    return f"fix the function ({spec.settings.get('file', 'built-in')})"


def checked_values(spec: RewardSpec, values: Any, expected: int) -> list[float | None]:
    """One float (or None: no reward for it) per completion, or one line saying what came back."""
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise LlmkitError(
            f"{spec.where} returned {type(values).__name__}, not a list of {expected} numbers (one per "
            f"completion)"
        )
    if len(values) != expected:
        raise LlmkitError(
            f"{spec.where} returned {len(values)} values for {expected} completions; return one number per "
            f"completion"
        )
    out: list[float | None] = []
    for position, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LlmkitError(
                f"{spec.where} returned {value!r} (a {type(value).__name__}) at position {position}; return "
                f"a number (or None) per completion"
            )
        out.append(float(value))
    return out


@dataclass
class ScoredCompletions:
    """Each completion's rewards (by label, NaN where a reward gave none), exact match and token count."""

    rewards: dict[str, list[float]]
    weights: dict[str, float]
    exact_match: list[float] | None
    lengths: list[int]
    #: What `llmkit evaluate` resamples (``llmkit.inference.evaluate.row_outcomes``): the prompts.
    unit: str = "rows"
    on_counts: None = None

    @property
    def count(self) -> int:
        return len(self.lengths)

    def totals(self) -> list[float]:
        """The weighted sum of each completion's rewards (a missing reward counts 0, as TRL's nansum)."""
        return [
            sum(
                self.weights[label] * (0.0 if math.isnan(values[i]) else values[i])
                for label, values in self.rewards.items()
            )
            for i in range(len(self.lengths))
        ]

    def metrics(self, indices: Sequence[int] | None = None) -> dict[str, float]:
        """Means over the completions at ``indices`` (all when None): ``exact_match``, ``reward``,
        ``reward_<label>`` and ``completion_length``."""
        chosen = list(range(len(self.lengths))) if indices is None else list(indices)

        def mean(values: Sequence[float]) -> float:
            kept = [values[i] for i in chosen if not math.isnan(values[i])]
            return sum(kept) / len(kept) if kept else math.nan

        scores = {}
        if self.exact_match is not None:
            scores["exact_match"] = mean(self.exact_match)
        scores["reward"] = mean(self.totals())
        scores.update({f"reward_{label}": mean(values) for label, values in self.rewards.items()})
        scores["completion_length"] = mean([float(n) for n in self.lengths])
        return scores


def score_completions(
    functions: dict[str, RewardFunction],
    weights: dict[str, float],
    prompts: list[Any],
    completions: list[str],
    completion_ids: list[list[int]],
    columns: dict[str, list[Any]],
    answer_column: str | None,
    **extra: Any,
) -> ScoredCompletions:
    """Every reward on every completion, and each final answer against ``answer_column`` when the rows have
    it: what an evaluation reports, on the training run's validation split and in `llmkit evaluate` alike."""
    rewards = {}
    for label, function in functions.items():
        values = function(
            prompts=prompts, completions=completions, completion_ids=completion_ids, **columns, **extra
        )
        rewards[label] = [math.nan if value is None else value for value in values]
    exact = None
    if answer_column is not None and answer_column in columns:
        golds = columns[answer_column]
        pairs = zip(completions, golds, strict=True)
        exact = [float(answers_match(final_answer(text), gold)) for text, gold in pairs]
    return ScoredCompletions(rewards, weights, exact, [len(ids) for ids in completion_ids])


def one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
