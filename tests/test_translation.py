"""Translation on tiny T5, tiny BART and tiny GPT-2: BLEU/chrF, prompts and prefixes, data layouts, recipes
end to end, `llmkit translate`, bad input; SmolLM2 (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.metrics import load_metrics
from llmkit.models.resolve import resolve_model
from llmkit.tasks.causal_lm import IGNORE_INDEX
from llmkit.tasks.translation import BleuInBatches, TranslationTask, language_name
from tests.lookalikes import write_caption_pairs

RECIPE = "translate-multi30k"
PAIRS = [
    {"en": "A dog runs across the grass.", "de": "Ein Hund rennt über das Gras."},
    {"en": "Two men are playing football.", "de": "Zwei Männer spielen Fußball."},
    {"en": "A woman is reading a book.", "de": "Eine Frau liest ein Buch."},
    {"en": "Children are swimming in a lake.", "de": "Kinder schwimmen in einem See."},
]


def task(model: str = "tiny-gpt2", **data) -> TranslationTask:
    """An en -> de task checked against a tiny model (lengths within tiny-gpt2's 256 positions)."""
    settings = {"source_lang": "en", "target_lang": "de", "max_length": 128, "max_target_length": 48, **data}
    made = TranslationTask({**COMMON_DATA_DEFAULTS, **TranslationTask.data_defaults, **settings})
    made.check_model(resolve_model(model))
    return made


def tokenizer_for(model: str):
    from llmkit.models.resolve import load_tokenizer

    return load_tokenizer(resolve_model(model))


def encode(translation: TranslationTask, tokenizer, rows: list[dict]):
    from datasets import Dataset

    return translation.encode(Dataset.from_list(rows), tokenizer)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def multi30k_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """32 training and 8 validation caption pairs shaped as Multi30k's (JSON lines {en, de})."""
    folder = tmp_path_factory.mktemp("multi30k")
    return {
        "train": write_caption_pairs(folder / "train.jsonl", 32),
        "validation": write_caption_pairs(folder / "validation.jsonl", 8, start=32),
    }


# -- BLEU and chrF ------------------------------------------------------------------------------------
def test_bleu_and_chrf_are_sacrebleus_corpus_scores() -> None:
    import sacrebleu

    metric = load_metrics("translation")
    same = metric.compute(
        predictions=["Ein Hund rennt über das Gras."], references=["Ein Hund rennt über das Gras."]
    )
    assert same == pytest.approx({"bleu": 100.0, "chrf": 100.0})
    assert metric.compute(predictions=["xyz"], references=["Ein Hund."])["bleu"] == 0.0
    predictions = ["Ein Hund läuft über das Gras.", "Zwei Männer spielen Fußball auf dem Platz."]
    references = [pair["de"] for pair in PAIRS[:2]]
    scores = metric.compute(predictions=predictions, references=references)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score)
    # corpus BLEU pools n-gram counts: it is not the mean of the sentence scores
    sentences = [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(predictions, references, strict=True)]
    assert scores["bleu"] != pytest.approx(sum(sentences) / 2)


def test_bleu_in_batches_equals_bleu_over_everything() -> None:
    """The evaluation scores the whole corpus once at the end, not a mean of per-batch BLEU."""
    import numpy as np
    from transformers import EvalPrediction

    tokenizer = tokenizer_for("tiny-gpt2")
    predictions = ["the food was great", "a lovely room", "i hated it", "the best concert"]
    references = ["the food was fresh and great", "a dirty room", "i loved every minute", "the best film"]

    def ids(texts: list[str]) -> np.ndarray:
        rows = tokenizer(texts).input_ids
        width = max(map(len, rows))
        return np.array([row + [IGNORE_INDEX] * (width - len(row)) for row in rows])

    scorer = BleuInBatches(tokenizer)
    assert scorer(EvalPrediction(ids(predictions[:3]), ids(references[:3])), compute_result=False) == {}
    batched = scorer(EvalPrediction(ids(predictions[3:]), ids(references[3:])), compute_result=True)
    whole = load_metrics("translation").compute(predictions=predictions, references=references)
    assert {key: batched[key] for key in whole} == pytest.approx(whole)
    first = load_metrics("translation").compute(predictions=predictions[:3], references=references[:3])
    assert batched["bleu"] != pytest.approx((first["bleu"] + 0.0) / 2)  # not a mean of the two batches
    assert scorer.predictions == []  # reset for the next evaluation


