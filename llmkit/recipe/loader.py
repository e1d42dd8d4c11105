"""Recipes: one YAML schema for every task, dotted ``key=value`` overrides, and validation.

A recipe has these top-level keys::

    task: classification            # which task object runs it (llmkit.tasks)
    model: minilm-l6                # local folder, bundled alias or hub id (llmkit.models.resolve)
    data: {train: ..., text: ...}   # files or a HF dataset + column mapping; the task adds its own keys
    training: {max_steps: 50, ...}  # any transformers.TrainingArguments field
    peft: {method: lora, r: 16}     # optional: train a LoRA adapter instead of every weight
    distill: {teacher: runs/x}      # optional: learn from a teacher model's outputs as well
    setfit: {iterations: 20}        # optional (classification): SetFit's contrastive body, then a head
    tokenizer: {train: true}        # only with model: {from_scratch: SIZE}: a tokenizer trained on the data
    output_dir: runs/classification

Everything is checked before any work starts, so a typo costs a second, not a training run.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.core.paths import PACKAGE_DIR
from llmkit.data.files import warn_stale_validation
from llmkit.data.section import COMMON_DATA_DEFAULTS, check_data_source, check_row_filters, check_streaming
from llmkit.models.adaptation import check_peft_section
from llmkit.models.scratch import check_from_scratch, check_tokenizer_section
from llmkit.models.setfit_section import check_setfit_section
from llmkit.models.student import check_student
from llmkit.models.teacher import check_distill_section

#: Where runs go by default (output_dir: runs/<task>), relative to the current folder; demos look here.
RUNS_DIR = "runs"
TOP_LEVEL_KEYS = (
    "task",
    "model",
    "data",
    "training",
    "peft",
    "distill",
    "setfit",
    "tokenizer",
    "output_dir",
    "overwrite",
)


#: llmkit's TrainingArguments defaults; a task may refine them, a recipe overrides them.
TRAINING_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 5e-5,
    "num_train_epochs": 3,  # or max_steps: N
    "warmup_steps": 0.1,  # a number below 1 is a share of the training steps
    "weight_decay": 0.01,
    "logging_steps": 10,
    "eval_strategy": "epoch",  # eval_steps: N alone evaluates every N steps
    "save_strategy": "no",  # no checkpoints; save_steps: N alone saves (resumably) every N steps
    "report_to": "auto",  # llmkit's: tensorboard when it is installed, else none (train.report_targets)
    "seed": 42,
    "logging_nan_inf_filter": False,  # a NaN loss must show in the logs so training can stop on it
    # count real (attention-mask) tokens: metrics.json reports train_tokens_per_second
    "include_num_input_tokens_seen": "non_padding",
    # llmkit's own keys (not TrainingArguments fields):
    "precision": "auto",  # auto | bf16 | fp16 | fp32 (auto: bf16 where the hardware runs it natively)
    "resume": "auto",  # auto | never | a checkpoint folder
    "early_stopping_patience": None,  # stop after this many evaluations without improvement
}

#: llmkit's own training keys (beside TrainingArguments fields): allowed values, None for any text.
LLMKIT_TRAINING_KEYS: dict[str, tuple[str, ...] | None] = {
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "resume": None,
    "early_stopping_patience": (),  # a positive integer (checked on its own)
}

#: TrainingArguments fields a recipe may not set, and where the setting lives instead.
RESERVED_TRAINING_KEYS = {
    "output_dir": "set the top-level key output_dir",
    "do_train": "llmkit always trains",
    "do_eval": "llmkit evaluates whenever there is validation data",
    "do_predict": "give data.test to predict on a test split",
}

#: TrainingArguments fields whose annotation is narrower than the values they document: `fsdp: true` is
#: transformers 5's way to turn FSDP on (`fsdp_config` says how); the annotation only admits the old strings.
TRAINING_FIELD_TYPES: dict[str, Any] = {"fsdp": bool | str | None}

#: `model:` may be a mapping {name: ..., <option>: ...}; the safety options are off by default.
MODEL_OPTION_DEFAULTS: dict[str, Any] = {
    "trust_remote_code": False,  # run Python code shipped in the model folder
    "allow_pickle": False,  # load pickle weights (pytorch_model.bin), which can run code, when no safetensors
    # weights' dtype for training: null = fp32 master weights (mixed precision autocasts on top of them);
    # bf16 = pure bf16 on purpose; auto = as stored in the checkpoint
    "dtype": None,
}
MODEL_DTYPES = ("fp32", "bf16", "auto")

RECIPES_DIR_NAME = "recipes"


@dataclass
class Recipe:
    """A validated recipe; ``data`` and ``training`` hold defaults merged with the user's values."""

    task: str
    model: str
    data: dict[str, Any]
    training: dict[str, Any]
    output_dir: str
    overwrite: bool = False
    source: str = "<dict>"
    user_training: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=lambda: dict(MODEL_OPTION_DEFAULTS))
    #: The validated ``peft:`` section (``llmkit.models.adaptation``); None: full fine-tuning.
    peft: dict[str, Any] | None = None
    #: The task's own section (e.g. ``preference:``, ``Task.options_section``) merged with its defaults.
    options: dict[str, Any] = field(default_factory=dict)
    options_section: str | None = None
    #: ``model.from_scratch`` resolved (``llmkit.models.scratch``); None: the model is a checkpoint. ``model``
    #: then names the size for messages.
    scratch: dict[str, Any] | None = None
    #: The ``tokenizer:`` section (only with ``scratch``), merged with its defaults.
    tokenizer: dict[str, Any] = field(default_factory=dict)
    #: ``model: {init_from: NAME, layers: [...]}`` checked (``llmkit.models.student``); None: the model is
    #: ``model`` as it is. ``model`` then names init_from for messages.
    student: dict[str, Any] | None = None
    #: The validated ``distill:`` section (``llmkit.models.teacher``); None: no teacher.
    distill: dict[str, Any] | None = None
    #: The validated ``setfit:`` section (``llmkit.models.setfit_section``); None: no SetFit.
    setfit: dict[str, Any] | None = None

    def safety_options(self) -> dict[str, bool]:
        """The model options that widen what is fetched and loaded (pickle weights, remote code)."""
        return {key: self.model_options[key] for key in ("allow_pickle", "trust_remote_code")}

    def to_dict(self) -> dict[str, Any]:
        """The recipe as it was resolved, in the same shape a user writes (saved as recipe.yaml)."""
        options = {k: v for k, v in self.model_options.items() if v != MODEL_OPTION_DEFAULTS[k]}
        model: str | dict[str, Any] = {"name": self.model, **options} if options else self.model
        if self.scratch is not None:
            model = {"from_scratch": self.scratch["spec"], **options}
        if self.student is not None:
            model = {**self.student, **options}
        return {
            "task": self.task,
            "model": model,
            "data": dict(self.data),
            "training": dict(self.training),
            **({"peft": dict(self.peft)} if self.peft is not None else {}),
            **({"distill": dict(self.distill)} if self.distill is not None else {}),
            **({"setfit": dict(self.setfit)} if self.setfit is not None else {}),
            **({"tokenizer": dict(self.tokenizer)} if self.scratch is not None else {}),
            **({self.options_section: dict(self.options)} if self.options_section else {}),
            "output_dir": self.output_dir,
            "overwrite": self.overwrite,
        }


