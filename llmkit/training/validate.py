"""`llmkit validate`: check a recipe against its data and model without training.

Prints what training would see: the splits, a few examples decoded as the model receives them (with
their labels or loss positions), token-length and truncation statistics, and task summaries such as the
label distribution. Every problem is the same one-line error `llmkit finetune` would give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.data.files import Split, load_splits
from llmkit.models.resolve import check_weights
from llmkit.recipe.loader import load_recipe
from llmkit.tasks import build_task
from llmkit.tasks.base import checked_splits
from llmkit.tasks.chat_checks import ChatExample, check_chat_examples, packing_fill, stop_token_ids

STATISTICS_ROWS = 5000  # token statistics come from at most this many training rows
CHAT_CHECK_ROWS = 200  # the chat checks render at most this many training rows


def validate(
    recipe: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    examples: int = 3,
    strict: bool = True,
) -> list[str]:
    """Return the report's lines; raise LlmkitError on the first problem.

    Chat recipes (generation on instruction/chat data, decoder-only summarization, preference) also get
    the pre-flight chat checks (``llmkit.tasks.chat_checks``); a failed one is an error, or with
    ``strict=False`` a ``warning:`` line.
    """
    import numpy as np

    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import load_tokenizer
    from llmkit.training.arguments import check_machine_settings
    from llmkit.training.distillation import read_unlabelled, teacher_for
    from llmkit.training.spine import model_folder

    resolved = load_recipe(recipe, overrides)
    task = build_task(resolved.task, resolved.data, resolved.options)
    check_machine_settings(resolved, task)  # what finetune refuses on this machine (fp16 on a CPU)
    splits = load_splits(resolved.data, seed=resolved.training["seed"])
    checked_splits(task, splits, resolved.data, resolved.task)  # logs what the fixes and data.shots drop
    model_path = model_folder(resolved, task, splits)  # the recipe's model, or one built from scratch
    task.check_model(model_path)
    check_weights(model_path, resolved.model_options["allow_pickle"])
    tokenizer = load_tokenizer(model_path, trust_remote_code=resolved.model_options["trust_remote_code"])
    teacher = teacher_for(resolved, task, tokenizer)  # found, with the data's labels and the vocabulary
    read_unlabelled(resolved, task)  # data.unlabelled: read, its text columns checked
    task.prepare_tokenizer(tokenizer)

    lines = [
        f"recipe {resolved.source}: valid",
        f"task {resolved.task}, model {resolved.model} ({model_path})",
    ]
    if teacher is not None:
        settings = resolved.distill
        lines.append(
            f"teacher {settings['teacher']} ({teacher}): the same labels and vocabulary; alpha "
            f"{settings['alpha']:g}, temperature {settings['temperature']:g}"
        )
    lines += data_source_lines(resolved.data, splits)
    lines += task.data_summary(splits)

    train = splits["train"].dataset
    rows = train.select(range(min(CHAT_CHECK_ROWS, len(train)))).to_list()
    with quiet_library_progress():
        chat = task.chat_examples(rows, tokenizer)  # before encoding: a template that fails says why first
    if chat:
        lines += chat_check_lines(chat, tokenizer, model_path, strict)
    with quiet_library_progress():
        sample = task.encode(train.select(range(min(STATISTICS_ROWS, len(train)))), tokenizer)
    lengths = np.array(task.example_lengths(sample))
    limit = task.length_limit()
    lines.append(
        f"tokens per example (first {len(lengths)} training examples): mean {lengths.mean():.1f}, "
        f"median {np.median(lengths):.0f}, p95 {np.percentile(lengths, 95):.0f}, max {lengths.max()}; "
        + limit.describe(int(limit.counted(lengths).sum()), len(lengths))
    )
    collate = task.collator(tokenizer)
    for number in range(min(examples, len(sample))):
        lines.append(f"example {number + 1}:")
        lines += [f"  {line}" for line in task.describe_example(collate([sample[number]]), tokenizer)]
    fill = packing_fill(sample, resolved.data["max_length"])
    if fill:
        lines.append(fill)
    return lines


def chat_check_lines(chat: list[ChatExample], tokenizer, model_path: Path, strict: bool) -> list[str]:
    """The chat checks' report; the first failure raises (strict) or every failure is a warning line."""
    report = check_chat_examples(chat, tokenizer, stop_token_ids(tokenizer, model_path))
    if report.failures and strict:
        more = f" (and {len(report.failures) - 1} more failed check(s))" if len(report.failures) > 1 else ""
        raise LlmkitError(
            f"chat check failed: {report.failures[0]}{more}; `llmkit validate --no-strict` shows every result"
        )
    lines = [f"chat checks (first {len(chat)} training sequences):"]
    lines += [f"  {line}" for line in report.lines]
    lines += [f"  warning: {failure}" for failure in report.failures]
    return lines


def data_source_lines(data: dict[str, Any], splits: dict[str, Split]) -> list[str]:
    """Where each split's rows come from: a file, a stream, or a dataset's split (with its hub commit)."""
    lines = []
    streamed = "train" in splits and splits["train"].stream is not None
    for role, split in splits.items():
        commit = f", commit {split.hub.commit[:12]}" if split.hub and split.hub.commit else ""
        source = f"dataset {split.location}" if split.hub else split.location
        if split.stream is not None:
            held = (
                f", after the {split.stream.skip} rows held out for validation" if split.stream.skip else ""
            )
            lines.append(
                f"{role}: streamed from {source}{held} (data.streaming: its first {len(split.dataset)} rows "
                f"are checked here, every row as training reads it)"
            )
            continue
        carved = ""
        if split.carved:
            carved = " (the head of the training stream)" if streamed else " (carved from train)"
        lines.append(f"{role}: {len(split.dataset)} rows from {source}{commit}{carved}")
    if data.get("dataset") and not any(split.hub for split in splits.values()):
        lines.append(f"data.dataset {data['dataset']} is not read: data.train gives the training file")
    return lines