# -- prompts, prefixes and labels ------------------------------------------------------------------------
def test_decoder_only_prompt_names_both_languages_and_labels_cover_the_translation_only() -> None:
    tokenizer = tokenizer_for("tiny-gpt2")
    translation = task()
    encoded = encode(translation, tokenizer, PAIRS[:1])[0]
    ids, labels = encoded["input_ids"], encoded["labels"]
    prompt_length = sum(label == IGNORE_INDEX for label in labels)
    assert all(label == IGNORE_INDEX for label in labels[:prompt_length])
    assert labels[prompt_length:] == ids[prompt_length:]
    assert tokenizer.decode(ids[:prompt_length]) == (
        "### Instruction:\nTranslate this English text to German:\n\nA dog runs across the grass.\n\n"
        "### Response:\n"
    )
    assert tokenizer.decode(labels[prompt_length:]) == "Ein Hund rennt über das Gras.<|endoftext|>\n\n"
    # a prompt of the recipe's own, and languages given by name or with a region
    custom = task(prompt="From {source_lang} into {target_lang}, please: {source}", target_lang="de_AT")
    prompt = encode(custom, tokenizer, [{"en": "Hi.", "de_AT": "Servus."}])[0]["input_ids"]
    assert "From English into German, please: Hi." in tokenizer.decode(prompt)
    assert language_name("Klingon") == "Klingon" and language_name("pt-BR") == "Portuguese"


def test_t5_gets_its_translation_prefix_and_bart_none() -> None:
    tokenizer = tokenizer_for("tiny-t5")
    t5 = task("tiny-t5", max_length=24, max_target_length=8)
    long, short = encode(
        t5, tokenizer, [{"en": "the food was great " * 10, "de": "gut"}, {"en": "A dog.", "de": "Hund."}]
    )
    assert tokenizer.decode(long["input_ids"]).startswith("translate English to German: the food")
    assert len(long["input_ids"]) == 24 and long["truncated"] is True and short["truncated"] is False
    assert len(long["labels"]) <= 8
    assert t5.data_summary({}) == [
        "model family: encoder-decoder; source prefix 'translate English to German: '"
    ]
    own = task("tiny-t5", source_prefix="en>de: ")
    assert tokenizer.decode(encode(own, tokenizer, PAIRS[:1])[0]["input_ids"]).startswith("en>de: A dog")
    bart = task("tiny-bart")
    assert bart.source_prefix() == ""
    ids = encode(bart, tokenizer_for("tiny-bart"), PAIRS[:1])[0]["input_ids"]
    assert tokenizer_for("tiny-bart").decode(ids) == "<s>A dog runs across the grass.</s>"


def test_summarization_and_translation_share_one_implementation() -> None:
    """Both are thin specialisations of TextToTextTask: neither encodes, generates or trains on its own."""
    from llmkit.tasks.summarization import SummarizationTask
    from llmkit.tasks.text_to_text import TextToTextTask

    for task_cls in (SummarizationTask, TranslationTask):
        assert issubclass(task_cls, TextToTextTask)
        shared = ("encode", "generate_targets", "trainer_class", "collator", "prompt_ids", "check_model")
        assert not [hook for hook in shared[:-1] if hook in vars(task_cls)], task_cls


# -- data layouts ----------------------------------------------------------------------------------------
def splits_for(tmp_path: Path, rows: list[dict], **data) -> tuple[TranslationTask, dict]:
    from llmkit.data.files import load_splits

    train = write_jsonl(tmp_path / "train.jsonl", rows)
    settings = {**COMMON_DATA_DEFAULTS, **TranslationTask.data_defaults, "train": str(train), **data}
    settings["validation_split"] = 0.0
    return TranslationTask(settings), load_splits(settings, seed=0)


def test_named_columns_and_language_columns_read_alike(tmp_path: Path) -> None:
    keyed, splits = splits_for(tmp_path, PAIRS, source_lang="en", target_lang="de")
    keyed.check_data(splits)
    named_rows = [{"src": pair["en"], "tgt": pair["de"]} for pair in PAIRS]
    named, named_splits = splits_for(
        tmp_path, named_rows, source="src", target="tgt", source_lang="en", target_lang="de"
    )
    named.check_data(named_splits)
    keyed.check_model(resolve_model("tiny-t5"))
    named.check_model(resolve_model("tiny-t5"))
    tokenizer = tokenizer_for("tiny-t5")
    one = keyed.encode(splits["train"].dataset, tokenizer)
    other = named.encode(named_splits["train"].dataset, tokenizer)
    assert one["input_ids"] == other["input_ids"] and one["labels"] == other["labels"]


