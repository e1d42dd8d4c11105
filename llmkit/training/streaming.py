"""Training on a stream (``data.streaming``): a corpus read, checked and encoded as the Trainer asks for rows.

The train split's :class:`llmkit.data.files.TextStream` is read a chunk of rows at a time; each chunk goes
through the task's own ``check_data``, as a file's rows would, so a bad row deep in the corpus is the same
one-line error naming its line, and then the task's ``encode_chunks``: text cut into blocks carries each
chunk's tail into the next chunk's first block, so one pass over the stream gives the examples of the corpus
read whole (each pass starts afresh from the first row; ``data.max_train_samples`` stops the rows, as it does
a whole read). The encoded rows reach the Trainer as a ``datasets.IterableDataset``, shuffled within a buffer
of ``data.shuffle_buffer`` examples (reshuffled every pass over the corpus). The carried tail lives in one
pass only, so a pass's examples depend on the corpus, the seed and the pass alone: the batches a resumed run
skips are the ones it trained on. Memory holds one chunk and the buffer, whatever the corpus's size, and
nothing is cached: a stream is encoded as it is read, on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llmkit.core.progress import quiet_library_progress
from llmkit.data.files import STREAM_CHUNK_ROWS

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset
    from transformers import PreTrainedTokenizerBase

    from llmkit.data.files import Split, TextStream
    from llmkit.tasks.base import Task


def encode_stream(
    task: Task,
    split: Split,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    shuffle_buffer: int,
    chunk_rows: int = STREAM_CHUNK_ROWS,
) -> IterableDataset:
    """The encoded examples of a streamed split, lazily: nothing is read until the Trainer iterates."""
    from datasets import IterableDataset

    if split.stream is None:
        raise ValueError(f"the {split.role} split is not a stream")
    examples = IterableDataset.from_generator(
        encoded_examples,
        gen_kwargs={"task": task, "stream": split.stream, "tokenizer": tokenizer, "chunk_rows": chunk_rows},
    )
    if shuffle_buffer > 1:
        examples = examples.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return examples


def encoded_examples(
    task: Task, stream: TextStream, tokenizer: PreTrainedTokenizerBase, chunk_rows: int = STREAM_CHUNK_ROWS
) -> Iterator[dict[str, Any]]:
    """Each chunk of the stream checked and encoded by the task, then its examples one by one."""
    encoded_chunks = task.encode_chunks(checked_chunks(task, stream, chunk_rows), tokenizer)
    while True:
        with quiet_library_progress():  # a bar per chunk would flood the log
            encoded = next(encoded_chunks, None)
        if encoded is None:
            return
        yield from encoded.to_list()


def checked_chunks(task: Task, stream: TextStream, chunk_rows: int) -> Iterator[Dataset]:
    """The stream's rows, ``chunk_rows`` at a time, each chunk through the task's checks first."""
    for chunk in stream.chunks(chunk_rows):
        task.check_data({"train": chunk})
        yield chunk.dataset
