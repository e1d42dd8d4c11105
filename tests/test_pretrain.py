"""Pre-training from scratch: models from a config, tokenizers trained on the data, next-sentence prediction,
the named sizes, the bundled recipes, and each bad input as one line (exit 2). Tiny sizes, seconds each."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.models.scratch import SCRATCH_CACHE, SIZES, size_table
from llmkit.models.tokenizer_training import (
    BERT_SPECIAL_TOKENS,
    GPT2_SPECIAL_TOKENS,
    train_on_corpus,
    train_tokenizer,
    vocabulary_statistics,
)
from tests.conftest import NEGATIVE, POSITIVE, REPO
from tests.lookalikes import write_speeches

#: bert-mini shrunk to seconds: one layer, width 32.
TINY_BERT = {
    "size": "bert-mini",
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
TINY_GPT = {"size": "gpt2-mini", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128}
SENTENCES = [s + " ." for s in POSITIVE + NEGATIVE]


def documents(count: int = 12, lines: int = 4) -> list[str]:
    """``count`` documents of ``lines`` sentences each, one sentence a line."""
    return [
        "\n".join(SENTENCES[(number * lines + i) % len(SENTENCES)] for i in range(lines))
        for number in range(count)
    ]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A .txt file of documents: one sentence a line, a blank line between documents."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(documents()) + "\n", encoding="utf-8")
    return path


def bert_recipe(train: Path, output_dir: Path, **data) -> dict:
    return {
        "task": "fill-mask",
        "model": {"from_scratch": dict(TINY_BERT)},
        "tokenizer": {"train": True, "vocab_size": 200},
        "data": {"train": str(train), "validation_split": 0.25, "max_length": 32, **data},
        "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
        "output_dir": str(output_dir),
    }


# -- tokenizer training ------------------------------------------------------------------------------
def test_tokenizer_trains_from_any_iterator_and_counts_what_it_read() -> None:
    texts = (text for text in SENTENCES * 3)  # a generator, read once (a stream's sample works alike)
    trained = train_on_corpus(texts, "wordpiece", 150, BERT_SPECIAL_TOKENS)
    assert trained.texts == len(SENTENCES) * 3
    assert trained.characters == sum(len(s) for s in SENTENCES) * 3
    assert trained.seconds >= 0
    tokenizer = trained.tokenizer
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == list(BERT_SPECIAL_TOKENS.tokens)
    encoded = tokenizer("The Food", "was cold", return_token_type_ids=True)
    assert tokenizer.convert_ids_to_tokens(encoded.input_ids)[0] == "[CLS]"
    assert set(encoded.token_type_ids) == {0, 1}
    assert tokenizer.decode(encoded.input_ids, skip_special_tokens=True) == "the food was cold"  # lower-cased


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_each_tokenizer_kind_and_its_statistics(kind: str) -> None:
    tokenizer = train_tokenizer(
        SENTENCES, kind, 320, GPT2_SPECIAL_TOKENS if kind == "bpe" else BERT_SPECIAL_TOKENS
    )
    assert len(tokenizer) <= 320
    stats = vocabulary_statistics(tokenizer, SENTENCES)
    assert stats["vocab_size"] == len(tokenizer)
    assert stats["texts_measured"] == len(SENTENCES) and stats["words_measured"] > len(SENTENCES) * 3
    assert stats["pieces_per_word"] >= 1.0 and 0 < stats["whole_word_share"] <= 1
    assert stats["unknown_share"] == 0  # every character of the corpus is in the vocabulary it was trained on


def test_byte_level_bpe_keeps_line_breaks_and_case() -> None:
    text = "ROMEO:\nBut soft, what light.\n\nJULIET:\nAy me."
    tokenizer = train_tokenizer([text] * 5, "bpe", 300, GPT2_SPECIAL_TOKENS)
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_the_tiny_test_models_train_their_tokenizers_through_the_one_trainer() -> None:
    """No second copy: only llmkit.models.tokenizer_training builds `tokenizers` trainers and pipelines."""
    users = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "llmkit").rglob("*.py")
        if re.search(r"\btrainers\.\w+Trainer\(|\bTokenizer\(models\.", path.read_text(encoding="utf-8"))
    ]
    assert users == ["llmkit/models/tokenizer_training.py"]
    source = (REPO / "llmkit" / "models" / "tiny.py").read_text(encoding="utf-8")
    assert source.count("train_tokenizer(sample_corpus()") == 4  # WordPiece, byte-level BPE, Unigram, BART


# -- named sizes -----------------------------------------------------------------------------------
def test_named_sizes_and_the_docs_table_agree() -> None:
    rows = {row["name"]: row for row in size_table({"bert": 16000, "gpt2": 16000})}
    assert set(rows) == {"bert-mini", "bert-small", "gpt2-mini", "gpt2-small"} == set(SIZES)
    assert (rows["bert-mini"]["layers"], rows["bert-mini"]["width"]) == (4, 256)
    page = (REPO / "docs" / "tasks" / "pretraining.md").read_text(encoding="utf-8")
    for name, row in rows.items():
        line = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[2:5] == [str(row["layers"]), str(row["width"]), str(row["heads"])], name
        assert cells[6] == f"{row['parameters'] / 1e6:.1f}M", name
        assert cells[7] == f"{row['without_token_embeddings'] / 1e6:.1f}M", name


# -- a BERT from scratch -----------------------------------------------------------------------------
@pytest.fixture
def scratch_bert(corpus: Path, tmp_path: Path) -> Path:
    return llmkit.finetune(bert_recipe(corpus, tmp_path / "bert", txt_unit="paragraph")).output_dir


def test_bert_from_scratch_end_to_end(scratch_bert: Path) -> None:
    from transformers import AutoTokenizer, pipeline

    config = json.loads((scratch_bert / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(scratch_bert)  # the trained tokenizer is saved with the model
    assert config["vocab_size"] == len(tokenizer) <= 200
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (1, 32, 64)
    stats = json.loads((scratch_bert / "run_stats.json").read_text())["pretraining"]
    assert stats["init_seed"] == 42 and stats["parameters"] > 0
    assert stats["tokenizer"]["type"] == "wordpiece" and stats["tokenizer"]["training_seconds"] >= 0
    # each document's lines are its examples (line_by_line), the held-out documents are carved whole
    assert stats["tokenizer"]["training_texts"] == 9
    report = (scratch_bert / "report.md").read_text()
    assert "## Pre-training from scratch" in report and "initialised with seed 42" in report
    assert "pieces per word" in report
    card = (scratch_bert / "README.md").read_text()
    assert "base_model" not in card and "pre-trained from scratch" in card
    recipe = yaml.safe_load((scratch_bert / "recipe.yaml").read_text())
    assert recipe["model"] == {"from_scratch": TINY_BERT} and recipe["tokenizer"]["train"] is True
    assert tokenizer("a", "b").token_type_ids == [0, 0, 0, 1, 1]  # a BERT gets its segment ids by default
    candidates = pipeline("fill-mask", model=str(scratch_bert))("the food was [MASK] .")
    assert len(candidates) == 5


def test_the_line_by_line_examples_of_document_rows_are_their_lines(corpus: Path) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer

    from llmkit.inference.predict import task_with_defaults
    from llmkit.tasks.fill_mask import FillMaskTask

    task = task_with_defaults(FillMaskTask, {"max_length": 32})
    tokenizer = AutoTokenizer.from_pretrained(llmkit.models.resolve.resolve_model("tiny-bert"))
    encoded = task.encode(Dataset.from_dict({"text": documents(3, 4)}), tokenizer)
    assert len(encoded) == 12
    assert encoded[1]["input_ids"] == tokenizer(SENTENCES[1]).input_ids


def test_a_rerun_reuses_the_built_folder_and_the_seed_decides_the_weights(
    corpus: Path, tmp_path: Path, llmkit_cache: Path
) -> None:
    from safetensors.torch import load_file

    def built(seed: int, name: str) -> set[Path]:
        recipe = bert_recipe(corpus, tmp_path / name, txt_unit="paragraph")
        recipe["training"].update(seed=seed, max_steps=1)
        llmkit.finetune(recipe)
        return set((llmkit_cache / SCRATCH_CACHE).iterdir())

    first = built(7, "a")
    assert built(7, "b") == first  # the same settings and text: the folder built before
    folders = built(8, "c") - first
    assert len(folders) == 1
    (new,) = folders
    (old,) = (
        folder
        for folder in first
        if json.loads((folder / "llmkit_scratch.json").read_text())["init_seed"] == 7
    )
    before, after = load_file(old / "model.safetensors"), load_file(new / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not before[name].equal(after[name])


def test_from_a_config_file_and_a_reused_tokenizer(corpus: Path, tmp_path: Path) -> None:
    from transformers import BertConfig

    config_file = tmp_path / "config.json"
    BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=48).to_json_file(
        config_file
    )
    recipe = bert_recipe(corpus, tmp_path / "file")
    recipe["model"] = {"from_scratch": str(config_file)}
    recipe["tokenizer"] = {"name": "tiny-bert"}
    out = llmkit.finetune(recipe).output_dir
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (1, 48)
    stats = json.loads((out / "run_stats.json").read_text())["pretraining"]
    assert stats["tokenizer"]["trained"] is False and stats["tokenizer"]["from"] == "tiny-bert"


def test_validate_builds_the_model_and_says_so(corpus: Path, tmp_path: Path) -> None:
    from llmkit.training.validate import validate

    lines = validate(bert_recipe(corpus, tmp_path / "v"))
    assert any("model bert-mini (changed:" in line for line in lines)


# -- next-sentence prediction -----------------------------------------------------------------------
def test_sentence_pairs_are_consecutive_lines_or_a_line_of_another_document() -> None:
    from llmkit.tasks.next_sentence import IS_NEXT, IS_RANDOM, sentence_pairs

    texts = ["\n".join(f"d{d} s{s}" for s in range(5)) for d in range(100)]
    pairs = sentence_pairs(texts)
    assert len(pairs["first"]) == 100 * 4
    labels = pairs["next_sentence_label"]
    assert 0.42 < labels.count(IS_RANDOM) / len(labels) < 0.58
    for first, second, label in zip(pairs["first"], pairs["second"], labels, strict=True):
        document, sentence = first.split()
        if label == IS_NEXT:
            assert second == f"{document} s{int(sentence[1:]) + 1}"
        else:
            assert second.split()[0] != document
    assert sentence_pairs(texts) == pairs  # drawn with a fixed seed: the encoding cache stays valid


def test_next_sentence_prediction_end_to_end(corpus: Path, tmp_path: Path, run_cli) -> None:
    from transformers import pipeline

    recipe = bert_recipe(corpus, tmp_path / "nsp", txt_unit="paragraph", next_sentence=True)
    out = llmkit.finetune(recipe).output_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_next_sentence_accuracy"] <= 1 and 0 <= metrics["eval_masked_accuracy"] <= 1
    # perplexity is the masked LM's alone (the run's loss adds the next-sentence loss)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_masked_lm_loss"]), rel=1e-6)
    assert metrics["eval_loss"] > metrics["eval_masked_lm_loss"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    assert "eval_next_sentence_accuracy" in (out / "report.md").read_text()
    assert len(pipeline("fill-mask", model=str(out))("the food was [MASK] .")) == 5
    result = run_cli("fill-mask", "the food was [MASK] .", "--model", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["masks"][0]) == 5


def test_next_sentence_pairs_as_the_model_sees_them(corpus: Path, tmp_path: Path) -> None:
    from llmkit.training.validate import validate

    lines = validate(bert_recipe(corpus, tmp_path / "v", txt_unit="paragraph", next_sentence=True))
    assert any(line.strip().startswith("next sentence: ") for line in lines)
    assert any("[SEP]" in line and line.count("[SEP]") == 2 for line in lines if "input (" in line)


def test_next_sentence_with_an_existing_bert_gets_a_new_head(corpus: Path, tmp_path: Path, capsys) -> None:
    recipe = bert_recipe(corpus, tmp_path / "minibert", txt_unit="paragraph", next_sentence=True)
    recipe["model"] = "tiny-bert"
    del recipe["tokenizer"]
    out = llmkit.finetune(recipe).output_dir
    assert "has no next-sentence head; a new one was initialised" in capsys.readouterr().err
    assert "eval_next_sentence_accuracy" in json.loads((out / "metrics.json").read_text())


# -- a GPT from scratch -----------------------------------------------------------------------------------
def test_gpt_from_scratch_end_to_end(tmp_path: Path, run_cli) -> None:
    from transformers import pipeline

    speeches = write_speeches(tmp_path / "speeches.txt", 180)  # 25,000 characters
    recipe = {
        "task": "generation",
        "model": {"from_scratch": dict(TINY_GPT)},
        "tokenizer": {"train": True, "vocab_size": 400},
        "data": {"train": str(speeches), "max_length": 64, "packing": True},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4},
        "output_dir": str(tmp_path / "gpt"),
    }
    out = llmkit.finetune(recipe).output_dir
    stats = json.loads((out / "run_stats.json").read_text())["pretraining"]
    assert stats["model_class"] == "GPT2LMHeadModel" and stats["tokenizer"]["type"] == "bpe"
    assert stats["tokenizer"]["lowercase"] is False
    config = json.loads((out / "config.json").read_text())
    assert config["n_positions"] == 128 and config["eos_token_id"] == 0
    assert "eval_perplexity" in json.loads((out / "metrics.json").read_text())
    generated = pipeline("text-generation", model=str(out))("ROMEO:", max_new_tokens=5)
    assert generated[0]["generated_text"].startswith("ROMEO:")
    result = run_cli("generate", "ROMEO:", "--model", str(out), "--max-new-tokens", "5")
    assert result.exit_code == 0, result.stderr


# -- the bundled recipes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pretrain-bert-brown", "pretrain-gpt-shakespeare"])
def test_bundled_pretraining_recipes_run_on_shared_data(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli, real_data_dir: Path
) -> None:
    """From the CLI and the Python API, on their documented shared-data overrides (read from the real-data
    folder), cut to a few steps."""
    monkeypatch.chdir(REPO)
    path = REPO / "recipes" / f"{name}.yaml"
    line = next(line for line in path.read_text().splitlines() if line.startswith("# shared data: "))
    shared = line.removeprefix("# shared data: ").replace("../shared/data", str(real_data_dir)).split()
    quick = [
        "data.max_train_samples=40",
        "data.max_eval_samples=8",
        "training.max_steps=2",
        "tokenizer.vocab_size=600",
    ]
    api = llmkit.finetune(name, [*shared, *quick, f"output_dir={tmp_path / 'api'}"])
    assert api.metrics["eval_loss"] > 0
    result = run_cli("finetune", name, *shared, *quick, f"output_dir={tmp_path / 'cli'}")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "cli" / "tokenizer.json").exists()


# -- bad input: one line, exit 2 ---------------------------------------------------------------------------
@pytest.fixture
def no_boundaries(tmp_path: Path) -> Path:
    path = tmp_path / "flat.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


BAD = {
    "unknown size": (
        ["model.from_scratch=bert-tiny", "tokenizer.train=true"],
        r"model.from_scratch 'bert-tiny' is not a named size \(did you mean 'bert-mini'\?\); the sizes are "
        r"bert-mini, bert-small, gpt2-mini, gpt2-small",
    ),
    "vocab too small": (
        ["model.from_scratch=bert-mini", "tokenizer.train=true", "tokenizer.vocab_size=4"],
        r"tokenizer.vocab_size 4 is too small: the special tokens alone "
        r"\(\[PAD\], \[UNK\], \[CLS\], \[SEP\], \[MASK\]\) take 5 ids; "
        r"set tokenizer.vocab_size to at least 6",
    ),
    "bpe vocab below the bytes": (
        [
            "model.from_scratch=bert-mini",
            "tokenizer.train=true",
            "tokenizer.type=bpe",
            "tokenizer.vocab_size=100",
        ],
        r"byte-level BPE starts from 256 byte symbols; set tokenizer.vocab_size to at least 262",
    ),
    "NSP on a txt without document boundaries": (
        [
            "model.from_scratch=bert-mini",
            "tokenizer.train=true",
            "data.next_sentence=true",
            "data.txt_unit=paragraph",
            "data.validation_split=0",
        ],
        r"flat.txt has no document boundaries \(no blank line between documents\)",
    ),
    "NSP on lines": (
        ["model.from_scratch=bert-mini", "tokenizer.train=true", "data.next_sentence=true"],
        r"data.next_sentence needs documents, and data.train .*flat.txt is read one line per row "
        r"\(data.txt_unit=line\); set data.txt_unit=paragraph",
    ),
    "from_scratch for classification": (
        ["model.from_scratch=bert-mini", "tokenizer.train=true"],
        r"model.from_scratch does not work for task classification: it needs a model that already knows the "
        r"language; pre-train one with task fill-mask, generation",
    ),
    "a BERT for generation": (
        ["model.from_scratch=bert-mini", "tokenizer.train=true"],
        r"model.from_scratch bert-mini is an encoder \(bert\), which task generation cannot train; "
        r"use one of: gpt2-mini, gpt2-small",
    ),
    "no tokenizer": (
        ["model.from_scratch=bert-mini"],
        r"model.from_scratch needs one tokenizer: tokenizer.train=true",
    ),
    "a tokenizer without from_scratch": (
        ["model=tiny-bert", "tokenizer.train=true"],
        r"the tokenizer section goes with model.from_scratch",
    ),
    "unknown config field": (
        ["model.from_scratch={size: bert-mini, hidden_layers: 2}", "tokenizer.train=true"],
        r"bert configs have no field 'hidden_layers' \(did you mean 'num_hidden_layers'\?\)",
    ),
    "LoRA on nothing": (
        ["model.from_scratch=bert-mini", "tokenizer.train=true", "peft.method=lora"],
        r"a peft section trains adapters on a pre-trained model, and model.from_scratch has none",
    ),
    "positions shorter than max_length": (
        ["model.from_scratch=bert-mini", "tokenizer.train=true", "data.max_length=1024"],
        r"data.max_length=1024 is longer than bert-mini's 512 positions",
    ),
}


#: The recipe a case starts from when it is not fill-mask-brown (whose data keys are fill-mask's).
OTHER_RECIPES = {
    "from_scratch for classification": "classification",
    "a BERT for generation": "generation-shakespeare",
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_pretraining_input_is_one_line_exit_2(
    case: str, no_boundaries: Path, tmp_path: Path, run_cli
) -> None:
    overrides, expected = BAD[case]
    out = tmp_path / "out"
    recipe = OTHER_RECIPES.get(case, "fill-mask-brown")
    data = [] if recipe == "classification" else [f"data.train={no_boundaries}"]
    result = run_cli("finetune", recipe, *data, f"output_dir={out}", *overrides)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists()


def test_a_chat_dataset_cannot_pre_train(tmp_path: Path) -> None:
    chats = tmp_path / "chats.jsonl"
    rows = [{"instruction": f"say {w}", "output": w} for w in ("yes", "no", "maybe", "later")]
    chats.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = {
        "task": "generation",
        "model": {"from_scratch": dict(TINY_GPT)},
        "tokenizer": {"train": True, "vocab_size": 400},
        "data": {"train": str(chats), "max_length": 64},
        "output_dir": str(tmp_path / "out"),
    }
    with pytest.raises(
        LlmkitError, match=r"model.from_scratch pre-trains on plain text, and this is instruction"
    ):
        llmkit.finetune(recipe)


def test_a_streamed_corpus_trains_its_tokenizer_on_a_sample(tmp_path: Path) -> None:
    """data.streaming with a tokenizer trained from scratch: the tokenizer learns from tokenizer.stream_sample
    texts sampled from the stream (never the whole corpus in memory), and the run trains on the stream."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{SENTENCES[i % len(SENTENCES)]} line {i}\n" for i in range(300)))
    config = bert_recipe(corpus, tmp_path / "out", streaming=True, max_eval_samples=20)
    del config["data"]["validation_split"]
    config["tokenizer"]["stream_sample"] = 50
    result = llmkit.finetune(config)
    stats = json.loads((result.output_dir / "run_stats.json").read_text())["pretraining"]
    assert stats["tokenizer"]["training_texts"] == 50
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["rows"]["train"] == "streamed"
    assert 0 <= result.metrics["eval_masked_accuracy"] <= 1
