"""Hugging Face datasets as data sources: a hub id or a local dataset folder, read by ``datasets`` itself.

``data.dataset`` is what ``datasets.load_dataset`` takes as its path: a hub id (``stanfordnlp/sst2``), a
folder laid out like a hub dataset repository (data files, optionally a README.md whose YAML header has
``configs:``), or a ``save_to_disk`` folder. ``data.config`` is the configuration (load_dataset's ``name``),
``data.revision`` pins a hub branch, tag or commit, and ``data.splits`` maps llmkit's roles to the
dataset's splits, slices included (``{train: "train[:10%]", validation: validation}``).

Offline, a hub dataset already in the ``datasets`` cache loads from there; one that is not is a one-line
error (fast with ``HF_HUB_OFFLINE=1``: nothing is retried). Loading scripts never run unless the recipe
sets ``data.trust_remote_code`` (and datasets 4 and later run none at all).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError
from llmkit.core.paths import looks_like_path
from llmkit.core.progress import interactive, log, quiet_library_progress, timed_step

if TYPE_CHECKING:
    from datasets import Dataset

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
#: Shown with every "cannot read this dataset" error: the other way to give data.
FILES_HINT = "or give local files instead: data.train=path/to/train.csv (data.validation=..., data.test=...)"


@dataclass(frozen=True)
class HubSource:
    """Where one split's rows came from: the dataset, its config and revision, and the split expression."""

    dataset: str  # hub id or local folder, as the recipe names it
    split: str  # the split expression read, e.g. "train[:10%]"
    config: str | None = None
    revision: str | None = None  # as the recipe pinned it
    commit: str | None = None  # the hub commit the rows were read at (None for local folders)
    local: bool = False  # a folder on this machine, not a hub id

    def describe(self) -> str:
        """E.g. "stanfordnlp/sst2 (config default, revision main) split 'train[:10%]'"."""
        details = [f"config {self.config}"] if self.config else []
        details += [f"revision {self.revision}"] if self.revision else []
        named = self.dataset + (f" ({', '.join(details)})" if details else "")
        return f"{named} split '{self.split}'"

    def record(self) -> dict[str, Any]:
        """The source as the run's manifest keeps it."""
        return {key: value for key, value in asdict(self).items() if value not in (None, False)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> HubSource:
        fields = cls.__dataclass_fields__
        return cls(**{key: value for key, value in record.items() if key in fields})


@dataclass
class DatasetSplit:
    """One role's rows read from a dataset, where they came from, and a file holding them (for cache keys)."""

    dataset: Dataset
    source: HubSource
    file: Path


def hub_dataset_ids(sources: Iterable[dict[str, Any]]) -> list[str]:
    """The hub ids among a run's data sources (a model card's ``datasets:``), in order, once each."""
    ids = [source["dataset"] for source in sources if source.get("dataset") and not source.get("local")]
    return list(dict.fromkeys(ids))


def read_dataset_splits(data: dict[str, Any], roles: Iterable[str]) -> dict[str, DatasetSplit]:
    """Each role's rows from ``data.dataset``; ``roles`` are those the recipe gives no file for.

    A role comes from ``data.splits`` when it names one (null: not read); without it, train reads the
    split ``train`` and validation the split ``validation`` where the dataset has one (else it is carved
    from train, as for files). A test split is read only when ``data.splits.test`` names it.
    """
    name = data["dataset"]
    reader = open_dataset(data)
    wanted = split_expressions(data.get("splits"), list(reader.splits), roles)
    if "train" in roles and "train" not in wanted:
        raise LlmkitError(
            f"data.splits.train is null; name the split to train on (dataset {name} has splits "
            f"{', '.join(reader.splits)})"
        )
    splits = {}
    for role, expression in wanted.items():
        dataset = reader.read(role, expression)
        if role == "test":
            dataset = without_hidden_labels(dataset)
        source = HubSource(
            dataset=name,
            split=expression,
            config=data.get("config"),
            revision=data.get("revision"),
            commit=reader.commit,
            local=reader.local,
        )
        if len(dataset) == 0:
            raise LlmkitError(
                f"data.dataset {source.describe()} has no rows; set data.splits.{role} to another split"
            )
        splits[role] = DatasetSplit(dataset, source, backing_file(dataset, reader.folder))
    return splits


def split_expressions(
    mapping: dict[str, Any] | None, available: list[str], roles: Iterable[str]
) -> dict[str, str]:
    """Role -> split expression: ``data.splits``, else train and (where the dataset has one) validation."""
    given = mapping or {}
    wanted = {}
    for role in roles:
        if role in given:
            if given[role]:
                wanted[role] = str(given[role])
        elif role == "train" or (role == "validation" and "validation" in available):
            wanted[role] = role
    return wanted


def split_names(expression: str) -> list[str]:
    """The split names an expression reads: 'train[:10%]+validation' -> ['train', 'validation']."""
    return [part.split("[", 1)[0].strip() for part in expression.split("+")]


def without_hidden_labels(dataset: Dataset) -> Dataset:
    """Drop ClassLabel columns that are all -1: the hub's way of hiding test labels (GLUE, SST-2)."""
    from datasets import ClassLabel

    hidden = [
        column
        for column, feature in dataset.features.items()
        if isinstance(feature, ClassLabel) and len(dataset) and all(v == -1 for v in dataset[column])
    ]
    return dataset.remove_columns(hidden) if hidden else dataset


def backing_file(dataset: Dataset, folder: Path | None) -> Path:
    """A file holding the rows: llmkit's tokenization cache keys on its path, size and time."""
    files = [Path(entry["filename"]) for entry in dataset.cache_files]
    if files:
        return files[0]
    if folder is not None:
        return folder
    raise LlmkitError("data.dataset: the rows were read into memory only; llmkit needs them in a cache file")


# -- opening a dataset ---------------------------------------------------------------------------------
@dataclass
class DatasetReader:
    """An opened dataset: its splits with their row counts, and a way to read a split expression."""

    name: str
    splits: dict[str, int]
    read_expression: Callable[[str], Dataset]
    commit: str | None = None
    local: bool = False
    folder: Path | None = None

    def read(self, role: str, expression: str) -> Dataset:
        """The rows of ``expression``; an unknown split lists the dataset's splits."""
        for split in split_names(expression):
            if split not in self.splits:
                raise LlmkitError(
                    f"data.splits.{role}: dataset {self.name} has no split '{split}'; its splits are: "
                    f"{', '.join(self.splits)}; set data.splits.{role}=<one of them>"
                )
        try:
            return self.read_expression(expression)
        except (ValueError, AssertionError) as exc:
            raise LlmkitError(
                f"data.splits.{role}: '{expression}' is not a split expression ({_first_line(exc)}); "
                f"write e.g. train, train[:10%], train[100:200] or train+validation"
            ) from None


def open_dataset(data: dict[str, Any]) -> DatasetReader:
    """Open ``data.dataset``: a save_to_disk folder directly, anything else through ``datasets``' loader."""
    name = data["dataset"]
    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            what = "is a file" if folder.exists() else "does not exist"
            raise LlmkitError(
                f"data.dataset: {folder} {what}; give a dataset folder or a hub id (owner/name), "
                f"or give a file as data.train=... (relative to {Path.cwd()})"
            )
        if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
            return _saved_dataset(name, folder, data)
        if data.get("revision"):
            raise LlmkitError(f"data.revision pins a hub revision; {folder} is a local folder: remove it")
    elif not HUB_ID.match(name):
        raise LlmkitError(
            f"data.dataset: '{name}' is neither a folder nor a hub dataset id "
            f"(owner/name, e.g. stanfordnlp/sst2)"
        )
    with timed_step(f"reading dataset {name}"), _quiet_datasets() as problems:
        builder = _prepared_builder(data, problems)
    commit = None if looks_like_path(name) else builder.hash
    if type(builder).__module__.startswith("datasets.packaged_modules.cache"):
        _check_cached_revision(name, data.get("revision"), commit)
        log(f"dataset {name}: the Hugging Face Hub was not reached; using its copy in the datasets cache")
    splits = {split: info.num_examples for split, info in (builder.info.splits or {}).items()}
    return DatasetReader(
        name=name,
        splits=splits,
        read_expression=lambda expression: builder.as_dataset(split=expression),
        commit=commit if commit and COMMIT.match(commit) else None,
        local=looks_like_path(name),
    )


def _prepared_builder(data: dict[str, Any], problems: list[str]) -> Any:
    """``load_dataset_builder`` + ``download_and_prepare``; every failure becomes a one-line error.

    ``problems`` collects datasets' own error messages, which name the file a failure came from.
    """
    import datasets
    from datasets import load_dataset_builder

    name, config, revision = data["dataset"], data.get("config"), data.get("revision")
    path = str(Path(name).expanduser()) if looks_like_path(name) else name
    options: dict[str, Any] = {"revision": revision} if revision else {}
    if scripts_supported():
        options["trust_remote_code"] = bool(data.get("trust_remote_code"))
    try:
        builder = load_dataset_builder(path, config, **options)
        builder.download_and_prepare()
    except LlmkitError:
        raise
    except Exception as exc:
        raise _load_error(name, config, exc, datasets.__version__, problems) from None
    return builder


def _load_error(
    name: str, config: str | None, exc: Exception, version: str, problems: list[str]
) -> LlmkitError:
    """Say what went wrong loading a dataset, and what to do, in one line."""
    from datasets.exceptions import DataFilesNotFoundError, DatasetGenerationError, DatasetNotFoundError

    message = _first_line(exc)
    if isinstance(exc, ConnectionError):
        offline = " (offline mode: HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)" if hub_offline() else ""
        return LlmkitError(
            f"data.dataset: the Hugging Face dataset '{name}' is not in the datasets cache and the Hub "
            f"can't be reached{offline}; run once with a network to cache it, {FILES_HINT}"
        )
    if "scripts are no longer supported" in message:
        return LlmkitError(
            f"data.dataset {name} is built by a loading script, which datasets {version} no longer runs; "
            f"read the Hub's Parquet export (data.revision=refs/convert/parquet) {FILES_HINT}"
        )
    if "trust_remote_code" in message:
        return LlmkitError(
            f"data.dataset {name} runs Python code (a loading script) to build itself; set "
            f"data.trust_remote_code=true if you trust it, {FILES_HINT}"
        )
    if isinstance(exc, DatasetNotFoundError):
        return LlmkitError(f"data.dataset {name}: {message}; check the id and data.revision, {FILES_HINT}")
    if isinstance(exc, ValueError) and ("BuilderConfig" in message or "Config name is missing" in message):
        configs = _config_names(name)
        wanted = f"has no config '{config}'" if config else "has several configs"
        listed = f"its configs are: {', '.join(configs)}" if configs else message
        return LlmkitError(f"data.config: dataset {name} {wanted}; {listed}; set data.config=<one of them>")
    if isinstance(exc, (DataFilesNotFoundError, FileNotFoundError)):
        return LlmkitError(
            f"data.dataset {name}: {message}; a dataset folder holds data files (CSV, JSON, Parquet, ...), "
            f"optionally with a README.md whose YAML header lists `configs:`"
        )
    if isinstance(exc, DatasetGenerationError):  # a data file that does not parse: datasets logged which
        detail = problems[-1] if problems else _first_line(exc.__cause__ or exc)
        return LlmkitError(f"data.dataset {name}: cannot be read ({detail}); check its data files")
    return LlmkitError(f"data.dataset {name}: cannot be read ({type(exc).__name__}: {message})")


def _check_cached_revision(name: str, revision: str | None, commit: str | None) -> None:
    """Offline, datasets takes the latest cached copy whatever the revision: refuse another commit."""
    if revision and COMMIT.match(revision) and commit and not commit.startswith(revision):
        raise LlmkitError(
            f"data.revision: the cached copy of dataset {name} is commit {commit[:12]}, not {revision}; run "
            f"once with a network to fetch that revision, {FILES_HINT}"
        )


def _config_names(name: str) -> list[str]:
    from datasets import get_dataset_config_names

    try:
        return list(get_dataset_config_names(str(Path(name).expanduser()) if looks_like_path(name) else name))
    except Exception:
        return []


def _saved_dataset(name: str, folder: Path, data: dict[str, Any]) -> DatasetReader:
    """A ``save_to_disk`` folder: a DatasetDict's splits by name, a single Dataset as the split 'train'."""
    from datasets import DatasetDict, ReadInstruction, concatenate_datasets, load_from_disk

    loaded = load_from_disk(str(folder))
    parts = dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}
    sizes = {split: len(dataset) for split, dataset in parts.items()}

    def read(expression: str) -> Dataset:
        pieces = [
            parts[step.splitname].select(range(step.from_, step.to))
            for step in ReadInstruction.from_spec(expression).to_absolute(sizes)
        ]
        return pieces[0] if len(pieces) == 1 else concatenate_datasets(pieces)

    for key in ("config", "revision"):
        if data.get(key):
            raise LlmkitError(
                f"data.{key}: {folder} is a save_to_disk folder, which has no {key}; remove data.{key}"
            )
    return DatasetReader(name=name, splits=sizes, read_expression=read, local=True, folder=folder)


# -- environment ---------------------------------------------------------------------------------------
def scripts_supported() -> bool:
    """datasets before 4.0 run a dataset's loading script (with trust_remote_code); 4.0 and later cannot."""
    import datasets

    return int(datasets.__version__.split(".", 1)[0]) < 4


def hub_offline() -> bool:
    return any(
        os.environ.get(variable, "").lower() in ("1", "true", "yes", "on")
        for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@contextmanager
def _quiet_datasets() -> Iterator[list[str]]:
    """datasets' log lines (warnings, errors) are held back: llmkit says what matters in its own one line.

    Yields the error messages datasets logged, for that line (they name the file that failed).
    """
    import logging

    from datasets.utils import logging as datasets_logging

    problems: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            problems.append(_first_line(Exception(record.getMessage())))

    library = logging.getLogger("datasets")
    handlers, verbosity = library.handlers[:], datasets_logging.get_verbosity()
    library.handlers = [Collect(level=logging.ERROR)]
    datasets_logging.set_verbosity_error()
    try:
        with quiet_library_progress(keep_datasets_bars=interactive()):
            yield problems
    finally:
        library.handlers = handlers
        datasets_logging.set_verbosity(verbosity)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
