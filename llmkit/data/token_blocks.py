"""Token rows joined end to end and cut into blocks of a fixed number of tokens, a chunk of rows at a time.

Plain-text generation and fill-mask with ``data.line_by_line: false`` train on such blocks. A streamed corpus
(``llmkit.training.streaming``) arrives a chunk of rows at a time: the tokens after a chunk's last whole block
open the next chunk's first block instead of being dropped (or padded into a short block), so a corpus cut
chunk by chunk gives exactly the blocks it gives read whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

#: Column name -> one list of values per row (``input_ids``, ``attention_mask``, ...), as a tokenizer returns.
Columns = dict[str, list[list[Any]]]


class BlockCutter:
    """Joins the rows it is given and returns the whole blocks; the tokens past the last one wait for the
    next rows (:meth:`rest` gives them at the end)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a block holds at least one token, got size {size}")
        self.size = size
        self.pending: dict[str, list[Any]] = {}

    def cut(self, rows: Columns) -> Columns:
        """The whole blocks that the waiting tokens and these rows make, column by column."""
        joined = {
            key: self.pending.get(key, []) + [value for row in values for value in row]
            for key, values in rows.items()
        }
        if not joined:
            return {}
        usable = len(next(iter(joined.values()))) // self.size * self.size
        self.pending = {key: values[usable:] for key, values in joined.items()}
        return {
            key: [values[start : start + self.size] for start in range(0, usable, self.size)]
            for key, values in joined.items()
        }

    def rest(self) -> dict[str, list[Any]]:
        """The tokens after the last whole block (fewer than a block), each column's."""
        return self.pending


def cut_chunks(chunks: Iterable[Columns], size: int, last_at_least: int | None = None) -> Iterator[Columns]:
    """Each chunk's whole blocks (the remainder carried into the next chunk), then the remainder of the last
    as a shorter block when it has at least ``last_at_least`` tokens (None: it is dropped)."""
    cutter = BlockCutter(size)
    for rows in chunks:
        yield cutter.cut(rows)
    rest = cutter.rest()
    if last_at_least is not None and rest and len(next(iter(rest.values()))) >= last_at_least:
        yield {key: [values] for key, values in rest.items()}


def joined_chunks(parts: Iterable[Columns]) -> Columns:
    """The blocks of several chunks as one set of columns (a corpus read whole)."""
    joined: Columns = {}
    for part in parts:
        for key, values in part.items():
            joined.setdefault(key, []).extend(values)
    return joined
