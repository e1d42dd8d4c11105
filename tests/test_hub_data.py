"""Hugging Face datasets as data sources (data.dataset): local dataset repos in hub layout, cached hub ids,
splits and slices, ClassLabel names, offline errors, and the bundled recipes' hub datasets."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.files import load_splits
from llmkit.recipe.loader import bundled_recipes, load_recipe
from llmkit.tasks import get_task_class
from tests.conftest import NEGATIVE, POSITIVE, REPO, write_csv

LABEL_NAMES = ["negative", "positive"]
CONFIGS = """configs:
- config_name: default
  data_files:
  - split: train
    path: data/train.{ext}
  - split: validation
    path: data/validation.{ext}
  - split: test
    path: data/test.{ext}
"""
#: For CSV, the README's dataset_info says the label column is a ClassLabel (Parquet files carry it).
CLASS_LABEL_INFO = """dataset_info:
  features:
  - name: sentence
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': negative
          '1': positive
"""


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private datasets cache: what a test loads (or pretends the hub gave) stays in its temp folder."""
    import datasets

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


def sentiment_rows() -> dict[str, list[dict]]:
    """16 training and 4 validation sentences (labels 0/1), 2 test sentences with hidden (-1) labels."""
    rows = [{"sentence": t, "label": 1} for t in POSITIVE] + [{"sentence": t, "label": 0} for t in NEGATIVE]
    return {
        "train": rows[:8] + rows[10:18],
        "validation": rows[8:10] + rows[18:20],
        "test": [{"sentence": "an average film", "label": -1}, {"sentence": "not bad at all", "label": -1}],
    }


def write_repo(folder: Path, fmt: str = "csv", splits: dict[str, list[dict]] | None = None) -> Path:
    """A dataset repository laid out as on the hub: data/<split>.<fmt> and a README.md with `configs:`."""
    from datasets import ClassLabel, Dataset, Features, Value

    splits = splits or sentiment_rows()
    (folder / "data").mkdir(parents=True)
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})
    for split, rows in splits.items():
        target = folder / "data" / f"{split}.{fmt}"
        if fmt == "csv":
            write_csv(target, ["sentence", "label"], [[row["sentence"], row["label"]] for row in rows])
        else:
            Dataset.from_list(rows, features=features).to_parquet(str(target))
    header = (CLASS_LABEL_INFO if fmt == "csv" else "") + CONFIGS.format(ext=fmt)
    (folder / "README.md").write_text(f"---\n{header}---\n# A sentiment dataset\n", encoding="utf-8")
    return folder


def recipe(tmp_path: Path, **data) -> dict:
    return {
        "task": "classification",
        "model": "tiny-bert",
        "data": {"text": "sentence", **data},
        "training": {"max_steps": 2, "per_device_train_batch_size": 8, "precision": "fp32"},
        "output_dir": str(tmp_path / "out"),
    }


def splits_of(tmp_path: Path, **data) -> dict:
    loaded = load_recipe(recipe(tmp_path, **data))
    return load_splits(loaded.data, seed=42)


def write_recipe(tmp_path: Path, **data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path, **data)), encoding="utf-8")
    return path


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def cache_as_hub_dataset(source: Path, repo_id: str, cache: Path) -> None:
    """Put a dataset in the datasets cache as a hub download would leave it (``owner___name/...``).

    datasets prepares the local folder ``name`` into ``cache/name/<config>/<version>/<hash>``, the layout
    of a hub dataset's cache without the owner; moving it under ``owner___name`` makes it the cached copy
    of ``owner/name``, which datasets loads when the hub cannot be reached.
    """
    from datasets import load_dataset_builder

    owner, name = repo_id.split("/")
    staged = source.parent / name
    shutil.copytree(source, staged)
    load_dataset_builder(str(staged)).download_and_prepare()
    shutil.move(str(cache / name), str(cache / f"{owner}___{name}"))


