"""Training on a stream (``data.streaming``): a corpus read, checked and encoded as the Trainer asks for rows.

The train split's :class:`llmkit.data.TextStream` is read a chunk of rows at a time; each chunk goes through
the task's own ``check_data`` and ``encode``, as a file's rows would, so a bad row deep in the corpus is the
same one-line error naming its line. The encoded rows reach the Trainer as a ``datasets.IterableDataset``,
shuffled within a buffer of ``data.shuffle_buffer`` examples (reshuffled every pass over the corpus). Memory
holds one chunk and the buffer, whatever the corpus's size, and nothing is cached: a stream is encoded as it
is read, on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llmkit.progress import quiet_library_progress

if TYPE_CHECKING:
    from datasets import IterableDataset
    from transformers import PreTrainedTokenizerBase

    from llmkit.data import Split, TextStream
    from llmkit.tasks.base import Task


def encode_stream(
    task: Task, split: Split, tokenizer: PreTrainedTokenizerBase, seed: int, shuffle_buffer: int
) -> IterableDataset:
    """The encoded examples of a streamed split, lazily: nothing is read until the Trainer iterates."""
    from datasets import IterableDataset

    if split.stream is None:
        raise ValueError(f"the {split.role} split is not a stream")
    examples = IterableDataset.from_generator(
        encoded_examples, gen_kwargs={"task": task, "stream": split.stream, "tokenizer": tokenizer}
    )
    if shuffle_buffer > 1:
        examples = examples.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return examples


def encoded_examples(
    task: Task, stream: TextStream, tokenizer: PreTrainedTokenizerBase
) -> Iterator[dict[str, Any]]:
    """Each chunk of the stream checked and encoded by the task, then its examples one by one."""
    for chunk in stream.chunks():
        with quiet_library_progress():  # a bar per chunk would flood the log
            task.check_data({"train": chunk})
            encoded = task.encode(chunk.dataset, tokenizer)
        yield from encoded.to_list()
