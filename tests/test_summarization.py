"""Summarization on tiny T5, tiny BART and tiny GPT-2: ROUGE, labels, truncation, recipes end to end, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.metrics import load_metrics
from llmkit.models.resolve import resolve_model
from llmkit.tasks.causal_lm import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, generate_left_padded
from llmkit.tasks.summarization import RougeInBatches, SummarizationTask
from tests.lookalikes import write_dialogues

RECIPE = "summarize-dialogsum"
# A ChatML template like SmolLM2's, to test the "model has its own template" path on tiny-gpt2.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def task(model: str = "tiny-gpt2", **data) -> SummarizationTask:
    """A task checked against a tiny model (lengths within tiny-gpt2's 256 positions unless given)."""
    lengths = {"max_length": 256, "max_target_length": 64}
    made = SummarizationTask({**COMMON_DATA_DEFAULTS, **SummarizationTask.data_defaults, **lengths, **data})
    made.check_model(resolve_model(model))
    return made


def tokenizer_for(model: str):
    from llmkit.models.resolve import load_tokenizer

    return load_tokenizer(resolve_model(model))


def encode(summarization: SummarizationTask, tokenizer, rows: list[dict]):
    from datasets import Dataset

    return summarization.encode(Dataset.from_list(rows), tokenizer)


@pytest.fixture(scope="module")
def dialogsum_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 training and 6 validation dialogues shaped as DialogSum's (JSON lines: fname, dialogue, summary,
    topic)."""
    folder = tmp_path_factory.mktemp("dialogsum")
    counts = {"train": 24, "validation": 6}
    return {name: write_dialogues(folder / f"{name}.jsonl", count, name) for name, count in counts.items()}


# -- ROUGE --------------------------------------------------------------------------------------------
def test_rouge_matches_hand_computed_values() -> None:
    rouge = load_metrics("rouge")
    # reference "the cat lay on the mat", prediction "the cat sat on the mat": 6 unigrams each, 5 shared
    # (the x2, cat, on, mat) -> P = R = F = 5/6; bigrams: 3 of 5 shared (the cat, on the, the mat) -> 3/5;
    # longest common subsequence "the cat on the mat" = 5 -> 5/6.
    one = rouge.compute(predictions=["the cat sat on the mat"], references=["the cat lay on the mat"])
    assert one == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6, "rougeLsum": 5 / 6})
    # Two sentences in swapped order: every unigram matches (1), 2 of 3 bigrams ("hello there", "general
    # kenobi"), the LCS of the whole texts is 2 of 4 words, but per sentence (ROUGE-Lsum) all 4 match.
    swapped = rouge.compute(
        predictions=["Hello there. General Kenobi!"], references=["General Kenobi! Hello there."]
    )
    assert swapped == pytest.approx({"rouge1": 1.0, "rouge2": 2 / 3, "rougeL": 2 / 4, "rougeLsum": 1.0})
    # precision 1/1, recall 1/4 -> F = 2 * 1 * 0.25 / 1.25 = 0.4; unrelated texts score 0; means over examples
    short = rouge.compute(predictions=["cat", "dog"], references=["the cat sat down", "a bird"])
    assert short["rouge1"] == pytest.approx((0.4 + 0.0) / 2)
    per_example = rouge.compute(
        predictions=["cat", "dog"], references=["the cat sat down", "a bird"], use_aggregator=False
    )
    assert per_example["rouge1"] == pytest.approx([0.4, 0.0])


def test_rouge_stems_and_ignores_case_and_punctuation() -> None:
    rouge = load_metrics("rouge")
    assert rouge.compute(predictions=["The Cats, running!"], references=["the cat runs"])[
        "rouge1"
    ] == pytest.approx(1.0)
    plain = rouge.compute(predictions=["cats running"], references=["cat runs"], use_stemmer=False)
    assert plain["rouge1"] == 0.0


def test_rouge_in_batches_equals_rouge_over_everything() -> None:
    """The evaluation's running sums give the same scores as scoring every summary at once."""
    import numpy as np
    from transformers import EvalPrediction

    tokenizer = tokenizer_for("tiny-gpt2")
    predictions = ["the food was great", "a lovely room", "i hated it", "the best concert"]
    references = ["the food was fresh and great", "a dirty room", "i loved every minute", "the best film"]

    def ids(texts: list[str]) -> np.ndarray:
        rows = tokenizer(texts).input_ids
        width = max(map(len, rows))
        return np.array([row + [IGNORE_INDEX] * (width - len(row)) for row in rows])

    scorer = RougeInBatches(tokenizer)
    assert scorer(EvalPrediction(ids(predictions[:3]), ids(references[:3])), compute_result=False) == {}
    batched = scorer(EvalPrediction(ids(predictions[3:]), ids(references[3:])), compute_result=True)
    whole = load_metrics("rouge").compute(predictions=predictions, references=references)
    assert {key: batched[key] for key in whole} == pytest.approx(whole)
    assert batched["gen_len"] == pytest.approx(np.mean([len(tokenizer(p).input_ids) for p in predictions]))