# -- local dataset repositories ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_local_dataset_repo_trains_and_class_label_names_reach_id2label(tmp_path: Path, fmt: str) -> None:
    repo = write_repo(tmp_path / f"sentiment-{fmt}", fmt)
    result = llmkit.finetune(recipe(tmp_path, dataset=str(repo)))

    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}  # 0/1 named by the ClassLabel
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["rows"] == {"train": 16, "validation": 4}  # the repo's validation split, not carved
    source = {"dataset": str(repo), "split": "validation", "local": True}
    assert manifest["data_sources"]["validation"] == source
    assert manifest["data_files"] == {}
    card = (result.output_dir / "README.md").read_text()
    assert f"on the dataset `{repo}` (16 training rows)" in card
    assert "datasets:" not in card.split("---")[1]  # a local folder is no hub dataset to list


def test_splits_map_roles_slices_and_hidden_test_labels(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "sentiment")
    splits = splits_of(
        tmp_path,
        dataset=str(repo),
        splits={"train": "train[:50%]", "validation": "train[50%:]+validation", "test": "test"},
    )
    rows = {role: len(split.dataset) for role, split in splits.items()}
    assert rows == {"train": 8, "validation": 12, "test": 2}
    assert splits["train"].dataset["sentence"] == [row["sentence"] for row in sentiment_rows()["train"][:8]]
    # the hub's hidden test labels (-1) are no labels: the test split is predicted, not scored
    assert splits["test"].dataset.column_names == ["sentence"]
    assert splits["train"].origin == f"data.dataset {repo} split 'train[:50%]'"


def test_validation_is_carved_from_a_dataset_without_one(tmp_path: Path) -> None:
    rows = sentiment_rows()
    repo = write_repo(tmp_path / "train-only", "parquet", {"train": rows["train"]})
    (repo / "README.md").write_text("# no configs: the split comes from the file name\n")
    splits = splits_of(tmp_path, dataset=str(repo), validation_split=0.25)
    assert len(splits["train"].dataset) == 12 and len(splits["validation"].dataset) == 4
    assert splits["validation"].carved and splits["validation"].origin == f"data.dataset {repo} split 'train'"


def test_save_to_disk_folder_as_dataset(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"sentence": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})
    saved = tmp_path / "saved"
    DatasetDict(
        {role: Dataset.from_list(rows, features=features) for role, rows in sentiment_rows().items()}
    ).save_to_disk(str(saved))
    splits = splits_of(
        tmp_path, dataset=str(saved), splits={"train": "train[:6]", "validation": "validation"}
    )
    assert len(splits["train"].dataset) == 6 and len(splits["validation"].dataset) == 4
    task = get_task_class("classification")(load_recipe(recipe(tmp_path, dataset=str(saved))).data)
    task.check_data(splits)
    assert task.label_names == LABEL_NAMES


def test_a_train_file_replaces_the_dataset(tmp_path: Path, sentiment_files, run_cli) -> None:
    train, validation = sentiment_files
    # an uncached hub id: reading it would fail, so passing proves that it is not read
    recipe_file = write_recipe(tmp_path, dataset="llmkit-test/never-cached", text="text")
    files = [f"data.train={train}", f"data.validation={validation}"]
    result = run_cli("validate", recipe_file, *files, "-n", "0")
    assert result.exit_code == 0, result.stderr
    assert f"train: 16 rows from {train}" in result.stdout
    assert "data.dataset llmkit-test/never-cached is not read: data.train gives the training file" in (
        result.stdout
    )


# -- errors name the dataset, split, column and row ----------------------------------------------------
def test_unknown_split_lists_the_datasets_splits(tmp_path: Path, run_cli) -> None:
    repo = write_repo(tmp_path / "sentiment")
    result = run_cli(
        "validate", write_recipe(tmp_path, dataset=str(repo)), "data.splits.validation=dev[:50%]"
    )
    assert one_line_error(result) == (
        f"error: data.splits.validation: dataset {repo} has no split 'dev'; its splits are: train, "
        f"validation, test; set data.splits.validation=<one of them>"
    )


def test_missing_column_lists_the_datasets_columns(tmp_path: Path, run_cli) -> None:
    repo = write_repo(tmp_path / "sentiment", "parquet")
    result = run_cli("validate", write_recipe(tmp_path, dataset=str(repo)), "data.text=review")
    assert one_line_error(result) == (
        f"error: data.dataset {repo} split 'train': no column 'review' (set by data.text); columns are: "
        f"sentence, label; set data.text=<one of them>"
    )


