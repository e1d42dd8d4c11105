"""The teacher-logit cache (``distill.cache``): a teacher's outputs on the training rows, computed once.

Where a teacher's outputs on a training row never change -- classification (one output per row, every
problem type) and token classification (one per labelled token) -- ``llmkit.training.distillation`` computes
them in one pass over the training rows before the first step, saves them here, and reads each micro-batch's
from memory; a later run whose key matches does not load the teacher at all. Fill-mask (new random masks each
step) and generation keep running their teacher live on each batch.

The key covers everything that decides the outputs: the training rows as encoded (the tokenization cache's
keys, which cover the rows, the task with its data settings -- ``max_length``, truncation, labels -- the
tokenizer's files and llmkit's code), the teacher's files with their contents (weights and config; a LoRA
run's base model too), the dtype it loads in, the run's precision and the torch version. Entries live beside
the tokenization cache (``$LLMKIT_CACHE/teacher-logits/KEY``) and are written as it writes its own: staged,
renamed into place when whole, a failure one warning.

Rows find their outputs by a row number column (``ROW_COLUMN``) that the collator carries through any
shuffle, padding or length grouping: row ``r``'s outputs are ``logits[offsets[r]:offsets[r + 1]]``, in the
order in which ``item_logits`` takes a batch's items (token classification's are ragged: a row's labelled
tokens).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.core.digests import files_digest
from llmkit.core.versions import library_versions
from llmkit.data.files import Split
from llmkit.models.adaptation import adapter_base, is_adapter_folder
from llmkit.models.resolve import WEIGHT_SUFFIXES, cache_dir
from llmkit.recipe.loader import Recipe
from llmkit.tasks import Task
from llmkit.training.token_cache import save_entry, tokenized_cache_key

TEACHER_DIR = "teacher-logits"
LOGITS_FILE = "logits.safetensors"
#: The batch column that numbers a training row (0..rows-1), so that its cached outputs can be found.
ROW_COLUMN = "distill_row"


@dataclass
class TeacherOutputs:
    """A teacher's outputs on the training rows: ``logits`` [items, outputs] (float32, on the CPU) and
    ``offsets`` [rows + 1], row ``r``'s items being ``offsets[r]:offsets[r + 1]``."""

    logits: Any
    offsets: Any

    @property
    def rows(self) -> int:
        return int(self.offsets.numel()) - 1

    @property
    def nbytes(self) -> int:
        return self.logits.numel() * self.logits.element_size() + self.offsets.numel() * 8

    def for_rows(self, rows: Any) -> Any:
        """The items of ``rows`` (a tensor of row numbers), row after row, as ``item_logits`` orders them."""
        import torch

        rows = rows.long().cpu()
        starts, counts = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        first_of_each = torch.cumsum(counts, 0) - counts  # where each row's items begin in the answer
        index = torch.arange(int(counts.sum())) + torch.repeat_interleave(starts - first_of_each, counts)
        return self.logits[index]


def outputs_from_batches(logits: list[Any], counts: list[Any]) -> TeacherOutputs:
    """Batches of item logits in row order, with each row's item count, as one :class:`TeacherOutputs`."""
    import torch

    per_row = torch.cat(counts).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(per_row, 0)])
    return TeacherOutputs(torch.cat(logits).float().contiguous(), offsets)


def teacher_cache_folder(
    recipe: Recipe,
    task: Task,
    rows: list[tuple[Split, str]],
    model_path: Path,
    teacher_path: Path,
    precision: str,
) -> Path:
    """The cache entry of a teacher's outputs on the training rows: ``rows`` are the training splits (the
    labelled rows, then ``data.unlabelled``'s) with their :func:`rows_digest`, in the order they are trained
    on; ``model_path`` is the student's folder (its tokenizer encoded the rows)."""
    identity = {
        "rows": [tokenized_cache_key(task, split, model_path, recipe, digest) for split, digest in rows],
        "items": task.teacher_cache_items,
        "teacher": teacher_files_digest(teacher_path),
        "dtype": recipe.model_options["dtype"],
        "precision": precision,
        "libraries": library_versions(("torch",)),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:20]
    return cache_dir() / TEACHER_DIR / key


def teacher_files_digest(folder: Path) -> str:
    """A digest of the contents of the files the teacher's model is loaded from -- weights and configs --
    in its folder, and for an adapter (a LoRA run without a merged model) in the base model's folder too.
    A run folder's other files (reports, metrics) change nothing the teacher computes."""
    folders = [folder, *([adapter_base(folder)] if is_adapter_folder(folder) else [])]
    return "+".join(files_digest(model_files(each), relative_to=each) for each in folders)


def model_files(folder: Path) -> list[Path]:
    """A model folder's weight files and configs (config.json, adapter_config.json, ...)."""
    return [
        path
        for path in folder.iterdir()
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or path.name.endswith("config.json"))
    ]


def load_teacher_outputs(folder: Path, rows: int) -> TeacherOutputs | None:
    """The entry in ``folder`` if it is whole and has ``rows`` rows; None otherwise (a damaged entry is
    computed again, as if it were not there)."""
    from safetensors.torch import load_file

    if not (folder / LOGITS_FILE).exists():
        return None
    try:
        saved = load_file(str(folder / LOGITS_FILE))
        outputs = TeacherOutputs(saved["logits"], saved["offsets"])
    except Exception:
        return None
    return outputs if outputs.rows == rows else None


def save_teacher_outputs(outputs: TeacherOutputs, folder: Path) -> bool:
    """Save an entry (staged, then renamed into place); False when the cache cannot be written."""
    from safetensors.torch import save_file

    def write(staging: Path) -> None:
        staging.mkdir()
        save_file({"logits": outputs.logits, "offsets": outputs.offsets}, str(staging / LOGITS_FILE))

    return save_entry(
        folder, write, LOGITS_FILE, "the teacher-logit cache", "to keep a teacher's outputs for reruns"
    )


def entry_bytes(folder: Path) -> int:
    """The size of an entry's files on disk."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