def test_a_translation_column_of_language_dicts_is_unpacked(tmp_path: Path) -> None:
    """The Hub's layout (WMT, OPUS; run_translation.py's): one column of {language: text} dicts."""
    rows = [
        {"id": str(i), "translation": {"en": p["en"], "de": p["de"], "fr": None}} for i, p in enumerate(PAIRS)
    ]
    translation, splits = splits_for(tmp_path, rows, source_lang="en", target_lang="de")
    translation.check_data(splits)
    train = splits["train"].dataset
    assert train["en"] == [p["en"] for p in PAIRS] and train["de"] == [p["de"] for p in PAIRS]

    rows[2]["translation"]["de"] = None
    broken, broken_splits = splits_for(tmp_path, rows, source_lang="en", target_lang="de")
    with pytest.raises(LlmkitError, match=r"train.jsonl line 3: column 'translation' has no 'de' text"):
        broken.check_data(broken_splits)
    french, french_splits = splits_for(tmp_path, rows, source_lang="en", target_lang="fr")
    with pytest.raises(
        LlmkitError,
        match=r"no column 'fr' for the target language \(data.target_lang=fr\); columns are: id, "
        r"translation, en \(its 'translation' column holds de, en texts\)",
    ):
        french.check_data(french_splits)


def test_languages_and_columns_are_required_where_they_are_used() -> None:
    base = {**COMMON_DATA_DEFAULTS, **TranslationTask.data_defaults}
    with pytest.raises(LlmkitError, match=r"translation needs its source language: set data.source_lang"):
        TranslationTask({**base, "target_lang": "de"})
    # named columns without languages: fine for BART, but the decoder-only prompt and T5's prefix name them
    columns_only = {**base, "source": "src", "target": "tgt"}
    TranslationTask(dict(columns_only)).check_model(resolve_model("tiny-bart"))
    with pytest.raises(LlmkitError, match=r"data.prompt names the source language \(\{source_lang\}\)"):
        TranslationTask(dict(columns_only)).check_model(resolve_model("tiny-gpt2"))
    with pytest.raises(LlmkitError, match=r"T5's task prefix names the source language"):
        TranslationTask(dict(columns_only)).check_model(resolve_model("tiny-t5"))
    TranslationTask({**columns_only, "prompt": "Translate: {source}"}).check_model(resolve_model("tiny-gpt2"))
    with pytest.raises(LlmkitError, match=r"data.prompt must contain \{source\} exactly once"):
        TranslationTask({**base, "source_lang": "en", "target_lang": "de", "prompt": "Translate."})


# -- recipes end to end ----------------------------------------------------------------------------------
def finetune(model: str, files: dict[str, Path], out: Path, *extra: str):
    return llmkit.finetune(
        RECIPE,
        [
            f"model={model}",
            f"data.train={files['train']}",
            f"data.validation={files['validation']}",
            "data.max_length=200",
            "data.max_target_length=48",
            "data.max_new_tokens=12",
            "training.max_steps=4",
            "training.learning_rate=3e-3",
            "training.per_device_train_batch_size=8",
            "training.per_device_eval_batch_size=4",
            "training.eval_on_start=true",
            f"output_dir={out}",
            *extra,
        ],
    )


def check_run(result) -> dict:
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    for key in ("bleu", "chrf"):
        assert 0.0 <= metrics[f"eval_{key}"] <= 100.0 and f"eval_before_{key}" in metrics
    assert 0 <= metrics["eval_gen_len"] <= 12
    assert metrics["eval_loss"] < metrics["eval_before_loss"]  # 4 steps at a high rate: a random model learns
    assert metrics["train_truncated_sources"] == 0 and metrics["eval_truncated_sources"] == 0
    recipe = (result.output_dir / "recipe.yaml").read_text()
    assert "task: translation" in recipe and "source_lang: en" in recipe
    return metrics


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-bart"])
def test_multi30k_recipe_end_to_end_on_encoder_decoders(
    model: str, multi30k_files, tmp_path: Path, run_cli
) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    result = finetune(model, multi30k_files, tmp_path / "out")
    check_run(result)
    sample = json.loads((result.output_dir / "run_stats.json").read_text())["samples"][0]
    prefix = "translate English to German: " if model == "tiny-t5" else ""
    first = json.loads(multi30k_files["validation"].read_text().splitlines()[0])
    assert sample["input"] == prefix + first["en"] and sample["reference"] == first["de"]
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)  # a plain HF folder
    loaded = AutoModelForSeq2SeqLM.from_pretrained(result.output_dir)
    with torch.no_grad():
        output = loaded.generate(
            **tokenizer(["A dog."], return_tensors="pt"), max_new_tokens=5, do_sample=False
        )
    assert output.shape[0] == 1 and 1 < output.shape[1] <= 6
    # the run translates with its own settings (languages, prefix, columns) from recipe.yaml
    cli = run_cli(
        "translate", "--input", multi30k_files["validation"], "--model", result.output_dir, "--json"
    )
    assert cli.exit_code == 0, cli.stderr
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(rows) == 8 and all(isinstance(row["generated_translation"], str) for row in rows)
    assert rows[0]["en"] and rows[0]["de"]  # the input row is kept beside the translation


