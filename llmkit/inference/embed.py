"""`llmkit embed` and `llmkit search`: sentence embeddings of a file's column, and a small search over one.

Any embedding model serves: a run of ``task: embedding`` (its saved settings, e.g. ``max_length``), a
sentence-transformers folder or alias (``minilm-l6``), or a plain encoder (mean pooling added); with no
model, the newest embedding run under ./runs. Vectors are the task's own (``EmbeddingTask.embed``): unit
length, so a dot product is the cosine similarity that training and evaluation score with. The search index
is the corpus column's vectors in memory, built on each call (a brute-force dot product: fine for some
hundred thousand passages on a CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.data.files import Split, column_values, read_split, require_text
from llmkit.tasks.embedding import EmbeddingTask

HOW_TO_MAKE_ONE = "llmkit finetune recipes/stsb-embedding.yaml"
#: The key ``embed`` adds to each row of a JSONL output.
EMBEDDING = "embedding"
OUTPUT_SUFFIXES = (".jsonl", ".npy")


@dataclass
class EmbeddingModel:
    """A loaded embedding model and the task settings it embeds with."""

    task: EmbeddingTask
    model: Any
    folder: Path

    def vectors(self, texts: list[str]) -> Any:
        return self.task.embed(self.model, texts)


def load_embedding_model(model: str | None) -> EmbeddingModel:
    """The model as it embeds: a run with its saved settings, any other folder with its own max length."""
    from llmkit.core.progress import quiet_library_progress
    from llmkit.inference.predict import folder_for_task, task_for_model
    from llmkit.models.resolve import check_weights, load_for_inference
    from llmkit.runs.folder import RECIPE_FILE

    task, folder = folder_for_task(model, "embedding", HOW_TO_MAKE_ONE)
    if (folder / RECIPE_FILE).exists():
        task = task_for_model(folder)
        if not isinstance(task, EmbeddingTask):
            raise LlmkitError(
                f"model folder {folder} was trained for {task.name}, not embedding; pass an embedding run, "
                f"a sentence-transformers folder or an encoder (e.g. -m minilm-l6)"
            )
    else:
        task.data["max_length"] = None  # keep the folder's own max_seq_length
    task.check_model(folder)
    with quiet_library_progress(errors_only=True):
        loaded = load_for_inference(task, folder, **check_weights(folder))
    return EmbeddingModel(task, loaded, folder)


def column_texts(path: Path, column: str, key: str) -> tuple[Split, list[str]]:
    """A file's rows and the texts of one of its columns (every one non-empty text)."""
    split = read_split("test", path, key)
    present = split.dataset.column_names
    if column not in present:
        raise LlmkitError(
            f"{split.origin}: no column '{column}' (--column); columns are: {', '.join(present)}; "
            f"pass --column <one of them>"
        )
    require_text(split, column, "column")
    return split, column_values(split.dataset, column)


def check_output(output: Path | None) -> None:
    """--output is .jsonl or .npy in a writable place; checked before the model loads."""
    from llmkit.inference.predict import check_output_file

    check_output_file(output, OUTPUT_SUFFIXES, "write .jsonl (each row + its embedding) or .npy (a matrix)")


def embed_file(model: str | None, input_path: Path, column: str, output: Path | None) -> tuple[int, int]:
    """Embed ``column`` of every row of ``input_path``; write a .npy matrix (a row per input row) or JSON
    lines (each row + ``embedding``) to ``output``, JSON lines to stdout without one. Returns (rows,
    dimensions)."""
    import sys

    import numpy as np

    check_output(output)
    split, texts = column_texts(input_path, column, "--input")
    if EMBEDDING in split.dataset.column_names and (output is None or output.suffix != ".npy"):
        raise LlmkitError(
            f"{split.origin} already has a column '{EMBEDDING}', which the embeddings are written to; rename "
            f"or drop that column, or write a .npy file"
        )
    embedder = load_embedding_model(model)
    vectors = np.asarray(embedder.vectors(texts), dtype=np.float32)
    if output is not None and output.suffix == ".npy":
        np.save(output, vectors)
        return vectors.shape
    lines = (
        json.dumps({**row, EMBEDDING: [round(float(x), 6) for x in vector]}, ensure_ascii=False, default=str)
        + "\n"
        for row, vector in zip(split.dataset.to_list(), vectors, strict=True)
    )
    if output is None:
        sys.stdout.writelines(lines)
    else:
        with output.open("w", encoding="utf-8") as handle:
            handle.writelines(lines)
    return vectors.shape


def search(
    model: str | None, corpus: Path, queries: list[str], column: str = "text", top_k: int = 5
) -> list[dict[str, Any]]:
    """For each query, the ``top_k`` rows of ``corpus`` whose ``column`` is most similar to it: ``rank``,
    ``score`` (cosine similarity), ``line`` (where the row is in the file) and the row itself."""
    import numpy as np

    if top_k < 1:
        raise LlmkitError(f"--top-k {top_k}: give 1 or more results per query")
    if not queries:
        raise LlmkitError("give at least one query (QUERY arguments or --queries FILE)")
    split, texts = column_texts(corpus, column, "--corpus")
    embedder = load_embedding_model(model)
    index = np.asarray(embedder.vectors(texts))
    scores = np.asarray(embedder.vectors(queries)) @ index.T
    rows = split.dataset.to_list()
    results = []
    for query, row_scores in zip(queries, scores, strict=True):
        best = np.argsort(-row_scores, kind="stable")[:top_k]
        hits = [
            {"rank": rank, "score": round(float(row_scores[i]), 6), "line": split.where(i), "row": rows[i]}
            for rank, i in enumerate(best.tolist(), start=1)
        ]
        results.append({"query": query, "results": hits})
    return results
