"""The length-grouped sampler: every row once, little padding, random batch order, new order per epoch."""

from __future__ import annotations

import random

from llmkit.training.sampling import LengthGroupedShuffledSampler


def batches_of(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


def test_every_row_once_with_far_less_padding_than_random_batches() -> None:
    rng = random.Random(0)
    lengths = [rng.choice([3, 5, 8, 12, 20, 40, 66]) + rng.randint(0, 3) for _ in range(1000)]
    sampler = LengthGroupedShuffledSampler(lengths, batch_size=32, seed=7)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    batches = batches_of(order, 32)
    assert all(len(batch) == 32 for batch in batches[:-1]) and len(batches[-1]) == 1000 % 32

    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    real = sum(lengths)
    assert padded_tokens(batches, lengths) < 0.6 * padded_tokens(batches_of(shuffled, 32), lengths)
    assert padded_tokens(batches, lengths) < 1.5 * real


def test_no_length_trend_and_a_new_order_each_epoch() -> None:
    lengths = list(range(1, 2049))
    sampler = LengthGroupedShuffledSampler(lengths, batch_size=16, seed=1, window=8)
    first = list(sampler)
    assert first == list(sampler)  # same seed and epoch: same order (resume relies on it)
    # LengthGroupedSampler walks each window from long to short; here batch lengths must not be monotone
    means = [sum(lengths[i] for i in batch) / len(batch) for batch in batches_of(first, 16)]
    window_means = means[:8]
    assert window_means != sorted(window_means) and window_means != sorted(window_means, reverse=True)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_evaluation_keeps_the_rows_order_while_training_groups_by_length(tmp_path) -> None:
    """transformers 5 groups evaluation by length too when training does; predictions would then come back
    in another order than the rows, and QA (which maps them back by position) scored ~5 F1 instead of ~60."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from llmkit.training.sampling import length_grouping_trainer

    rng = random.Random(0)
    rows = Dataset.from_dict({"input_ids": [[1] * rng.randint(2, 60) for _ in range(300)]})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        train_sampling_strategy="group_by_length",
        per_device_eval_batch_size=8,
        use_cpu=True,
        report_to="none",
    )
    trainer = length_grouping_trainer(Trainer)(model=torch_stub(), args=args)
    assert list(trainer._get_eval_sampler(rows)) == list(range(300))
    plain = Trainer(model=torch_stub(), args=args)
    assert list(plain._get_eval_sampler(rows)) != list(range(300))  # what the fix guards against


def torch_stub():
    import torch

    return torch.nn.Linear(1, 1)