def test_multi30k_recipe_end_to_end_on_a_decoder_only_model(multi30k_files, tmp_path: Path) -> None:
    from transformers import pipeline

    from llmkit.inference.translate import translate

    result = finetune("tiny-gpt2", multi30k_files, tmp_path / "out")
    metrics = check_run(result)
    assert "eval_perplexity" in metrics
    # the report's samples are asked as the model is, and the model card's usage passes that to the pipeline
    sample = json.loads((result.output_dir / "run_stats.json").read_text())["samples"][0]
    first = json.loads(multi30k_files["validation"].read_text().splitlines()[0])
    assert sample["input"] == f"Translate this English text to German:\n\n{first['en']}"
    assert sample["reference"] == first["de"]
    assert (
        repr([{"role": "user", "content": sample["input"]}]) in (result.output_dir / "README.md").read_text()
    )
    generate = pipeline("text-generation", model=str(result.output_dir))
    chat = [{"role": "user", "content": "Translate this English text to German:\n\nA dog."}]
    reply = generate(chat, max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert reply[-1]["role"] == "assistant"  # the saved chat template serves the pipeline
    # the Python API, as the CLI calls it
    rows = translate("A dog runs.", model=str(result.output_dir), max_new_tokens=4)
    assert rows[0]["en"] == "A dog runs." and isinstance(rows[0]["generated_translation"], str)


def test_test_split_without_targets_gets_predictions(multi30k_files, tmp_path: Path) -> None:
    test = write_jsonl(tmp_path / "test.jsonl", [{"en": pair["en"]} for pair in PAIRS[:2]])
    result = finetune(
        "tiny-bart", multi30k_files, tmp_path / "out", f"data.test={test}", "training.max_steps=1"
    )
    predictions = [json.loads(line) for line in (result.output_dir / "test_predictions.jsonl").open()]
    assert len(predictions) == 2 and all(isinstance(p["generated_translation"], str) for p in predictions)


def test_validate_shows_the_prompt_with_both_languages(run_cli, multi30k_files) -> None:
    result = run_cli(
        "validate", RECIPE, "model=tiny-gpt2", f"data.train={multi30k_files['train']}", "-n", "1"
    )
    assert result.exit_code == 0, result.stderr
    assert "prompt 'Translate this English text to German:\\n\\n{source}'" in result.stdout
    assert "loss on " in result.stdout


# -- llmkit translate -------------------------------------------------------------------------------------
def test_translate_text_lines_and_output(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    lines = tmp_path / "sentences.txt"
    lines.write_text("A dog runs.\n\nTwo men play football.\n")
    output = tmp_path / "translations.jsonl"
    common = ["--model", "tiny-t5", "-s", "en", "-t", "de", "--max-new-tokens", "4"]
    result = run_cli("translate", "--input", lines, *common, "--output", output)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in rows] == ["A dog runs.", "Two men play football."]  # one text a line
    assert result.stdout == "" and "2 translations written" in result.stderr

    one = run_cli("translate", "A dog runs.", *common, "--json")
    assert one.exit_code == 0, one.stderr
    row = json.loads(one.stdout)
    assert row["en"] == "A dog runs." and isinstance(row["generated_translation"], str)

    monkeypatch.setattr("sys.stdin", io.StringIO("A dog runs.\nA cat sleeps.\n"))
    piped = run_cli("translate", "-", *common, "--json")
    assert piped.exit_code == 0, piped.stderr
    assert [json.loads(line)["en"] for line in piped.stdout.splitlines()] == ["A dog runs.", "A cat sleeps."]


BAD_TRANSLATE = [
    (
        "a model that cannot translate",
        ["hello", "--model", "tiny-bert", "-s", "en", "-t", "de"],
        "cannot translate",
    ),
    (
        "no languages for a zero-shot model",
        ["hello", "--model", "tiny-t5"],
        "pass --source-lang and --target-lang",
    ),
    ("an empty text", ["  ", "--model", "tiny-t5", "-s", "en", "-t", "de"], "the source text is empty"),
    ("an output that is not JSON lines", ["hi", "--model", "tiny-t5", "--output", "out.csv"], "use a .jsonl"),
    ("zero beams", ["hi", "--model", "tiny-t5", "-s", "en", "-t", "de", "--num-beams", "0"], "at least 1"),
]


@pytest.mark.parametrize(("name", "args", "expected"), BAD_TRANSLATE, ids=[c[0] for c in BAD_TRANSLATE])
def test_bad_translate_calls_are_one_line_exit_2(run_cli, name, args, expected) -> None:
    result = run_cli("translate", *args)
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_translate_names_the_missing_input_column(run_cli, tmp_path: Path) -> None:
    table = write_jsonl(tmp_path / "rows.jsonl", [{"english": "A dog.", "id": "1"}])
    common = ["--model", "tiny-t5", "-s", "en", "-t", "de", "--max-new-tokens", "2"]
    result = run_cli("translate", "--input", table, *common)
    assert result.exit_code == 2
    assert "no source text column 'en'; columns are: english, id; pass --column" in result.stderr
    assert run_cli("translate", "--input", table, *common, "--column", "english").exit_code == 0


# -- bad training data: one line naming file, row and column; exit 2; nothing written -----------------------
BAD_DATA = [
    ("empty source", [{"en": " ", "de": "Ein Hund."}], [], "line 3: column 'en' (data.source_lang) is empty"),
    ("empty target", [{"en": "A dog.", "de": ""}], [], "line 3: column 'de' (data.target_lang) is empty"),
    (
        "empty named target",
        [{"en": "A dog.", "de": None}],
        ["data.target=de"],
        "column 'de' (data.target) is empty",
    ),
    (
        "missing language column",
        [],
        ["data.target_lang=fr"],
        "no column 'fr' for the target language (data.target_lang=fr); columns are: en, de; name the target "
        "column with data.target=<one of them>",
    ),
    ("missing source column", [], ["data.source=english"], "no column 'english' (set by data.source)"),
]


@pytest.mark.parametrize(
    ("name", "extra_rows", "overrides", "expected"), BAD_DATA, ids=[c[0] for c in BAD_DATA]
)
def test_bad_translation_data_is_one_line_exit_2(
    run_cli, tmp_path: Path, name, extra_rows, overrides, expected
):
    train = write_jsonl(tmp_path / "train.jsonl", [*PAIRS[:2], *extra_rows])
    out = tmp_path / "out"
    result = run_cli(
        "finetune",
        RECIPE,
        "model=tiny-t5",
        f"data.train={train}",
        "data.validation=null",
        "data.validation_split=0",
        "training.max_steps=1",
        f"output_dir={out}",
        *overrides,
    )
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0] and (str(train) in lines[0] or "data.source" in expected), lines[0]
    assert not out.exists(), "nothing may be written for a bad input"


def test_a_missing_sacrebleu_is_said_before_anything_runs(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sacrebleu" else find_spec(name, *a)
    )
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    out = tmp_path / "out"
    result = run_cli("finetune", RECIPE, "model=tiny-t5", f"data.train={train}", f"output_dir={out}")
    assert result.exit_code == 2 and not out.exists()
    assert "install it with `pip install sacrebleu`" in result.stderr


# -- SmolLM2 -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_learns_multi30k_captions(multi30k_files, tmp_path: Path) -> None:
    """The real recipe's model, 6 steps on 32 caption pairs: the held-out loss falls and BLEU is scored."""
    result = llmkit.finetune(
        RECIPE,
        [
            f"data.train={multi30k_files['train']}",
            f"data.validation={multi30k_files['validation']}",
            "data.max_new_tokens=16",
            "data.max_eval_samples=4",
            "training.max_steps=6",
            "training.learning_rate=2e-4",
            "training.per_device_train_batch_size=4",
            "training.eval_on_start=true",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    metrics = result.metrics
    assert metrics["eval_loss"] < metrics["eval_before_loss"]
    assert 0.0 <= metrics["eval_bleu"] <= 100.0 and 0.0 < metrics["eval_chrf"] <= 100.0
