"""Zero-shot classification with a causal LM: verbaliser log-likelihoods as classification logits, scored and
predicted through the classification task's own path (`llmkit evaluate`, `llmkit predict`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmkit.models.resolve import load_tokenizer, resolve_model
from llmkit.tasks.zero_shot import load_verbalizer_model, prompt_ids, render_prompt, verbaliser_ids
from tests.conftest import NEGATIVE, POSITIVE, write_csv
from tests.test_evaluate import CASES, train_case

PROMPT = "Review: {text}\\nSentiment:"  # as a shell passes it: a backslash and an n
VERBALIZER = '{negative: [" bad", " awful film"], positive: [" good", " great", " good fun"]}'
SETTINGS = ["task=classification", f"data.verbalizer={VERBALIZER}", f"data.prompt={PROMPT}"]


def hand_scores(model, prompt: list[int], options: list[list[int]]) -> float:
    """log sum over the verbalisers of exp(sum of each token's log-probability), one sequence at a time."""
    totals = []
    for tokens in options:
        with torch.no_grad():
            log_probs = model(torch.tensor([prompt + tokens])).logits[0].log_softmax(dim=-1)
        totals.append(sum(log_probs[len(prompt) - 1 + step, token] for step, token in enumerate(tokens)))
    return torch.logsumexp(torch.stack(totals), dim=0).item()


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_logits_are_the_verbalisers_log_likelihoods_after_the_prompt(padding_side: str) -> None:
    folder = resolve_model("tiny-gpt2")
    tokenizer = load_tokenizer(folder)
    words = {"negative": [" bad", " awful film"], "positive": [" good", " great", " good fun"]}
    classifier = load_verbalizer_model(folder, words).eval()
    ids = verbaliser_ids(tokenizer, words)
    assert any(len(tokens) > 1 for options in ids for tokens in options)  # multi-token verbalisers
    prompts = [tokenizer(text).input_ids for text in ("Review: a fine day\nSentiment:", "ok", POSITIVE[0])]
    tokenizer.padding_side = padding_side
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    labels = torch.tensor([0, 1, 1])

    with torch.no_grad():
        output = classifier(**batch, labels=labels)

    expected = torch.tensor(
        [[hand_scores(classifier.language_model, prompt, options) for options in ids] for prompt in prompts]
    )
    assert output.logits.shape == (3, 2)
    assert torch.allclose(output.logits, expected, atol=1e-4)
    assert output.loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(expected, labels).item(), 1e-4
    )
    assert classifier.config.id2label == {0: "negative", 1: "positive"}


def test_the_prompt_places_the_texts_and_a_long_text_loses_its_end_not_the_instruction() -> None:
    assert render_prompt(PROMPT, "fine {braces}") == "Review: fine {braces}\nSentiment:"
    assert render_prompt("{text} / {text_pair}?", "a", "b") == "a / b?"
    tokenizer = load_tokenizer(resolve_model("tiny-gpt2"))
    data = {"prompt": PROMPT, "chat_prompt": False, "max_length": 24}
    ids = prompt_ids(tokenizer, data, " ".join(POSITIVE))
    assert len(ids) <= 24 and tokenizer.decode(ids).endswith("\nSentiment:")
    assert tokenizer.decode(ids).startswith("Review: a wonderful film")


def sentiment_file(tmp_path: Path, numbered: bool = False) -> Path:
    """20 rows; labels as names, or as 0/1 ids in the verbaliser's order (SST-2's form)."""
    rows = [[text, 1 if numbered else "positive"] for text in POSITIVE]
    rows += [[text, 0 if numbered else "negative"] for text in NEGATIVE]
    name = "numbered.tsv" if numbered else "rows.csv"
    if numbered:
        path = tmp_path / name
        path.write_text(
            "sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows), encoding="utf-8"
        )
        return path
    return write_csv(tmp_path / name, ["text", "label"], rows)


