"""A Hugging Face model card (README.md) for a run's output folder.

YAML front matter the hub reads (library_name, pipeline_tag, base_model, tags, metrics), then what the
model is, how to load it with ``transformers.pipeline``, its data, hyperparameters and results, in the
layout of the cards the Trainer writes. Built from the run's files only (see ``llmkit.runs.report``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

from llmkit.core.markdown import format_value, table
from llmkit.data.hub import hub_dataset_ids
from llmkit.models.resolve import hub_id
from llmkit.runs.folder import RunRecord, describe_data_source, headline_metric, quality_metrics

if TYPE_CHECKING:
    from pathlib import Path

    from llmkit.tasks import Task

#: Usage inputs when the run recorded no sample (MASK is replaced by the tokenizer's mask token).
DEFAULT_INPUTS = {
    "text-classification": "I really enjoyed this.",
    "fill-mask": "The weather is MASK today.",
    "text-generation": "Once upon a time",
    "summarization": "Write a long text here; the model returns a short summary of it.",
}
#: Tasks whose folders are sentence-transformers models: loaded with SentenceTransformer, not a pipeline.
SENTENCE_TRANSFORMERS_TASKS = ("embedding",)
#: Extra pipeline-call arguments per pipeline task, so the snippet behaves well out of the box.
CALL_OPTIONS = {"text-generation": ", max_new_tokens=64", "summarization": ", max_new_tokens=64"}


def sentence_transformers_usage(folder: str, sample: str) -> list[str]:
    """The usage of a sentence-transformers folder: embed a sample's two texts, print their similarity."""
    texts = [text.strip() for text in sample.split(" / ", 1)]
    texts = texts if len(texts) == 2 else [sample, sample]
    return [
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{folder}")',
        f"embeddings = model.encode({texts!r})",
        "print(model.similarity(embeddings[:1], embeddings[1:]))  # cosine similarity",
        "```",
        "",
    ]


def model_name(run: RunRecord) -> str:
    return run.model_name


def front_matter(run: RunRecord, task_cls: type[Task]) -> dict[str, Any]:
    base = None if run.pretraining else hub_id(model_name(run))
    metrics = sorted(
        {
            key.split("_", 1)[1]
            for key in quality_metrics(run.metrics)
            if key.startswith(("eval_", "test_")) and not key.startswith("eval_before_")
        }
        - {"loss"}
    )
    adapter = adapter_settings(run)
    library = "peft" if adapter else "transformers"
    if task_cls.name in SENTENCE_TRANSFORMERS_TASKS:
        library = "sentence-transformers"
    matter: dict[str, Any] = {"library_name": library, "pipeline_tag": task_cls.pipeline_task}
    if base:
        matter["base_model"] = base
    matter["tags"] = ["llmkit", task_cls.name, *(["lora"] if adapter else []), "generated_from_trainer"]
    datasets = hub_dataset_ids((run.manifest.get("data_sources") or {}).values())
    if datasets:
        matter["datasets"] = datasets
    if metrics:
        matter["metrics"] = metrics
    return matter


def usage_input(run: RunRecord, task_cls: type[Task]) -> Any:
    """The example the usage snippet passes: a recorded sample's input, else a default for the task."""
    samples = run.stats.get("samples") or []
    text = samples[0]["input"] if samples and samples[0].get("input") else None
    if text is None:
        text = DEFAULT_INPUTS.get(task_cls.pipeline_task, "Some input text.")
        if task_cls.pipeline_task == "fill-mask":
            text = text.replace("MASK", tokenizer_setting(run, "mask_token") or "[MASK]")
    text = text if len(text) <= 300 else text[:300]
    if task_cls.pipeline_task == "text-generation" and has_chat_template(run):
        return [{"role": "user", "content": text}]
    return text


def tokenizer_setting(run: RunRecord, key: str) -> Any:
    path = run.output_dir / "tokenizer_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None
    return value.get("content") if isinstance(value, dict) else value