# -- decoder-only: labels and truncation ----------------------------------------------------------------
def test_decoder_only_labels_cover_the_summary_only() -> None:
    tokenizer = tokenizer_for("tiny-gpt2")
    summarization = task(prompt="Summarize:\n\n{document}")
    row = {"document": "#Person1#: Hi.\n#Person2#: Hello, how are you?", "summary": "They greet."}
    encoded = encode(summarization, tokenizer, [row])[0]

    ids, labels = encoded["input_ids"], encoded["labels"]
    learned = [token for token, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    prompt_length = labels.index(next(label for label in labels if label != IGNORE_INDEX))
    assert all(label == IGNORE_INDEX for label in labels[:prompt_length])
    assert labels[prompt_length:] == ids[prompt_length:]  # every token after the prompt is learned
    # llmkit's documented template (tiny-gpt2 has none): the summary and its EOS are learned, nothing else
    assert tokenizer.decode(learned) == "They greet.<|endoftext|>\n\n"
    assert tokenizer.decode(ids[:prompt_length]) == (
        "### Instruction:\nSummarize:\n\n#Person1#: Hi.\n#Person2#: Hello, how are you?\n\n### Response:\n"
    )
    assert encoded["truncated"] is False
    assert tokenizer.chat_template is None  # encode has no side effects; the run's hook sets it:
    summarization.prepare_tokenizer(tokenizer)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE  # saved with the fine-tuned model


def test_decoder_only_with_the_models_chat_template_learns_reply_and_end_of_turn() -> None:
    tokenizer = tokenizer_for("tiny-gpt2")
    tokenizer.chat_template = CHATML
    encoded = encode(task(), tokenizer, [{"document": "A long story.", "summary": "Short."}])[0]
    learned = [t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != -100]
    assert tokenizer.decode(learned) == "Short.<|im_end|>\n"
    assert tokenizer.decode(encoded["input_ids"]).startswith("<|im_start|>user\nSummarize this text")


def test_long_documents_lose_their_end_and_nothing_else() -> None:
    tokenizer = tokenizer_for("tiny-gpt2")
    summarization = task(prompt="Summarize:\n\n{document}\n\nBe brief.", max_length=96, max_target_length=32)
    document = " ".join(f"word{i}" for i in range(200))
    summary = "a summary " * 30  # longer than max_target_length as well
    example = encode(summarization, tokenizer, [{"document": document, "summary": summary}])[0]

    labels = example["labels"]
    prompt_length = sum(label == IGNORE_INDEX for label in labels)
    assert prompt_length == 96 - 32 and len(example["input_ids"]) == 96  # prompt budget + summary budget
    prompt = tokenizer.decode(example["input_ids"][:prompt_length])
    assert prompt.startswith("### Instruction:\nSummarize:\n\nword0 word1")
    assert prompt.endswith("\n\nBe brief.\n\n### Response:\n")  # the instructions after the document stay
    assert "word199" not in prompt  # the document's end is what goes
    assert example["truncated"] is True
    # the prompt a test split gets (no summary) is the same prompt, so evaluation and inference agree
    alone = encode(summarization, tokenizer, [{"document": document}])[0]
    assert alone["input_ids"] == example["input_ids"][:prompt_length] and "labels" not in alone


def test_a_prefix_that_fills_max_length_is_an_error() -> None:
    """A source cut to fit after a prefix as long as data.max_length would be empty in every example."""
    tokenizer = tokenizer_for("tiny-t5")
    prefix = "please write a short summary of the following long document: "
    summarization = task("tiny-t5", max_length=8, source_prefix=prefix)
    with pytest.raises(LlmkitError, match=r"data.source_prefix .* takes \d+ tokens .* data.max_length=8"):
        encode(summarization, tokenizer, [{"document": "the food was great", "summary": "great food"}])
    roomy = task("tiny-t5", max_length=64, source_prefix=prefix)
    assert encode(roomy, tokenizer, [{"document": "the food was great", "summary": "great food"}])


def test_seq2seq_sources_get_the_prefix_and_are_cut_at_max_length() -> None:
    tokenizer = tokenizer_for("tiny-t5")
    summarization = task("tiny-t5", max_length=16, max_target_length=4)
    rows = [
        {"document": "the food was great " * 10, "summary": "great food and a lovely room"},
        {"document": "short", "summary": "tiny"},
    ]
    long, short = encode(summarization, tokenizer, rows)
    assert tokenizer.decode(long["input_ids"]).startswith("summarize: the food")  # T5's default prefix
    assert len(long["input_ids"]) == 16 and long["input_ids"][-1] == tokenizer.eos_token_id
    assert long["truncated"] is True and short["truncated"] is False
    assert len(long["labels"]) == 4
    bart = task("tiny-bart")
    assert (
        not tokenizer_for("tiny-bart")
        .decode(encode(bart, tokenizer_for("tiny-bart"), rows[1:])[0]["input_ids"])
        .startswith("<s>summarize")
    )  # no prefix for BART


def test_left_padded_batch_generation_equals_one_prompt_at_a_time() -> None:
    from llmkit.tasks.causal_lm import load_causal_lm

    model = load_causal_lm(resolve_model("tiny-gpt2")).eval()
    tokenizer = tokenizer_for("tiny-gpt2")
    prompts = [tokenizer(text).input_ids for text in ("the food", "a wonderful film with a great cast and")]
    batched = generate_left_padded(model, prompts, tokenizer.pad_token_id, max_new_tokens=6)
    for row, prompt in enumerate(prompts):
        alone = generate_left_padded(model, [prompt], tokenizer.pad_token_id, max_new_tokens=6)
        assert batched[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_training_loss_computes_logits_only_where_labels_are_and_equals_the_models() -> None:
    import torch
    from transformers import TrainingArguments

    from llmkit.tasks.causal_lm import CausalLMCollator, causal_lm_trainer_class, load_causal_lm

    tokenizer = tokenizer_for("tiny-gpt2")
    model = load_causal_lm(resolve_model("tiny-gpt2")).train()
    for module in model.modules():  # dropout off: both paths must see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    rows = [{"document": "the food was great " * k, "summary": "good food"} for k in (1, 4)]
    encoded = encode(task(), tokenizer, rows)
    batch = CausalLMCollator(tokenizer.pad_token_id)([dict(row) for row in encoded])
    trainer = causal_lm_trainer_class()(model=model, args=TrainingArguments(".", report_to="none"))
    head = model.get_output_embeddings()
    seen: list[int] = []
    hook = head.register_forward_hook(lambda _module, args, _out: seen.append(args[0].shape[0]))
    count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    fast = trainer.compute_loss(model, batch, num_items_in_batch=count)
    hook.remove()
    assert seen == [int(count)]  # vocabulary logits for the predicted positions only
    torch.testing.assert_close(fast, model(**batch, num_items_in_batch=count).loss)
    torch.testing.assert_close(trainer.compute_loss(model, batch), model(**batch).loss)


@pytest.mark.parametrize(
    ("config", "family"),
    [
        (
            {"model_type": "t5", "is_encoder_decoder": True, "architectures": ["T5ForConditionalGeneration"]},
            "seq2seq",
        ),
        ({"model_type": "bart", "is_encoder_decoder": True}, "seq2seq"),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "causal"),
        ({"model_type": "bert", "architectures": ["BertModel"]}, None),
    ],
)
def test_the_family_comes_from_the_config(config: dict, family: str | None) -> None:
    from llmkit.tasks.summarization import model_family

    assert model_family(config)[0] == family


# -- recipes end to end ------------------------------------------------------------------------------
def finetune(model: str, files: dict[str, Path], out: Path, *extra: str):
    return llmkit.finetune(
        RECIPE,
        [
            f"model={model}",
            f"data.train={files['train']}",
            f"data.validation={files['validation']}",
            "data.max_length=192",
            "data.max_target_length=48",
            "data.max_new_tokens=12",
            "training.max_steps=4",
            "training.learning_rate=3e-3",
            "training.per_device_train_batch_size=4",
            "training.per_device_eval_batch_size=4",
            "training.eval_on_start=true",
            f"output_dir={out}",
            *extra,
        ],
    )


def check_run(result, validation_rows: int) -> dict:
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert 0.0 <= metrics[f"eval_{key}"] <= 1.0 and f"eval_before_{key}" in metrics
    assert 0 <= metrics["eval_gen_len"] <= 12  # generated at evaluation, at most max_new_tokens
    assert metrics["eval_loss"] < metrics["eval_before_loss"]  # 4 steps at a high rate: a random model learns
    assert 0 < metrics["train_truncated_documents"] <= 24  # dialogues are longer than 192 tokens
    assert 0 <= metrics["eval_truncated_documents"] <= validation_rows
    recipe = (result.output_dir / "recipe.yaml").read_text()
    assert "task: summarization" in recipe and "document: dialogue" in recipe
    return metrics


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-bart"])
def test_dialogsum_recipe_end_to_end_on_encoder_decoders(model: str, dialogsum_files, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    result = finetune(model, dialogsum_files, tmp_path / "out")
    check_run(result, validation_rows=6)
    # a plain HF folder: Auto classes load it and generate
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(result.output_dir)
    inputs = tokenizer(["#Person1#: Hi.\n#Person2#: Hello."], return_tensors="pt")
    with torch.no_grad():
        output = loaded.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[0] == 1 and 1 < output.shape[1] <= 6


def test_dialogsum_recipe_end_to_end_on_a_decoder_only_model(
    dialogsum_files, tmp_path: Path, run_cli
) -> None:
    from transformers import pipeline

    result = finetune("tiny-gpt2", dialogsum_files, tmp_path / "out")
    metrics = check_run(result, validation_rows=6)
    assert "eval_perplexity" in metrics
    assert (result.output_dir / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE
    generate = pipeline("text-generation", model=str(result.output_dir))
    text = generate("### Instruction:\nSummarize", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("### Instruction:\nSummarize")

    # the saved run summarizes with its own settings (column, prompt, lengths) from recipe.yaml
    cli = run_cli(
        "summarize", "--input", dialogsum_files["validation"], "--model", result.output_dir, "--json"
    )
    assert cli.exit_code == 0, cli.stderr
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(rows) == 6 and all(isinstance(row["generated_summary"], str) for row in rows)
    assert rows[0]["fname"] == "dev_0" and rows[0]["summary"]  # the input row is kept beside the summary


def test_test_split_without_summaries_gets_predictions(dialogsum_files, tmp_path: Path) -> None:
    test = tmp_path / "test.jsonl"
    lines = dialogsum_files["validation"].read_text().splitlines()[:2]
    test.write_text("".join(json.dumps({"dialogue": json.loads(line)["dialogue"]}) + "\n" for line in lines))
    result = finetune(
        "tiny-bart", dialogsum_files, tmp_path / "out", f"data.test={test}", "training.max_steps=1"
    )
    predictions = [json.loads(line) for line in (result.output_dir / "test_predictions.jsonl").open()]
    assert len(predictions) == 2 and all(isinstance(p["generated_summary"], str) for p in predictions)


def test_validate_shows_the_family_and_loss_positions(run_cli, dialogsum_files) -> None:
    result = run_cli(
        "validate",
        RECIPE,
        "model=tiny-gpt2",
        f"data.train={dialogsum_files['train']}",
        "data.max_length=256",
        "data.max_target_length=64",
        "-n",
        "1",
    )
    assert result.exit_code == 0, result.stderr
    assert "model family: decoder-only" in result.stdout and "loss on " in result.stdout


# -- llmkit summarize ---------------------------------------------------------------------------------
def test_summarize_text_file_and_output(run_cli, tmp_path: Path) -> None:
    documents = tmp_path / "dialogues.txt"
    documents.write_text("#Person1#: Hi.\n#Person2#: Hello.\n\n#Person1#: Bye.\n#Person2#: See you.\n")
    output = tmp_path / "summaries.jsonl"
    result = run_cli(
        "summarize", "--input", documents, "--model", "tiny-t5", "--max-new-tokens", "4", "--output", output
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in rows] == [
        "#Person1#: Hi.\n#Person2#: Hello.",
        "#Person1#: Bye.\n#Person2#: See you.",
    ]
    assert result.stdout == "" and "2 summaries written" in result.stderr

    one = run_cli(
        "summarize", "the food was great and fresh", "--model", "tiny-gpt2", "--max-new-tokens", "3"
    )
    assert one.exit_code == 0, one.stderr
    assert len(one.stdout.splitlines()) <= 1  # one summary (possibly empty for a random model), one line


BAD_SUMMARIZE = [
    ("a model that cannot summarize", ["hello", "--model", "tiny-bert"], "cannot summarize: it is neither"),
    ("an empty document", ["  ", "--model", "tiny-t5"], "the document is empty"),
    ("an output that is not JSON lines", ["hi", "--model", "tiny-t5", "--output", "out.csv"], "use a .jsonl"),
    ("a missing model folder", ["hi", "--model", "./nowhere"], "model folder nowhere does not exist"),
    ("zero beams", ["hi", "--model", "tiny-t5", "--num-beams", "0"], "--num-beams must be at least 1"),
]


@pytest.mark.parametrize(("name", "args", "expected"), BAD_SUMMARIZE, ids=[c[0] for c in BAD_SUMMARIZE])
def test_bad_summarize_calls_are_one_line_exit_2(run_cli, name, args, expected) -> None:
    result = run_cli("summarize", *args)
    assert result.exit_code == 2, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_summarize_names_the_missing_input_column(run_cli, tmp_path: Path) -> None:
    table = tmp_path / "rows.jsonl"
    table.write_text('{"dialogue": "hi", "topic": "greeting"}\n')
    result = run_cli("summarize", "--input", table, "--model", "tiny-t5")
    assert result.exit_code == 2
    assert "no document column 'document'; columns are: dialogue, topic; pass --column" in result.stderr
    assert run_cli("summarize", "--input", table, "--model", "tiny-t5", "--column", "dialogue").exit_code == 0


def test_summarization_task_rejects_bad_settings() -> None:
    with pytest.raises(LlmkitError, match=r"data\.prompt must contain \{document\} exactly once"):
        task(prompt="Summarize this.")
    with pytest.raises(LlmkitError, match=r"data\.num_beams must be a whole number of at least 1"):
        task(num_beams=0)
    with pytest.raises(
        LlmkitError, match=r"data\.repetition_penalty must be a number above 0 \(1: no penalty"
    ):
        task(repetition_penalty=0)
    with pytest.raises(LlmkitError, match=r"leaves no room for the prompt"):
        task(max_length=64, max_target_length=64)


@pytest.mark.parametrize("model", ["tiny-bart", "tiny-gpt2"])
def test_a_repetition_penalty_reaches_predictions_and_evaluation(
    model: str, dialogsum_files, tmp_path: Path, run_cli
) -> None:
    """An untrained tiny model loops under greedy decoding; data.repetition_penalty 50 breaks the loops in
    the test split's predictions (more distinct tokens), and the run's own evaluation decodes the same way:
    `llmkit evaluate` (the predictions' path) on the validation file gives back its eval ROUGE exactly."""
    test = tmp_path / "test.jsonl"
    dialogues = dialogsum_files["validation"].read_text().splitlines()
    test.write_text(
        "".join(json.dumps({"dialogue": json.loads(line)["dialogue"]}) + "\n" for line in dialogues)
    )
    tokenizer = tokenizer_for(model)
    distinct, runs = {}, {}
    for penalty in ("1", "50"):
        runs[penalty] = finetune(
            model,
            dialogsum_files,
            tmp_path / penalty,
            f"data.test={test}",
            f"data.repetition_penalty={penalty}",
            "training.max_steps=1",
            "training.learning_rate=1e-9",  # the model as it was: the decoding makes the difference
        ).output_dir
        predictions = [
            json.loads(line)["generated_summary"]
            for line in (runs[penalty] / "test_predictions.jsonl").open()
        ]
        distinct[penalty] = sum(len(set(tokenizer(text).input_ids)) for text in predictions)
    assert distinct["50"] > distinct["1"] + 2 * len(dialogues), distinct
    run = runs["50"]
    metrics = json.loads((run / "metrics.json").read_text())
    result = run_cli(
        "evaluate",
        run,
        "--data",
        dialogsum_files["validation"],
        "--output",
        tmp_path / "ev",
        "--resamples",
        "10",
    )
    assert result.exit_code == 0, result.stderr
    scored = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["models"][0]["metrics"]
    for key in ("eval_rouge1", "eval_rouge2", "eval_rougeL"):
        assert scored[key] == pytest.approx(metrics[key], abs=1e-9), key
