"""``data.shots``: N training rows per class, a seeded sample taken after validation is carved off."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from llmkit.core.errors import LlmkitError
from llmkit.data.files import column_values, load_splits
from llmkit.recipe.loader import load_recipe
from llmkit.tasks import get_task_class
from llmkit.tasks.base import checked_splits
from tests.conftest import NEGATIVE, POSITIVE, write_csv
from tests.test_cache import encode_split, own_cache  # noqa: F401 (a fixture)

ROWS = [[t, "positive"] for t in POSITIVE] + [[t, "negative"] for t in NEGATIVE] + [["so-so", "neutral"]] * 6


def three_classes(tmp_path: Path) -> Path:
    """10 positive, 10 negative and 6 neutral rows."""
    return write_csv(tmp_path / "train.csv", ["text", "label"], ROWS)


def shot_splits(train: Path, **data) -> dict:
    """The splits as a run settles them: read and carved, checked, fixed, then the shots kept."""
    resolved = load_recipe({"model": "tiny-bert", "data": {"train": str(train), **data}})
    task = get_task_class(resolved.task)(resolved.data)
    splits = load_splits(resolved.data, seed=resolved.training["seed"])
    checked_splits(task, splits, resolved.data, resolved.task)
    return splits


def texts(split) -> list[str]:
    return column_values(split.dataset, "text")


def test_shots_keeps_n_rows_of_each_class_and_validation_is_carved_first(tmp_path: Path) -> None:
    train = three_classes(tmp_path)
    splits = shot_splits(train, shots=3, validation_split=0.2)
    assert Counter(column_values(splits["train"].dataset, "label")) == {
        "positive": 3,
        "negative": 3,
        "neutral": 3,
    }
    carved = load_splits(load_recipe({"data": {"train": str(train), "validation_split": 0.2}}).data, seed=42)
    assert texts(splits["validation"]) == texts(carved["validation"])  # the shots leave validation alone
    assert not set(splits["train"].file_rows) & set(splits["validation"].file_rows)
    assert set(splits["train"].file_rows) <= set(carved["train"].file_rows)


def test_shots_are_sampled_after_deduplication_so_each_class_keeps_n_distinct_rows(tmp_path: Path) -> None:
    # 'positive': 13 rows, 6 of them distinct (8 copies of one); 'negative': 10 distinct rows
    rows = [["the same praise", "positive"]] * 8 + [[t, "positive"] for t in POSITIVE[:5]]
    rows += [[t, "negative"] for t in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    kept = shot_splits(train, shots=6, validation_split=0.0, deduplicate="exact")["train"]
    assert len(set(texts(kept))) == len(texts(kept)) == 12  # 6 distinct rows per class, none dropped after
    with pytest.raises(LlmkitError, match=r"class 'positive' has only 6 rows"):
        shot_splits(train, shots=7, validation_split=0.0, deduplicate="exact")


def test_the_sample_follows_data_shots_seed_alone(tmp_path: Path) -> None:
    train = three_classes(tmp_path)
    first = shot_splits(train, shots=4, validation_split=0.0)["train"].file_rows
    assert shot_splits(train, shots=4, validation_split=0.0)["train"].file_rows == first
    other = shot_splits(train, shots=4, validation_split=0.0, shots_seed=7)["train"].file_rows
    assert other != first
    assert first == sorted(first)  # kept in file order


def test_changing_shots_or_their_seed_encodes_the_rows_again(own_cache: Path, tmp_path: Path) -> None:  # noqa: F811
    train = three_classes(tmp_path)

    def recipe(**data) -> dict:
        return {"model": "tiny-bert", "data": {"train": str(train), "validation_split": 0.0, **data}}

    encode_split(recipe(shots=4), "train")
    entries = set(own_cache.iterdir())
    encode_split(recipe(shots=4), "train")
    assert set(own_cache.iterdir()) == entries  # the same shots come from the cache
    assert len(encode_split(recipe(shots=2), "train")["labels"]) == 6
    assert len(set(own_cache.iterdir()) - entries) == 1
    encode_split(recipe(shots=4, shots_seed=7), "train")
    assert len(set(own_cache.iterdir()) - entries) == 2


def test_a_class_with_too_few_rows_is_named_with_its_count(tmp_path: Path) -> None:
    train = three_classes(tmp_path)
    with pytest.raises(LlmkitError, match=r"class 'neutral' has only 6 rows .* lower data\.shots"):
        shot_splits(train, shots=8, validation_split=0.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shots": 0}, r"data\.shots must be a positive number of rows per class"),
        ({"shots": "16"}, r"data\.shots must be a positive number"),
        ({"shots": 2, "shots_seed": 1.5}, r"data\.shots_seed must be an integer"),
        ({"shots": 2, "problem": "regression"}, r"single-label classification only.*regression"),
        ({"shots": 2, "label_separator": ","}, r"single-label classification only.*multi_label"),
    ],
)
def test_bad_shot_settings_are_one_line_errors(tmp_path: Path, data: dict, message: str) -> None:
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [["good", "1"], ["bad", "0"]] * 4)
    with pytest.raises(LlmkitError, match=message) as error:
        shot_splits(train, validation_split=0.0, **data)
    assert "\n" not in str(error.value)


def test_validate_and_finetune_take_the_shots(tmp_path: Path, run_cli) -> None:
    train = three_classes(tmp_path)
    common = ("model=tiny-bert", f"data.train={train}", "data.validation_split=0.25", "data.shots=2")
    checked = run_cli("validate", *common)
    assert checked.exit_code == 0, checked.stderr
    assert "labels in train: negative: 2, neutral: 2, positive: 2" in checked.stdout + checked.stderr
    result = run_cli("finetune", *common, "training.max_steps=1", f"output_dir={tmp_path / 'out'}")
    assert result.exit_code == 0, result.stderr
    assert "data.shots: 2 training rows per class (6 rows, data.shots_seed 42)" in result.stderr
    stats = json.loads((tmp_path / "out" / "run_stats.json").read_text())
    assert stats["data"]["rows"]["train"] == 6
    failed = run_cli("finetune", *common[:-1], "data.shots=9", f"output_dir={tmp_path / 'failed'}")
    assert failed.exit_code == 2
    assert "class 'neutral' has only" in failed.stderr