def expected_predictions(rows: Path, text_column: str) -> list[str]:
    """The classes the wrapper's logits pick for each row's prompt, computed here one row at a time."""
    import csv

    folder = resolve_model("tiny-gpt2")
    tokenizer = load_tokenizer(folder)
    words = {"negative": [" bad", " awful film"], "positive": [" good", " great", " good fun"]}
    classifier = load_verbalizer_model(folder, words).eval()
    delimiter = "\t" if rows.suffix == ".tsv" else ","
    with rows.open(encoding="utf-8") as handle:
        texts = [row[text_column] for row in csv.DictReader(handle, delimiter=delimiter)]
    data = {"prompt": PROMPT, "chat_prompt": False, "max_length": 128}
    picked = []
    for text in texts:
        with torch.no_grad():
            logits = classifier(torch.tensor([prompt_ids(tokenizer, data, text)])).logits
        picked.append(list(words)[int(logits.argmax())])
    return picked


@pytest.mark.parametrize("numbered", [False, True])
def test_evaluate_and_predict_score_a_causal_lm_zero_shot(numbered: bool, tmp_path: Path, run_cli) -> None:
    rows = sentiment_file(tmp_path, numbered)
    column = "sentence" if numbered else "text"
    settings = [*SETTINGS, f"data.text={column}"]
    out = tmp_path / "evaluation"

    # fp32 as predict and the hand computation run (evaluation autocasts to bf16 where training would)
    precision = "training.precision=fp32"
    result = run_cli("evaluate", "tiny-gpt2", *settings, precision, "--data", rows, "--output", out)

    assert result.exit_code == 0, result.stderr
    expected = expected_predictions(rows, column)
    gold = ["positive"] * 10 + ["negative"] * 10
    accuracy = sum(p == g for p, g in zip(expected, gold, strict=True)) / len(gold)
    record = json.loads((out / "evaluation.json").read_text())
    model = record["models"][0]
    assert model["task"] == "classification"
    assert model["metrics"]["eval_accuracy"] == pytest.approx(accuracy)
    low, high = model["intervals"]["eval_accuracy"]
    assert low <= accuracy <= high
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["predicted_label"] for row in predictions] == expected
    assert all(0.5 <= row["predicted_score"] <= 1 for row in predictions)

    predicted = run_cli("predict", "--model", "tiny-gpt2", "--input", rows, *settings)

    assert predicted.exit_code == 0, predicted.stderr
    answers = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [row["predicted_label"] for row in answers] == expected
    assert [row["predicted_score"] for row in answers] == pytest.approx(
        [row["predicted_score"] for row in predictions], abs=1e-5
    )