def test_bad_row_names_the_dataset_split_and_row(tmp_path: Path, run_cli) -> None:
    rows = sentiment_rows()
    rows["validation"][2]["sentence"] = ""
    repo = write_repo(tmp_path / "sentiment", "parquet", rows)
    result = run_cli("validate", write_recipe(tmp_path, dataset=str(repo)))
    assert one_line_error(result) == (
        f"error: data.dataset {repo} split 'validation' row 3: column 'sentence' (data.text) is empty; "
        f"fill in or remove that row"
    )


def test_data_file_that_does_not_parse_names_the_file(tmp_path: Path, run_cli) -> None:
    repo = write_repo(tmp_path / "sentiment")
    (repo / "data" / "train.csv").write_text("sentence,label\ngood,1\nbad,0,extra\n", encoding="utf-8")
    result = run_cli("validate", write_recipe(tmp_path, dataset=str(repo)))
    error = one_line_error(result)
    assert error.startswith(f"error: data.dataset {repo}: cannot be read (Failed to read file ")
    assert f"{repo / 'data' / 'train.csv'}" in error and "Expected 2 fields in line 3, saw 3" in error
    assert error.endswith("; check its data files")
    assert result.stderr.count("Failed to read file") == 1  # datasets' own log line is held back


def test_bad_split_expression_and_config(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "sentiment")
    with pytest.raises(LlmkitError, match=r"data.splits.train: 'train\[:abc\]' is not a split expression"):
        splits_of(tmp_path, dataset=str(repo), splits={"train": "train[:abc]"})
    with pytest.raises(
        LlmkitError, match=r"data.config: dataset .* has no config 'sst2'; its configs are: default"
    ):
        splits_of(tmp_path, dataset=str(repo), config="sst2")
    with pytest.raises(LlmkitError, match=r"data.dataset: .*nowhere does not exist; give a dataset folder"):
        splits_of(tmp_path, dataset=str(tmp_path / "nowhere"))


