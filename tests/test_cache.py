"""The tokenization cache: what a cached split restores, what its key covers, and how it fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

import llmkit
from llmkit.data.files import load_splits
from llmkit.models.resolve import load_tokenizer, resolve_model
from llmkit.recipe.loader import load_recipe
from llmkit.runs.entries import is_run_entry
from llmkit.tasks import get_task_class
from llmkit.tasks.base import checked_splits
from llmkit.tasks.causal_lm import DEFAULT_CHAT_TEMPLATE
from llmkit.training.token_cache import encode_cached, save_to_cache
from tests.conftest import NEGATIVE, POSITIVE, write_csv

# A ChatML template (SmolLM2's kind), for a tiny-gpt2 copy that has a template of its own.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INSTRUCTIONS = [
    {"instruction": f"Say {word}.", "output": f"{word.capitalize()}!"}
    for word in ("hello", "goodbye", "thanks", "yes", "no", "maybe", "again", "later")
]
#: encode_cached only needs TrainingArguments.main_process_first from its arguments.
ONE_PROCESS = SimpleNamespace(main_process_first=lambda desc="": nullcontext())


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tokenization cache of this test alone (the tiny models stay in the session's cache)."""
    for alias in ("tiny-bert", "tiny-gpt2"):
        resolve_model(alias)  # built where the session keeps them
    models = Path(os.environ["LLMKIT_CACHE"]) / "models"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(models)
    monkeypatch.setenv("LLMKIT_CACHE", str(cache))
    return cache / "tokenized"


def instruction_file(tmp_path: Path) -> Path:
    path = tmp_path / "instructions.json"
    path.write_text(json.dumps(INSTRUCTIONS))
    return path


def gpt2_copy(tmp_path: Path, name: str, **tokenizer_config) -> Path:
    """tiny-gpt2 in a folder of its own, with extra tokenizer_config.json entries (e.g. a chat_template)."""
    folder = tmp_path / name
    shutil.copytree(resolve_model("tiny-gpt2"), folder)
    config_file = folder / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **tokenizer_config}))
    return folder


def instruct_recipe(train: Path, model: str, output_dir: Path, **data) -> dict:
    return {
        "task": "generation",
        "model": model,
        "data": {"train": str(train), "validation_split": 0.25, "max_length": 64, **data},
        "training": {"max_steps": 1, "per_device_train_batch_size": 2},
        "output_dir": str(output_dir),
    }


def encode_split(recipe: dict, role: str):
    """One split encoded as llmkit.training.spine.run encodes it (through the cache)."""
    resolved = load_recipe(recipe)
    task = get_task_class(resolved.task)(resolved.data)
    splits = load_splits(resolved.data, seed=resolved.training["seed"])
    checked_splits(task, splits, resolved.data, resolved.task)
    model_path = resolve_model(resolved.model)
    task.check_model(model_path)
    tokenizer = load_tokenizer(model_path)
    task.prepare_tokenizer(tokenizer)
    return encode_cached(task, splits[role], tokenizer, model_path, resolved, ONE_PROCESS)