def has_chat_template(run: RunRecord) -> bool:
    return (run.output_dir / "chat_template.jinja").exists() or bool(tokenizer_setting(run, "chat_template"))


def render_model_card(run: RunRecord, task_cls: type[Task], plots: list[Path]) -> str:
    recipe, name = run.recipe, model_name(run)
    base = None if run.pretraining else hub_id(name)
    origin = f"[{base}](https://huggingface.co/{base})" if base else f"`{name}`"
    data = recipe.get("data") or {}
    rows = (run.stats.get("data") or {}).get("rows") or run.manifest.get("rows") or {}
    sources = run.manifest.get("data_sources") or {}
    train_data = training_data_name(data, sources.get("train"))
    scores = quality_metrics(run.metrics)
    held_out = {key: value for key, value in scores.items() if key.startswith(("eval_", "test_"))}

    lines = ["---", yaml.safe_dump(front_matter(run, task_cls), sort_keys=False).rstrip(), "---", ""]
    lines += [f"# {run.name}", ""]
    how = "fine-tuned"
    if run.pretraining:
        built = run.pretraining
        size = (
            f"{built['layers']} layers, width {built['width']}, {built['parameters'] / 1e6:.1f}M parameters"
        )
        origin += f" ({size})"
        trained = (built.get("tokenizer") or {}).get("trained")
        how = "pre-trained from scratch" + (" (its tokenizer trained on the same data)" if trained else "")
    if student := run.stats.get("student"):
        kept = ", ".join(str(n) for n in student["layers"])
        origin += f" (layers {kept} of its {student['source_layers']})"
    if distilled := run.stats.get("distillation"):
        settings = f"alpha {distilled['alpha']:g}, temperature {distilled['temperature']:g}"
        how += f" by distilling `{distilled['teacher']}` ({settings})"
    lines += [
        f"A {task_cls.pipeline_task} model: {origin} {how} with llmkit "
        f"(task `{task_cls.name}`) on {train_data} ({rows.get('train', '?')} training rows).",
        "",
    ]
    if held_out:
        lines += ["Results on the held-out data:", ""]
        lines += [f"- {key}: {format_value(value)}" for key, value in held_out.items()]
        lines.append("")

    folder = run.recipe.get("output_dir", ".")
    if task_cls.name in SENTENCE_TRANSFORMERS_TASKS:
        lines += sentence_transformers_usage(folder, usage_input(run, task_cls))
    else:
        lines += ["## Usage", "", "```python", "from transformers import pipeline", ""]
        lines.append(f'pipe = pipeline("{task_cls.pipeline_task}", model="{folder}"{pipeline_options(run)})')
        options = CALL_OPTIONS.get(task_cls.pipeline_task, "")
        lines += [f"print(pipe({usage_input(run, task_cls)!r}{options}))", "```", ""]

    lines += adapter_lines(run)
    lines += ["## Training data", ""]
    lines += table(
        ["split", "source", "rows"],
        [[role, split_source(data, sources, role), count] for role, count in rows.items()],
    )
    summary = (run.stats.get("data") or {}).get("summary") or []
    lines += ["", *[f"- {line}" for line in summary], ""]

    lines += ["## Training procedure", "", "### Training hyperparameters", ""]
    training = dict(recipe.get("training") or {})
    lines += [f"- {key}: {value}" for key, value in training.items()]
    lines += [f"- processes: {run.manifest.get('world_size', 1)}", ""]

    # one row per evaluated step: the evaluation after training repeats the last step's
    by_step = {entry.get("step"): entry for entry in run.log_history or [] if "eval_loss" in entry}
    evals = list(by_step.values())
    if evals:
        metric_name = headline_metric(run, task_cls)
        metric_key = f"eval_{metric_name}"
        header = ["step", "epoch", "training loss", "validation loss"]
        show_metric = metric_key != "eval_loss" and any(metric_key in entry for entry in evals)
        header += [metric_name] if show_metric else []
        rows_out = []
        for entry in evals:
            train_loss = last_training_loss(run.log_history or [], entry.get("step", 0))
            row = [
                entry.get("step", ""),
                format_value(entry.get("epoch", "")),
                train_loss,
                format_value(entry["eval_loss"]),
            ]
            rows_out.append(row + ([format_value(entry.get(metric_key, ""))] if show_metric else []))
        lines += ["### Training results", "", *table(header, rows_out), ""]
    for path in plots:
        if path.stem == "loss":
            lines += [f"![loss](plots/{path.name})", ""]
    lines += [
        "### Reproduce",
        "",
        "`recipe.yaml` in this folder is the resolved recipe: `llmkit finetune recipe.yaml output_dir=...`; "
        "`report.md` has the full run report.",
        "",
    ]
    versions = run.manifest.get("versions") or {}
    if versions:
        lines += ["### Framework versions", ""]
        lines += [f"- {package}: {version}" for package, version in versions.items() if version]
        lines.append("")
    return "\n".join(lines)