def bundled_recipes_dir() -> Path:
    """Where the bundled recipes live: inside the wheel, or the repo's recipes/ in a source checkout."""
    package_dir = PACKAGE_DIR
    for candidate in (package_dir / RECIPES_DIR_NAME, package_dir.parent / RECIPES_DIR_NAME):
        if candidate.is_dir():
            return candidate
    return package_dir / RECIPES_DIR_NAME


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe name -> file, e.g. ``{"classification": .../classification.yaml}``."""
    folder = bundled_recipes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def recipe_description(path: Path) -> str:
    """A recipe's first sentence: its opening comment lines up to the first full stop (or blank comment)."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or not line.lstrip("# ").strip():
            break
        words.append(line.lstrip("# ").strip())
    paragraph = " ".join(words)
    end = re.search(r"[.!?](\s|$)", paragraph)
    return paragraph[: end.start() + 1] if end else paragraph


def default_recipe_path() -> Path:
    """The recipe `llmkit finetune` runs with no argument: MiniLM on the shipped sentiment sample."""
    return bundled_recipes()["classification"]


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """Parse a recipe file, or a bundled recipe given by name; YAML errors name the line."""
    path = Path(path)
    if not path.is_file():
        named = bundled_recipes().get(str(path))
        if named is None:
            hint = did_you_mean(path.stem, bundled_recipes())
            raise LlmkitError(
                f"recipe {path}: no such file{hint}; give a YAML file or a bundled recipe name "
                f"(`llmkit recipes` lists them)"
            )
        path = named
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmkitError(f"recipe {path}: cannot be read ({exc}); check the file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LlmkitError(f"recipe {path}{where}: invalid YAML ({problem}); fix the syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LlmkitError(f"recipe {path}: the top level must be a mapping of keys (task, model, data, ...)")
    raw["__source__"] = str(path)
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.max_steps=50`` -> (["training", "max_steps"], 50); values are read as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise LlmkitError(
            f"override '{text}': expected KEY=VALUE with a dotted key, e.g. training.max_steps=50"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set each dotted override in a copy of the raw recipe."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] == "model" and len(path) > 1 and isinstance(raw.get("model"), str):
            # `model.dtype=bf16` on a recipe with `model: NAME`; `model.from_scratch=SIZE` and
            # `model.init_from=NAME` replace NAME
            raw["model"] = {} if path[1] in ("from_scratch", "init_from") else {"name": raw["model"]}
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                dotted = ".".join(path[: i + 1])
                raise LlmkitError(f"override '{text}': {dotted} is not a mapping, so it has no sub-keys")
            node = child
        node[path[-1]] = value
    return raw


def load_recipe(
    recipe: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Recipe:
    """Read (path, bundled name or dict; None = the default recipe), apply overrides, validate."""
    default = recipe is None
    if isinstance(recipe, dict):
        raw = copy.deepcopy(recipe)
        raw.setdefault("__source__", "<dict>")
    else:
        raw = read_recipe_file(recipe or default_recipe_path())
    overridden = apply_overrides(raw, overrides)
    if default and overridden.get("task", raw.get("task")) != raw.get("task"):
        # `llmkit validate task=generation ...`: the default recipe is classification's; another task
        # starts from its own defaults (model, data keys), not from classification's columns
        task = overridden["task"]
        overridden = apply_overrides({"__source__": f"<defaults of task {task}>"}, overrides)
    warn_stale_validation(raw.get("data"), overridden.get("data"), raw.get("__source__", "<dict>"))
    return validate_recipe(overridden)


def _type_name(value: Any) -> str:
    """'an integer', 'a string', ... for messages like 'data.max_length must be an integer'."""
    names = {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def validate_recipe(raw: dict[str, Any]) -> Recipe:
    """Check every key and value type; merge defaults. Errors name the key and what to do."""
    from llmkit.tasks import get_task_class, task_names, task_names_with_scratch

    raw = dict(raw)
    source = str(raw.pop("__source__", "<dict>"))
    where = f"recipe {source}"
    task_name = raw.get("task", "classification")
    if not isinstance(task_name, str):
        raise LlmkitError(f"{where}: task must be a string, one of {', '.join(task_names())}")
    task_cls = get_task_class(task_name, where=where)
    section = task_cls.options_section  # a task's own top-level section, e.g. preference:
    known_keys = (*TOP_LEVEL_KEYS, *([section] if section else []))
    for key in raw:
        if key not in known_keys:
            raise LlmkitError(
                f"{where}: unknown key '{key}'{did_you_mean(key, known_keys)}; "
                f"valid keys: {', '.join(known_keys)}"
            )

    model = raw.get("model", task_cls.default_model)
    model_options = dict(MODEL_OPTION_DEFAULTS)
    from_scratch = student = None
    if isinstance(model, dict):
        options = dict(model)
        from_scratch = options.pop("from_scratch", None)
        student = check_student(options.pop("init_from", None), options.pop("layers", None), where)
        if from_scratch is not None and "name" in options:
            raise LlmkitError(
                f"{where}: model has both name ({options['name']}) and from_scratch ({from_scratch}); a "
                f"model starts from a checkpoint or from scratch: remove one of them"
            )
        if student is not None and (from_scratch is not None or options.get("name") is not None):
            key = "from_scratch" if from_scratch is not None else "name"
            other = from_scratch if from_scratch is not None else options["name"]
            raise LlmkitError(
                f"{where}: model has both init_from ({student['init_from']}) and {key} ({other}); init_from "
                f"names the model whose layers the run starts from: remove {key}"
            )
        model = options.pop("name", task_cls.default_model)
        if student is not None:
            model = student["init_from"]
        model_options = check_section(options, MODEL_OPTION_DEFAULTS, "model", where)
        if model_options["dtype"] not in (None, *MODEL_DTYPES):
            raise LlmkitError(
                f"{where}: model.dtype must be one of {', '.join(MODEL_DTYPES)} (or null for fp32 weights "
                f"under training.precision), got {model_options['dtype']!r}"
            )
    if not isinstance(model, str) or not model.strip():
        raise LlmkitError(
            f"{where}: model must be a string (a local folder, a bundled alias or a hub id) "
            f"or a mapping with a name: {{name: ..., trust_remote_code: false}}"
        )

    data_defaults = {**COMMON_DATA_DEFAULTS, **task_cls.data_defaults}
    data = check_section(raw.get("data") or {}, data_defaults, "data", where, task_cls.data_words)
    check_data_source(data, where)
    check_row_filters(data, where)
    split = data["validation_split"]
    if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0 <= split < 1:
        raise LlmkitError(f"{where}: data.validation_split must be a number in [0, 1), got {split!r}")

    user_training = raw.get("training") or {}
    if not isinstance(user_training, dict):
        raise LlmkitError(f"{where}: training must be a mapping of TrainingArguments fields")
    training = {**TRAINING_DEFAULTS, **task_cls.training_defaults}
    checked_training = check_training_args(user_training, where)
    if checked_training.get("torch_compile") and task_cls.torch_compile_refusal:
        raise LlmkitError(
            f"{where}: training.torch_compile does not work for task {task_name}: "
            f"{task_cls.torch_compile_refusal}; remove training.torch_compile"
        )
    training.update(checked_training)
    reconcile_schedule(training, checked_training, may_have_validation(data), where)
    streaming_tasks = [name for name in task_names() if get_task_class(name).streams]
    check_streaming(data, training.get("max_steps", -1), task_cls.name, streaming_tasks, where)

    peft = check_peft_section(raw.get("peft"), where)
    if peft is not None and task_cls.peft_refusal:
        raise LlmkitError(
            f"{where}: a peft section (LoRA) does not work for task {task_name}: {task_cls.peft_refusal}; "
            f"remove the peft section"
        )
    scratch = None
    if from_scratch is not None:
        if task_cls.scratch_style is None:
            usable = ", ".join(task_names_with_scratch())
            raise LlmkitError(
                f"{where}: model.from_scratch does not work for task {task_cls.name}: it needs a model that "
                f"already knows the language; pre-train one with task {usable} and fine-tune that folder "
                f"(model=runs/...), or remove model.from_scratch"
            )
        scratch = check_from_scratch(
            from_scratch, task_cls.scratch_style, task_cls.name, data["max_length"], where
        )
        model = scratch["name"]
        if peft is not None:
            raise LlmkitError(
                f"{where}: a peft section trains adapters on a pre-trained model, and model.from_scratch has "
                f"none: every weight is new, so train them all; remove the peft section"
            )
    tokenizer = check_tokenizer_section(raw.get("tokenizer"), scratch, task_cls.scratch_style, where)
    distilling_tasks = [name for name in task_names() if get_task_class(name).distills]
    caching_tasks = tuple(name for name in distilling_tasks if get_task_class(name).teacher_cache_items)
    distill = check_distill_section(
        raw.get("distill"), task_cls.name, distilling_tasks, where, caching_tasks, data
    )
    setfit = check_setfit_section(raw.get("setfit"), task_cls.name, peft, distill, where)
    options = (
        check_section(raw.get(section) or {}, task_cls.options_defaults, section, where) if section else {}
    )
    if section:
        options = task_cls.settle_options(options, recipe_folder(source))

    output_dir = raw.get("output_dir", f"{RUNS_DIR}/{task_name}")
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise LlmkitError(f"{where}: output_dir must be a folder path (string)")
    overwrite = raw.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise LlmkitError(f"{where}: overwrite must be true or false, got {overwrite!r}")
    return Recipe(
        task=task_name,
        model=model,
        data=data,
        training=training,
        output_dir=output_dir,
        overwrite=overwrite,
        source=source,
        user_training=dict(user_training),
        model_options=model_options,
        peft=peft,
        options=options,
        options_section=section,
        scratch=scratch,
        tokenizer=tokenizer,
        student=student,
        distill=distill,
        setfit=setfit,
    )


def recipe_folder(source: str) -> Path:
    """The folder a recipe file is in (the current folder for a recipe given as a dict or overrides)."""
    path = Path(source)
    return path.parent if path.is_file() else Path.cwd()


def check_section(
    values: Any,
    defaults: dict[str, Any],
    section: str,
    where: str,
    words: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """Merge a section with its defaults; unknown keys and values of the wrong type are errors. ``words``:
    number keys that also take one of these words (``data.threshold: validation``)."""
    if not isinstance(values, dict):
        raise LlmkitError(f"{where}: {section} must be a mapping of keys, got {_type_name(values)}")
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if key not in defaults:
            raise LlmkitError(
                f"{where}: unknown key '{section}.{key}'{_closest_key(key, defaults, section)}; "
                f"valid keys: {', '.join(defaults)}"
            )
        default = defaults[key]
        number_or_word = key in (words or {}) and (
            value in words[key] or (isinstance(value, (int, float)) and not isinstance(value, bool))
        )
        if (
            value is not None
            and default is not None
            and not number_or_word
            and not _same_kind(value, default)
        ):
            raise LlmkitError(f"{where}: {section}.{key} must be {_type_name(default)}, got {value!r}")
        if isinstance(default, dict) and default:  # a nested section with its own keys and defaults
            merged[key] = check_section(value or {}, default, f"{section}.{key}", where)
            continue
        merged[key] = float(value) if isinstance(default, float) and isinstance(value, int) else value
    return merged


def _closest_key(key: str, defaults: dict[str, Any], section: str) -> str:
    """' (did you mean ...?)': a near spelling, or the nested section that holds a key of that name."""
    nested = [name for name, default in defaults.items() if isinstance(default, dict) and key in default]
    if nested:
        return f" (did you mean '{section}.{nested[0]}.{key}'?)"
    return did_you_mean(key, defaults)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def check_training_args(user: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate keys and value types against ``transformers.TrainingArguments``; coerce '1e-4' to float."""
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    checked: dict[str, Any] = {}
    for key, value in user.items():
        if key == "early_stopping_patience":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise LlmkitError(f"{where}: training.{key} must be a positive integer, got {value!r}")
            checked[key] = value
            continue
        if key in LLMKIT_TRAINING_KEYS:
            allowed = LLMKIT_TRAINING_KEYS[key]
            if not isinstance(value, str) or (allowed is not None and value not in allowed):
                expected = f"one of {', '.join(allowed)}" if allowed else "auto, never or a checkpoint folder"
                raise LlmkitError(f"{where}: training.{key} must be {expected}, got {value!r}")
            checked[key] = value
            continue
        if key in RESERVED_TRAINING_KEYS:
            raise LlmkitError(f"{where}: training.{key} is not set here: {RESERVED_TRAINING_KEYS[key]}")
        if key not in fields:
            raise LlmkitError(
                f"{where}: unknown key 'training.{key}'{did_you_mean(key, [*fields, *LLMKIT_TRAINING_KEYS])};"
                f" training takes transformers.TrainingArguments fields"
            )
        annotation = TRAINING_FIELD_TYPES.get(key, fields[key].type)
        ok, coerced = _coerce(annotation, value)
        if not ok:
            raise LlmkitError(f"{where}: training.{key} must be {_describe(annotation)}, got {value!r}")
        checked[key] = coerced
    return checked


def may_have_validation(data: dict[str, Any]) -> bool:
    """Can this data section give a validation split: a file, a carved share of train, or a dataset's own?"""
    if data["validation"] or data["validation_split"] > 0:
        return True
    if data.get("dataset") and not data.get("train"):  # without data.splits a dataset's own is looked for
        return not data.get("splits") or "validation" in data["splits"]
    return False


#: ``*_steps`` settings that only act under their ``*_strategy: steps``.
STEP_SETTINGS = {
    "save_steps": "save_strategy",
    "eval_steps": "eval_strategy",
    "logging_steps": "logging_strategy",
}
#: Settings that only act when there is validation data to evaluate.
EVAL_SETTINGS = (
    "eval_steps",
    "eval_on_start",
    "eval_delay",
    "load_best_model_at_end",
    "early_stopping_patience",
)


def reconcile_schedule(training: dict[str, Any], user: dict[str, Any], has_eval: bool, where: str) -> None:
    """No silent no-ops: a setting the recipe gives either takes effect or is a one-line error.

    ``save_steps: 10`` alone means saving every 10 steps (likewise eval and logging steps); a contradiction
    (``save_steps`` with ``save_strategy: epoch``), a checkpoint limit without checkpoints, or evaluation
    settings without validation data are errors. ``load_best_model_at_end`` and early stopping need
    checkpoints at each evaluation, so they switch saving on at the evaluation schedule.
    """
    for steps_key, strategy_key in STEP_SETTINGS.items():
        if user.get(steps_key) is None:
            continue
        if strategy_key not in user:
            training[strategy_key] = "steps"
        elif str(user[strategy_key]) not in ("steps", "no"):  # an explicit "no" switches it off knowingly
            raise LlmkitError(
                f"{where}: training.{steps_key} has no effect with {strategy_key}={user[strategy_key]}; "
                f"set training.{strategy_key}=steps or remove training.{steps_key}"
            )
    evaluating = str(user.get("eval_strategy", "no")) != "no"
    asked = [
        key for key in EVAL_SETTINGS if user.get(key) and (key != "eval_steps" or "eval_strategy" not in user)
    ]
    if evaluating:
        asked.append("eval_strategy")
    if not has_eval and asked:
        raise LlmkitError(
            f"{where}: training.{asked[0]} needs validation data, and there is none (no data.validation and "
            f"data.validation_split=0); give data.validation or a validation_split, or set "
            f"training.eval_strategy=no"
        )
    if training.get("early_stopping_patience") and "load_best_model_at_end" not in user:
        training["load_best_model_at_end"] = True  # stop, then keep the best model, not the last
    if training.get("load_best_model_at_end"):
        if str(user.get("save_strategy", "")) == "no":
            raise LlmkitError(
                f"{where}: training.load_best_model_at_end needs checkpoints, but save_strategy is no; "
                f"remove save_strategy (llmkit then saves at each evaluation)"
            )
        if "save_strategy" not in user:
            training["save_strategy"] = training["eval_strategy"]
            if training["eval_strategy"] == "steps" and "save_steps" not in user and "eval_steps" in training:
                training["save_steps"] = training["eval_steps"]
    if "save_total_limit" in user and str(training["save_strategy"]) == "no":
        raise LlmkitError(
            f"{where}: training.save_total_limit has no effect without checkpoints (save_strategy is no); "
            f"set training.save_steps (or save_strategy) or remove save_total_limit"
        )


def _coerce(annotation: Any, value: Any) -> tuple[bool, Any]:
    """Does ``value`` fit the dataclass annotation? Returns (ok, value converted where harmless)."""
    if isinstance(annotation, str) or annotation is Any:
        return True, value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and value is False and any("no" in {m.value for m in e} for e in enums):
            return True, "no"  # YAML reads an unquoted `no` (eval_strategy: no) as false
        if enums and isinstance(value, str):  # `SchedulerType | str` still means one of the enum's names
            return any(value in {m.value for m in e} for e in enums), value
        for arg in args:
            ok, coerced = _coerce(arg, value)
            if ok:
                return True, coerced
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(annotation), value
    if origin is not None:
        return isinstance(value, origin), value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation}, value
    if annotation in (list, dict):
        return isinstance(value, annotation), value
    return True, value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        return " or ".join(dict.fromkeys(_describe(a) for a in (enums or args)))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def dump_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe as YAML (it reruns the same training when passed back to finetune)."""
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