@pytest.mark.parametrize("adapter", [False, True])
def test_a_generation_run_is_scored_zero_shot_as_a_classifier(
    adapter: bool, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run trained for another task (in full, or a LoRA adapter): task=classification uses its model, not
    its recipe's data settings."""
    recipe, train_row, validation_row = CASES["generation-text"]
    monkeypatch.setitem(CASES, "generation-lora", ({**recipe, "peft": {"r": 4}}, train_row, validation_row))
    run, _ = train_case("generation-lora" if adapter else "generation-text", tmp_path / "run")
    assert (run / "adapter_config.json").exists() == adapter
    rows = sentiment_file(tmp_path)
    out = tmp_path / "evaluation"

    result = run_cli("evaluate", run, *SETTINGS, "--data", rows, "--output", out)

    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "evaluation.json").read_text())
    assert record["models"][0]["task"] == "classification"
    assert 0 <= record["models"][0]["metrics"]["eval_accuracy"] <= 1
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 20


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (["data.verbalizer=[good, bad]"], "data.verbalizer must map each label"),
        (["data.verbalizer={positive: [' good']}"], "at least two labels"),
        (['data.verbalizer={negative: [""], positive: [" good"]}'], "label 'negative' has an empty string"),
        (["data.verbalizer={negative: [1], positive: [' good']}"], "needs a string or a list of strings"),
        (["data.prompt=Sentiment:"], "data.prompt must be a template with {text}"),
        (["data.prompt={text} and {text_pair}"], "set data.text_pair"),
        (["data.chat_prompt=true"], "data.chat_prompt: model"),
        (["data.problem=multi_label"], "data.problem=multi_label"),
    ],
)
def test_bad_settings_are_one_line(settings: list[str], expected: str, tmp_path: Path, run_cli) -> None:
    rows = sentiment_file(tmp_path)
    result = run_cli(
        "evaluate", "tiny-gpt2", *SETTINGS, *settings, "--data", rows, "--output", tmp_path / "o"
    )
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_models_files_and_commands_are_one_line(tmp_path: Path, run_cli) -> None:
    rows = sentiment_file(tmp_path)
    other = write_csv(tmp_path / "other.csv", ["text", "label"], [["fine", "positive"], ["meh", "neutral"]])
    cases = [
        (("evaluate", "tiny-bert", *SETTINGS, "--data", rows), "data.verbalizer: model"),
        (
            ("evaluate", "tiny-gpt2", *SETTINGS, "--data", other),
            "label 'neutral' in column 'label' is not in",
        ),
        (("evaluate", "tiny-gpt2", *SETTINGS, "--data", rows, "--explain"), "--explain: a zero-shot"),
        (("predict", "--model", "tiny-bert", "--input", rows, *SETTINGS), "data.verbalizer: model"),
        (
            ("finetune", "model=tiny-gpt2", f"data.train={rows}", *SETTINGS[1:]),
            "data.verbalizer scores a causal LM zero-shot, with no training",
        ),
        (
            ("predict", "--model", "tiny-gpt2", "--input", rows, "task=classification", "data.prompt={text}"),
            "set data.verbalizer",
        ),
        (("predict", "--model", "tiny-gpt2", "--input", rows), "task=classification data.verbalizer"),
    ]
    for args, expected in cases:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and expected in lines[-1], (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "other.csv" in run_cli(*cases[1][0]).stderr  # the file is named


#: Clear sentiment, written for this test (not from any data set): 20 positive, 20 negative.
CLEAR_POSITIVE = [
    "This movie was wonderful, I loved every minute of it.",
    "An absolute masterpiece with brilliant acting.",
    "The best film I have seen all year.",
    "A delightful, heartwarming story that made me smile.",
    "Fantastic performances and a gripping plot.",
    "I enjoyed it so much that I watched it twice.",
    "Beautifully shot and deeply moving.",
    "A funny, clever and charming comedy.",
    "Great soundtrack, great cast, great fun.",
    "One of the most inspiring films ever made.",
    "The acting was superb and the story was excellent.",
    "A joy to watch from start to finish.",
    "Highly recommended, a truly great experience.",
    "I was thrilled by this exciting adventure.",
    "Smart, touching and wonderfully acted.",
    "An excellent film that everyone should see.",
    "The director did an amazing job.",
    "Pure entertainment, I loved it.",
    "A beautiful and uplifting movie.",
    "Brilliant writing and a perfect ending.",
]
CLEAR_NEGATIVE = [
    "This movie was terrible, I hated every minute of it.",
    "An awful mess with wooden acting.",
    "The worst film I have seen all year.",
    "A boring, pointless story that made me angry.",
    "Dreadful performances and a dull plot.",
    "I regret wasting two hours on this.",
    "Ugly to look at and painfully slow.",
    "A stupid, lazy and unfunny comedy.",
    "Bad music, bad cast, bad everything.",
    "One of the most disappointing films ever made.",
    "The acting was horrible and the story was weak.",
    "A chore to sit through from start to finish.",
    "Avoid it, a truly miserable experience.",
    "I was bored by this tedious mess.",
    "Dumb, shallow and badly acted.",
    "A terrible film that nobody should see.",
    "The director did a poor job.",
    "Pure garbage, I hated it.",
    "A depressing and ugly movie.",
    "Clumsy writing and a ridiculous ending.",
]


@pytest.mark.slow
def test_smollm2_is_well_above_chance_on_clear_sentiment(tmp_path: Path, run_cli) -> None:
    rows = [[text, "positive"] for text in CLEAR_POSITIVE] + [[text, "negative"] for text in CLEAR_NEGATIVE]
    data = write_csv(tmp_path / "clear.csv", ["text", "label"], rows)
    settings = [
        "task=classification",
        'data.verbalizer={negative: [" negative"], positive: [" positive"]}',
        "data.prompt=Review: {text}\\nSentiment:",
    ]
    out = tmp_path / "evaluation"

    result = run_cli("evaluate", "smollm2-135m", *settings, "--data", data, "--output", out)

    assert result.exit_code == 0, result.stderr
    accuracy = json.loads((out / "evaluation.json").read_text())["models"][0]["metrics"]["eval_accuracy"]
    assert accuracy >= 0.75, accuracy