def training_data_name(data: dict[str, Any], source: dict[str, Any] | None) -> str:
    """The training data in the card's first sentence: a linked hub dataset, a dataset folder or a file."""
    if not source:
        return f"`{data.get('train', '?')}`"
    name = source["dataset"]
    if source.get("local"):
        return f"the dataset `{name}`"
    return f"[{name}](https://huggingface.co/datasets/{name})"


def split_source(data: dict[str, Any], sources: dict[str, Any], role: str) -> str:
    """A split's source in the card's data table: its file, its dataset split, or carved from train."""
    if role in sources:
        return describe_data_source(sources[role])
    return data.get(role) or "carved from train"


def last_training_loss(log_history: list[dict[str, Any]], step: int) -> str:
    """The last training loss logged at or before ``step`` ('no log' before the first one)."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry and entry.get("step", 0) <= step]
    return format_value(losses[-1]) if losses else "no log"


def adapter_settings(run: RunRecord) -> dict[str, Any] | None:
    """The run's ``peft:`` section (None: full fine-tuning)."""
    peft = run.recipe.get("peft")
    return peft if isinstance(peft, dict) else None


def pipeline_options(run: RunRecord) -> str:
    """Extra ``pipeline`` arguments an adapter folder needs: a classifier's label names.

    transformers builds the config of an adapter folder from its base, which has no labels, and its
    ``pipeline`` does not pass a ``config=`` on to the model: the labels go in through ``model_kwargs``.
    """
    if not adapter_settings(run):
        return ""
    path = run.output_dir / "model_config.json"
    try:
        id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label")
    except (OSError, ValueError):
        return ""
    if not id2label or all(str(label) == f"LABEL_{key}" for key, label in id2label.items()):
        return ""  # no head with named labels
    labels = {int(key): label for key, label in id2label.items()}
    return f", model_kwargs={{'id2label': {labels!r}}}"


def adapter_lines(run: RunRecord) -> list[str]:
    """The card's LoRA section: base, rank, trainable share, adapter size, and how to merge."""
    peft = adapter_settings(run)
    if not peft:
        return []
    adapter = run.stats.get("adapter") or {}
    lines = ["## Adapter", ""]
    lines.append(
        f"This folder holds a LoRA adapter (r={peft.get('r')}, alpha={peft.get('alpha')}, "
        f"target_modules={peft.get('target_modules')}), not a full copy of the model: transformers and "
        f"llmkit load it onto its base, `{model_name(run)}`, recorded in `adapter_config.json`."
    )
    trainable, total = adapter.get("trainable_parameters"), adapter.get("all_parameters")
    if trainable and total:
        lines.append(f"It trained {trainable:,} of {total:,} parameters ({trainable / total:.2%}).")
    if adapter.get("adapter_bytes"):
        lines.append(f"`adapter_model.safetensors` is {adapter['adapter_bytes'] / 1e6:.2f} MB.")
    lines += [
        "",
        f"A plain merged model folder: `llmkit merge {run.recipe.get('output_dir', '.')} --output DIR`.",
        "",
    ]
    return lines