def test_loading_script_is_refused_and_never_runs(tmp_path: Path) -> None:
    folder = tmp_path / "scripted"
    folder.mkdir()
    marker = tmp_path / "script-ran"
    (folder / "scripted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n", encoding="utf-8")
    (folder / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n", encoding="utf-8")
    with pytest.raises(
        LlmkitError, match=r"data.dataset .*scripted is built by a loading script, which datasets"
    ):
        splits_of(tmp_path, dataset=str(folder), trust_remote_code=True)
    assert not marker.exists()


def test_recipe_checks_the_data_source_keys(tmp_path: Path) -> None:
    base = recipe(tmp_path)
    with pytest.raises(LlmkitError, match=r"data.train or data.dataset is required"):
        load_recipe(base)
    bad = [
        (
            {"dataset": "a/b", "splits": {"trian": "train"}},
            r"unknown key 'data.splits.trian' \(did you mean 'train'",
        ),
        ({"dataset": "a/b", "splits": "train"}, r"data.splits must be a mapping of roles to splits"),
        ({"dataset": "a/b", "revision": 1234567}, r"data.revision must be a string \(quote it in YAML\)"),
        ({"dataset": "a/b", "splits": {"test": 3}}, r"data.splits.test must be a split name or slice"),
    ]
    for data, message in bad:
        with pytest.raises(LlmkitError, match=message):
            load_recipe({**base, "data": {**base["data"], **data}})


# -- hub ids: cached, uncached, pinned -----------------------------------------------------------------
def test_uncached_hub_id_offline_is_a_fast_one_line_error(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    started = time.perf_counter()
    result = run_cli("finetune", write_recipe(tmp_path, dataset="llmkit-test/never-cached"))
    seconds = time.perf_counter() - started
    assert one_line_error(result) == (
        "error: data.dataset: the Hugging Face dataset 'llmkit-test/never-cached' is not in the datasets "
        "cache and the Hub can't be reached (offline mode: HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set); "
        "run once with a network to cache it, or give local files instead: data.train=path/to/train.csv "
        "(data.validation=..., data.test=...)"
    )
    assert seconds < 10, f"took {seconds:.1f} s: something waited for the network"
    assert not out.exists()


def test_cached_hub_dataset_loads_offline_and_is_recorded(
    tmp_path: Path, datasets_cache: Path, run_cli
) -> None:
    cache_as_hub_dataset(write_repo(tmp_path / "source", "parquet"), "llmkit-test/sentiment", datasets_cache)
    recipe_file = write_recipe(tmp_path, dataset="llmkit-test/sentiment")

    checked = run_cli("validate", recipe_file, "-n", "0")
    assert checked.exit_code == 0, checked.stderr
    shown = r"train: 16 rows from dataset llmkit-test/sentiment split 'train', commit (\w+)"
    commit = re.search(shown, checked.stdout)
    assert commit, checked.stdout
    assert "using its copy in the datasets cache" in checked.stderr

    trained = run_cli("finetune", recipe_file)
    assert trained.exit_code == 0, trained.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data_sources"]["train"]["dataset"] == "llmkit-test/sentiment"
    assert manifest["data_sources"]["train"]["commit"].startswith(commit.group(1))
    front_matter = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front_matter["datasets"] == ["llmkit-test/sentiment"]
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    report = (out / "report.md").read_text()
    source = f"- train: dataset `llmkit-test/sentiment` split 'train', commit {commit.group(1)}, 16 rows"
    assert source in report


def test_pinned_revision_other_than_the_cached_one_is_refused(tmp_path: Path, datasets_cache: Path) -> None:
    cache_as_hub_dataset(write_repo(tmp_path / "source"), "llmkit-test/sentiment", datasets_cache)
    with pytest.raises(
        LlmkitError, match=r"data.revision: the cached copy of dataset llmkit-test/sentiment is commit"
    ):
        splits_of(tmp_path, dataset="llmkit-test/sentiment", revision="0123456789abcdef")


# -- the bundled recipes -------------------------------------------------------------------------------
SHARED_DATA_LINE = "# shared data: "


def shared_data_recipes() -> dict[str, Path]:
    return {name: path for name, path in bundled_recipes().items() if SHARED_DATA_LINE in path.read_text()}


def test_recipes_that_stood_on_shared_data_name_their_hub_dataset() -> None:
    recipes = shared_data_recipes()
    assert set(recipes) == {
        "sst2-minilm",
        "fill-mask-brown",
        "generation-shakespeare",
        "instruct-alpaca",
        "summarize-dialogsum",
        "ner-conll2003",
        "qa-squad",
        "stsb-minilm",
        "goemotions-minilm",
        "dpo-hh",
        "orpo-hh",
        "kto-hh",
        "reward-hh",
        "translate-multi30k",
        "pretrain-bert-brown",
        "pretrain-gpt-shakespeare",
        "stsb-embedding",
        "squad-retrieval",
        "sst2-setfit",
    }
    for name in bundled_recipes():
        data = load_recipe(name).data
        assert "../shared" not in yaml.safe_dump(data), f"{name} reads ../shared/data outside a comment"
        if name in recipes:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", data["dataset"]) and not data["train"], name


@pytest.mark.parametrize("name", sorted(shared_data_recipes()))
def test_each_hub_recipe_runs_here_on_shared_data(
    name: str, monkeypatch: pytest.MonkeyPatch, real_data_dir: Path
) -> None:
    """The recipe's documented `shared data:` overrides (../shared/data/..., read from the real-data folder)
    read offline; the task accepts the data."""
    monkeypatch.chdir(REPO)  # the recipes' paths are relative to the repository root
    path = bundled_recipes()[name]
    line = next(line for line in path.read_text().splitlines() if line.startswith(SHARED_DATA_LINE))
    overrides = line[len(SHARED_DATA_LINE) :].replace("../shared/data", str(real_data_dir)).split()
    resolved = load_recipe(name, [*overrides, "data.max_train_samples=200", "data.max_eval_samples=20"])
    splits = load_splits(resolved.data, seed=42)
    assert not any(split.hub for split in splits.values())
    assert all(Path(split.path).is_relative_to(real_data_dir) for split in splits.values())
    get_task_class(resolved.task)(resolved.data).check_data(splits)
