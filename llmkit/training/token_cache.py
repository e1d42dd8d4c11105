"""The tokenization cache: a split encoded once per (task settings, rows, tokenizer, llmkit code) and reused.

The key covers everything that decides the encodings; entries are staged in a hidden folder named after the
key and the writing process, then renamed, so a killed run leaves no half entry (stale staging is removed
once its process is gone). A cache folder that cannot be written is used read-only, and said once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmkit.core.devices import is_main_process
from llmkit.core.digests import files_digest
from llmkit.core.paths import PACKAGE_DIR
from llmkit.core.progress import log
from llmkit.core.versions import library_versions
from llmkit.data.files import Split
from llmkit.models.resolve import WEIGHT_SUFFIXES, cache_dir
from llmkit.recipe.loader import Recipe
from llmkit.tasks import Task

TOKENIZED_DIR = "tokenized"

#: Data keys that name files: their rows are in the key (``rows``), not their paths.
FILE_KEYS = ("train", "validation", "test", "unlabelled")

#: ``.{key}-{pid}``: a cache entry being written by process ``pid`` (renamed into place when whole).
CACHE_STAGING = re.compile(r"^\.([0-9a-f]{20})-(\d+)$")

#: A staging folder this old is left over even if its process id is in use again.
STALE_STAGING_SECONDS = 24 * 3600


def encode_cached(
    task: Task, split: Split, tokenizer, model_path: Path, recipe: Recipe, args, rows: str | None = None
) -> Any:
    """Tokenize a split once: the main process encodes and saves it, other processes (and reruns) load it.

    ``rows`` is the split's :func:`rows_digest` when the caller has it. A cache that cannot be read or
    written costs time, never the run.
    """
    key = tokenized_cache_key(task, split, model_path, recipe, rows or rows_digest(split.dataset))
    folder = cache_dir() / TOKENIZED_DIR / key
    with args.main_process_first(desc=f"tokenizing {split.role}"):
        cached = load_cached(folder)
        if cached is not None:
            return cached
        encoded = task.encode(split.dataset, tokenizer)
        if is_main_process():
            save_to_cache(encoded, folder)
        return encoded


def tokenized_cache_key(task: Task, split: Split, model_path: Path, recipe: Recipe, rows: str) -> str:
    """A digest of everything that determines a split's encoded rows.

    The rows themselves (after carving and filtering), the task with its data settings and what it
    derived from other splits (e.g. the label list of the training split), every tokenizer file, the
    tokenizer libraries' versions, and llmkit's version and source code.
    """
    import llmkit

    identity = {
        "rows": rows,
        "seed": recipe.training["seed"],
        "task": task.name,
        "data": {k: v for k, v in recipe.data.items() if k not in FILE_KEYS},
        "derived": task.encoding_state(),
        "tokenizer": tokenizer_files_digest(model_path),
        "libraries": library_versions(("transformers", "tokenizers", "datasets")),
        "version": llmkit.__version__,
        "code": package_code_digest(),  # an edited encoder (an editable install) must not reuse old rows
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:20]


def split_digest(split: Split) -> str:
    """:func:`rows_digest` of the split's rows; for a stream, of its first rows and the file's signature."""
    digest = rows_digest(split.dataset)
    if split.stream is None:
        return digest
    return hashlib.sha256(f"{digest} {split.stream.signature()}".encode()).hexdigest()[:20]


def rows_digest(dataset) -> str:
    """A digest of a dataset's rows: its Arrow table and the indices that pick rows from it (carving,
    subsets, skipped rows). Hashing the picked rows one by one instead takes seconds per split."""
    digest = hashlib.sha256(json.dumps(dataset.features.to_dict(), sort_keys=True).encode())
    indices = getattr(dataset, "_indices", None)
    for table in (dataset.data, *([indices] if indices is not None else [])):
        for batch in table.to_batches():
            digest.update(batch.serialize())
    return digest.hexdigest()[:20]


def tokenizer_files_digest(model_path: Path) -> str:
    """A digest of every file in the model folder but the weights: tokenizer.json, tokenizer_config.json,
    chat_template.jinja, vocabularies, special tokens -- whatever the tokenizer is loaded from."""
    extra = model_path / "additional_chat_templates"
    files = [p for p in model_path.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES]
    if extra.is_dir():
        files += [p for p in extra.iterdir() if p.is_file()]
    return files_digest(files, relative_to=model_path)


def load_cached(folder: Path) -> Any:
    """The encoded split saved in ``folder``, or None when there is none (or it cannot be read)."""
    from datasets import load_from_disk

    if not (folder / "dataset_info.json").exists():
        return None
    try:
        return load_from_disk(str(folder))
    except Exception:  # a damaged entry is encoded again, as if it were not there
        return None


#: Cache folders a write already failed in (this process warns once for each).
_UNWRITABLE_CACHES: set[Path] = set()


def save_to_cache(encoded: Any, folder: Path) -> None:
    """Save an encoded split under a staging name, then rename it into place (:func:`save_entry`)."""
    save_entry(
        folder,
        lambda staging: encoded.save_to_disk(str(staging)),
        "dataset_info.json",
        "the tokenization cache",
        "to keep encoded splits for reruns",
    )


def save_entry(folder: Path, write: Callable[[Path], None], marker: str, what: str, why: str) -> bool:
    """Write a cache entry into a staging folder (``write(staging)``), then rename it into place when whole.

    ``write`` creates the folder it is given; ``marker`` is the file a whole entry has. A failure (read-only
    home, full disk, LLMKIT_CACHE under a file) is one warning, and the run goes on without the entry;
    leftovers of killed runs are cleared on the way. True when the entry is in place (written here or by
    another run).
    """
    staging = folder.with_name(f".{folder.name}-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(folder.parent)
        write(staging)
        staging.rename(folder)
        return True
    except Exception as exc:  # any failure of an optional cache must not fail the run
        shutil.rmtree(staging, ignore_errors=True)
        if (folder / marker).exists():
            return True  # another run saved it first
        if folder.parent not in _UNWRITABLE_CACHES:
            _UNWRITABLE_CACHES.add(folder.parent)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log(
                f"warning: cannot write {what} in {folder.parent} ({reason}); going on without it (set "
                f"LLMKIT_CACHE to a writable folder {why})"
            )
        return False


def remove_stale_staging(tokenized: Path) -> None:
    """Remove cache entries left half-written by killed runs: llmkit's ``.{key}-{pid}`` folders whose
    process is gone, or that are older than a day (the id may be in use again)."""
    now = time.time()
    for child in tokenized.iterdir():
        match = CACHE_STAGING.match(child.name)
        if not match or not child.is_dir() or int(match.group(2)) == os.getpid():
            continue
        try:
            stale = now - child.stat().st_mtime > STALE_STAGING_SECONDS
        except OSError:
            continue  # removed meanwhile
        if stale or not process_alive(int(match.group(2))):
            shutil.rmtree(child, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Is process ``pid`` running on this machine? (Windows: assumed, signals would end it.)"""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@functools.cache
def package_code_digest() -> str:
    """A digest of llmkit's own source files, read once per process (the running code cannot change)."""
    package = PACKAGE_DIR
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:20]