# -- a cached split restores what encoding would have set ---------------------------------------------
@pytest.mark.parametrize("own_template", [False, True], ids=["model without template", "template off"])
def test_a_rerun_from_the_cache_saves_the_template_it_trained_with(
    own_cache: Path, tmp_path: Path, run_cli, own_template: bool
) -> None:
    train = instruction_file(tmp_path)
    model = str(gpt2_copy(tmp_path, "chatml-gpt2", chat_template=CHATML)) if own_template else "tiny-gpt2"
    data = {"use_chat_template": False} if own_template else {}
    first = llmkit.finetune(instruct_recipe(train, model, tmp_path / "first", **data))
    entries = {p.name for p in own_cache.iterdir()}
    second = llmkit.finetune(instruct_recipe(train, model, tmp_path / "second", **data))
    assert {p.name for p in own_cache.iterdir()} == entries  # the second run encoded nothing

    for out in (first.output_dir, second.output_dir):
        assert (out / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE
        assert all(is_run_entry(p.name) for p in out.iterdir())  # the run folder list knows them all
    chat = run_cli("generate", "Say hello.", "--model", second.output_dir, "--chat", "--max-new-tokens", "2")
    assert chat.exit_code == 0, chat.stderr


def test_encode_leaves_the_tokenizer_alone_and_prepare_tokenizer_sets_the_template() -> None:
    from datasets import Dataset

    from llmkit.data.files import Split

    model_path = resolve_model("tiny-gpt2")
    recipe = load_recipe({"task": "generation", "model": "tiny-gpt2", "data": {"train": "unused.json"}})
    generation = get_task_class("generation")(recipe.data)
    split = Split("train", Dataset.from_list(INSTRUCTIONS), Path("unused.json"))
    generation.check_data({"train": split})
    tokenizer = load_tokenizer(model_path)
    generation.encode(split.dataset, tokenizer)
    assert not tokenizer.chat_template  # encode has no side effects: a cache hit skips it

    generation.prepare_tokenizer(tokenizer)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE

    summarization = get_task_class("summarization")(
        load_recipe(
            {
                "task": "summarization",
                "model": "tiny-gpt2",
                "data": {"train": "unused.json", "max_length": 128, "max_target_length": 32},
            }
        ).data
    )
    summarization.check_model(model_path)
    tokenizer = load_tokenizer(model_path)
    summarization.collator(tokenizer)
    summarization.encode(Dataset.from_list([{"document": "A long day.", "summary": "Long."}]), tokenizer)
    assert not tokenizer.chat_template
    summarization.prepare_tokenizer(tokenizer)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE


# -- the key covers everything that determines the encoded rows ----------------------------------------
def test_validation_ids_follow_the_training_label_list(own_cache: Path, tmp_path: Path) -> None:
    validation = write_csv(tmp_path / "val.csv", ["text", "label"], [["fine", "a"], ["so-so", "c"]])
    two = write_csv(tmp_path / "two.csv", ["text", "label"], [["x", "a"], ["y", "c"]] * 4)
    three = write_csv(tmp_path / "three.csv", ["text", "label"], [["x", "a"], ["y", "b"], ["z", "c"]] * 3)

    def recipe(train: Path) -> dict:
        return {"model": "tiny-bert", "data": {"train": str(train), "validation": str(validation)}}

    assert encode_split(recipe(two), "validation")["labels"] == [0, 1]  # c is class 1 of {a, c}
    assert encode_split(recipe(three), "validation")["labels"] == [0, 2]  # ... and class 2 of {a, b, c}


def test_a_dataset_folder_saved_again_is_encoded_again(own_cache: Path, tmp_path: Path) -> None:
    from datasets import Dataset

    folder = tmp_path / "saved"
    rows = {"text": POSITIVE[:4] + NEGATIVE[:4], "label": ["pos"] * 4 + ["neg"] * 4}
    Dataset.from_dict(rows).save_to_disk(str(folder))
    stamp = folder.stat()
    recipe = {"model": "tiny-bert", "data": {"train": str(folder), "validation_split": 0.0}}
    before = encode_split(recipe, "train")["input_ids"]

    rows["text"] = [text.replace("a", "o") for text in rows["text"]]  # corrected, same sizes
    Dataset.from_dict(rows).save_to_disk(str(folder))
    os.utime(folder, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # as a copy that keeps times would
    after = encode_split(recipe, "train")["input_ids"]
    assert after != before


def test_every_tokenizer_file_is_part_of_the_key(own_cache: Path, tmp_path: Path) -> None:
    train = instruction_file(tmp_path)
    model = gpt2_copy(tmp_path, "gpt2-with-template", chat_template=CHATML)
    recipe = instruct_recipe(train, str(model), tmp_path / "unused")
    first = encode_split(recipe, "train")["input_ids"]

    config_file = model / "tokenizer_config.json"  # the template kept in tokenizer_config.json
    config = json.loads(config_file.read_text())
    edited = CHATML.replace("<|im_start|>", "<|turn|>")
    config_file.write_text(json.dumps({**config, "chat_template": edited}))
    second = encode_split(recipe, "train")["input_ids"]
    assert second != first

    (model / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)  # a template file wins over the config
    third = encode_split(recipe, "train")["input_ids"]
    assert third not in (first, second)


# -- failures cost the cache, not the run ----------------------------------------------------------------
def test_an_unwritable_cache_warns_once_and_the_run_goes_on(
    own_cache: Path, sentiment_files, tmp_path: Path, run_cli
) -> None:
    own_cache.write_text("a file where the cache folder would go")
    train, validation = sentiment_files
    result = run_cli(
        "finetune",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        "training.max_steps=1",
        f"output_dir={tmp_path / 'out'}",
    )
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stderr.count("cannot write the tokenization cache") == 1  # two splits, one warning
    assert (tmp_path / "out" / "metrics.json").exists()


def test_staging_folders_of_killed_runs_are_removed(own_cache: Path) -> None:
    from datasets import Dataset

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # its id now names no process, like a killed run's
    own_cache.mkdir()
    killed = own_cache / f".{'a' * 20}-{ended.pid}"
    running = own_cache / f".{'b' * 20}-{os.getppid()}"  # a live process: still writing
    ancient = own_cache / f".{'c' * 20}-{os.getppid()}"  # a live id, but two days old: reused
    unrelated = [own_cache / ".not-llmkit-123", own_cache / "notes"]
    for folder in (killed, running, ancient, *unrelated):
        folder.mkdir()
        (folder / "data.arrow").write_text("partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(ancient, (two_days_ago, two_days_ago))

    save_to_cache(Dataset.from_dict({"input_ids": [[1, 2]]}), own_cache / ("d" * 20))
    assert (own_cache / ("d" * 20) / "dataset_info.json").exists()
    assert not killed.exists() and not ancient.exists()
    assert running.exists() and all(folder.exists() for folder in unrelated)
