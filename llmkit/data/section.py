"""The recipe's ``data:`` section as the data layer reads it: the keys every task shares, with their
defaults, and the checks of where the rows come from (files or a hub dataset, split roles) and of streaming.

The recipe loader merges these defaults with the task's own, checks each key's type, then calls the checks
here once; a task's own keys are checked by the task.
"""

from __future__ import annotations

from typing import Any

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.data.audit import DEDUPLICATE_MODES
from llmkit.data.files import SPLIT_ROLES

#: Data keys every task understands; tasks add their column names and options.
COMMON_DATA_DEFAULTS: dict[str, Any] = {
    # CSV, TSV, JSON, JSONL, Parquet, TXT or save_to_disk folder; `sample:NAME`: a sample shipped with llmkit
    "train": None,
    "validation": None,  # optional: otherwise validation_split is carved from train
    "test": None,  # optional: with targets -> test_* metrics; without -> test_predictions.jsonl
    # A Hugging Face dataset instead of files (data.train, a file, wins): a hub id or a dataset folder.
    "dataset": None,
    "config": None,  # the dataset's configuration (load_dataset's `name`), e.g. sst2 of nyu-mll/glue
    "revision": None,  # a hub branch, tag or commit to pin
    "splits": None,  # role -> split, e.g. {train: "train[:10%]", test: test}; default train + validation
    "trust_remote_code": False,  # run a dataset's loading script (datasets < 4 only; later ones run none)
    "validation_split": 0.1,  # carved (seeded) from train when no validation file is given
    "max_length": 128,  # tokens per example; longer ones are truncated (batches are padded dynamically)
    "max_train_samples": None,  # only the first N training rows (quick experiments)
    "max_eval_samples": None,  # only the first N validation rows
    "max_test_samples": None,  # the test split is whole unless this is set (max_eval_samples is validation's)
    # drop repeated training rows, keeping the first: exact (the same normalised text) or near (MinHash
    # near duplicates, as `llmkit audit` finds them)
    "deduplicate": None,
    "drop_leaks": False,  # drop training rows whose normalised text is also a validation or test row
    "columns": None,  # names of a headerless CSV/TSV's columns, e.g. [label, title, text]
    "join_lists": None,  # join a text column's lists of strings with this, e.g. " "
    # read data.train lazily as training goes (.txt, .jsonl, .csv, .tsv): needs training.max_steps
    "streaming": False,
    "shuffle_buffer": 1000,  # streaming: examples are shuffled within a buffer of this many (0: file order)
}


def check_data_source(data: dict[str, Any], where: str) -> None:
    """Files (data.train) or a Hugging Face dataset (data.dataset, config, revision, splits) must be given."""
    if not data.get("train") and not data.get("dataset"):
        raise LlmkitError(
            f"{where}: data.train or data.dataset is required; give a file (data.train=path/to/train.csv) "
            f"or a Hugging Face dataset (data.dataset=stanfordnlp/sst2, a hub id or a dataset folder)"
        )
    for key in ("dataset", "config", "revision"):
        value = data[key]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise LlmkitError(f"{where}: data.{key} must be a string (quote it in YAML), got {value!r}")
    splits = data["splits"]
    if splits is None:
        return
    if not isinstance(splits, dict):
        raise LlmkitError(
            f"{where}: data.splits must be a mapping of roles to splits, "
            f"e.g. {{train: train, validation: test}}"
        )
    for role, split in splits.items():
        if role not in SPLIT_ROLES:
            raise LlmkitError(
                f"{where}: unknown key 'data.splits.{role}'{did_you_mean(str(role), SPLIT_ROLES)}; "
                f"the roles are: {', '.join(SPLIT_ROLES)}"
            )
        if split is not None and (not isinstance(split, str) or not split.strip()):
            raise LlmkitError(
                f"{where}: data.splits.{role} must be a split name or slice (e.g. train[:10%]), got {split!r}"
            )


def check_row_filters(data: dict[str, Any], where: str) -> None:
    """``data.deduplicate`` is exact, near or null; neither fix works on a stream (its rows are not read
    whole)."""
    mode = data["deduplicate"]
    if mode not in (None, False, *DEDUPLICATE_MODES):
        raise LlmkitError(
            f"{where}: data.deduplicate must be {' or '.join(DEDUPLICATE_MODES)} (or null), got {mode!r}"
        )
    if data["streaming"] and (mode or data["drop_leaks"]):
        setting = "data.deduplicate" if mode else "data.drop_leaks"
        raise LlmkitError(
            f"{where}: {setting} needs the training rows whole and does not work with data.streaming; "
            f"remove one of them"
        )


def check_streaming(
    data: dict[str, Any], max_steps: int, task_name: str, streaming_tasks: list[str], where: str
) -> None:
    """``data.streaming``: a task that can train on a stream, a number of steps, a valid shuffle buffer."""
    if not data["streaming"]:
        return
    if task_name not in streaming_tasks:
        raise LlmkitError(
            f"{where}: data.streaming does not work for task {task_name}, which reads its data whole "
            f"(tasks that stream: {', '.join(streaming_tasks)}); set data.streaming=false"
        )
    if max_steps <= 0:
        raise LlmkitError(
            f"{where}: data.streaming needs training.max_steps (a stream has no length to count epochs in); "
            f"set training.max_steps=N"
        )
    buffer = data["shuffle_buffer"]
    if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 0:
        raise LlmkitError(
            f"{where}: data.shuffle_buffer must be a number of examples (0: keep the file's order), got "
            f"{buffer!r}"
        )
