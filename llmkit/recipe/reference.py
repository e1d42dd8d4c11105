"""The recipe reference: every key a task's recipe takes, with its default and what it means.

Generated from the schema itself (``llmkit.recipe.loader``, the task's own defaults, ``peft:``, ``distill:``,
``setfit:``, ``tokenizer:`` and a student's ``model`` keys), comments included: a key's comment is the one
beside (or just above) it in the source of its defaults, so the reference cannot drift from what llmkit
reads. ``llmkit recipes --reference`` prints it; ``docs/recipe-reference.yaml`` is a copy that a test keeps
equal to it.
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
from typing import Any

import yaml

from llmkit.data import section as data_section
from llmkit.models import adaptation, scratch, setfit_section, student, teacher
from llmkit.recipe import loader as config
from llmkit.tasks import get_task_class

COMMENT_COLUMN = 34
HEADER = """\
# Recipe reference for task {task}: every key llmkit reads, with its default.
# Generated from llmkit's schema by `llmkit recipes --reference --task {task}`; do not edit by hand.
# A recipe needs only what differs from these (and data.train or data.dataset)."""
MODEL_NAME_COMMENT = (
    [
        "a local model folder, a bundled alias or a hub id (only if cached: llmkit is offline);",
        "`model: NAME` alone works too, and fill-mask and generation take {from_scratch: SIZE} instead",
    ],
    "",
)
#: A key's comment: the comment lines above it, and the comment at the end of its line ("" if none).
Comment = tuple[list[str], str]


def source_comments(owner: Any, name: str) -> dict[str, Comment]:
    """Key -> comment lines of the dict literal assigned to ``name`` in the source of ``owner`` (a module or
    class): the comment lines just above the key, then the one at the end of its line. Nested dict literals
    give dotted keys (``dpo.beta``)."""
    source = inspect.getsource(owner)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        target = getattr(node, "target", None) or next(iter(getattr(node, "targets", [])), None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            return _key_comments(node.value, comments, lines)
    raise KeyError(f"no dict literal {name} in {owner}")


def _key_comments(node: ast.Dict, comments: dict[int, str], lines: list[str], prefix: str = "") -> dict:
    found: dict[str, Comment] = {}
    previous_end = node.lineno
    for key, value in zip(node.keys, node.values, strict=True):
        if not isinstance(key, ast.Constant):
            continue
        own_line = [n for n in range(previous_end + 1, key.lineno) if lines[n - 1].lstrip().startswith("#")]
        above = [comments[n] for n in own_line if n in comments]
        found[prefix + key.value] = (above, comments.get(key.lineno, ""))
        if isinstance(value, ast.Dict):
            found.update(_key_comments(value, comments, lines, f"{prefix}{key.value}."))
        previous_end = value.end_lineno or key.lineno
    return found


def defining_class(task_cls: type, attribute: str) -> type:
    """The class in the task's hierarchy whose source holds ``attribute`` (a task may inherit it)."""
    return next(klass for klass in task_cls.__mro__ if attribute in vars(klass))


def render_value(value: Any) -> str:
    """A value as YAML on one line (flow style for lists and mappings)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def render_keys(values: dict[str, Any], comments: dict, indent: str, prefix: str = "") -> list[str]:
    """Each key with its value and comment; a nested section's keys one level further in."""
    lines: list[str] = []
    for key, value in values.items():
        above, inline = comments.get(prefix + key, ([], ""))
        lines += [f"{indent}# {line}" for line in above]
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:" + (f"  # {inline}" if inline else ""))
            lines += render_keys(value, comments, indent + "  ", f"{prefix}{key}.")
            continue
        text = f"{indent}{key}: {render_value(value)}"
        lines.append(f"{text:<{COMMENT_COLUMN - 1}} # {inline}" if inline else text)
    return lines


def section(title: str, name: str, values: dict, comments: dict, commented_out: bool = False) -> list[str]:
    """A blank line, the section's title comment, ``name:`` and its keys (all as comments if asked)."""
    body = [f"{name}:", *render_keys(values, comments, "  ")]
    return ["", f"# {title}", *([f"# {line}" for line in body] if commented_out else body)]


def recipe_reference(task_name: str = "classification") -> str:
    """The commented reference recipe of ``task_name``: every section and key with its default."""
    task_cls = get_task_class(task_name)
    model_comments = {
        "name": MODEL_NAME_COMMENT,
        **source_comments(student, "STUDENT_DEFAULTS"),
        **source_comments(config, "MODEL_OPTION_DEFAULTS"),
    }
    data_comments = {
        **source_comments(data_section, "COMMON_DATA_DEFAULTS"),
        **source_comments(defining_class(task_cls, "data_defaults"), "data_defaults"),
    }
    training_comments = {
        **source_comments(config, "TRAINING_DEFAULTS"),
        **source_comments(defining_class(task_cls, "training_defaults"), "training_defaults"),
    }
    lines = [HEADER.format(task=task_name), "", f"task: {task_name}"]
    lines += section(
        "the model: model: NAME, or this mapping with its options",
        "model",
        {"name": task_cls.default_model, **student.STUDENT_DEFAULTS, **config.MODEL_OPTION_DEFAULTS},
        model_comments,
    )
    lines += section(
        "the data: files or a Hugging Face dataset, the columns, and the task's own settings",
        "data",
        {**data_section.COMMON_DATA_DEFAULTS, **task_cls.data_defaults},
        data_comments,
    )
    lines += section(
        "any transformers.TrainingArguments field; these are llmkit's defaults over the Trainer's",
        "training",
        {**config.TRAINING_DEFAULTS, **task_cls.training_defaults},
        training_comments,
    )
    if task_cls.options_section:
        options_owner = defining_class(task_cls, "options_defaults")
        lines += section(
            f"the {task_name} task's own section",
            task_cls.options_section,
            task_cls.options_defaults,
            source_comments(options_owner, "options_defaults"),
        )
    lines += section(
        "absent (or null): every weight trains; a peft: section trains a LoRA adapter (any other "
        "peft.LoraConfig field passes through)",
        "peft",
        adaptation.PEFT_DEFAULTS,
        source_comments(adaptation, "PEFT_DEFAULTS"),
        commented_out=True,
    )
    if task_cls.distills:
        lines += section(
            "absent (or null): the labels alone; a distill: section also learns from a teacher's outputs",
            "distill",
            teacher.DISTILL_DEFAULTS,
            source_comments(teacher, "DISTILL_DEFAULTS"),
            commented_out=True,
        )
    if task_name == "classification":
        lines += section(
            "absent (or null): the model trains end to end; a setfit: section trains it as SetFit does "
            "(docs/tasks/classification.md)",
            "setfit",
            setfit_section.SETFIT_DEFAULTS,
            source_comments(setfit_section, "SETFIT_DEFAULTS"),
            commented_out=True,
        )
    if task_cls.scratch_style:
        lines += section(
            "only with model: {from_scratch: SIZE}: the tokenizer built for the new model",
            "tokenizer",
            scratch.TOKENIZER_DEFAULTS,
            source_comments(scratch, "TOKENIZER_DEFAULTS"),
            commented_out=True,
        )
    lines += [
        "",
        f"output_dir: runs/{task_name}",
        f"{'overwrite: false':<{COMMENT_COLUMN - 1}} # true (or --overwrite) replaces a finished run there",
    ]
    return "\n".join(lines) + "\n"
