"""Fill-mask: recipe end to end on tiny-bert, mask placeholders, several masks, the CLI demo, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import llmkit
from llmkit.tasks.fill_mask import normalise_masks
from tests.conftest import NEGATIVE, POSITIVE, write_csv

SENTENCES = [s + "." for s in POSITIVE + NEGATIVE] * 3


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def fill_mask_recipe(train: Path, output_dir: Path, **data) -> dict:
    return {
        "task": "fill-mask",
        "model": "tiny-bert",
        "data": {"train": str(train), "validation_split": 0.2, "max_length": 32, **data},
        "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
        "output_dir": str(output_dir),
    }


@pytest.fixture
def trained(text_file: Path, tmp_path: Path) -> Path:
    """A fill-mask run in tmp_path/runs: the demo's default when the test works in tmp_path."""
    return llmkit.finetune(fill_mask_recipe(text_file, tmp_path / "runs" / "fm")).output_dir


def test_recipe_end_to_end_and_pipeline(trained: Path) -> None:
    from transformers import pipeline

    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0 <= metrics["eval_masked_accuracy"] <= 1
    assert metrics["eval_perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    config = json.loads((trained / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]

    fill = pipeline("fill-mask", model=str(trained))
    candidates = fill("the food was [MASK].")
    assert len(candidates) == 5 and all(c["sequence"].startswith("the food was") for c in candidates)


@pytest.mark.parametrize(
    ("data", "column"),
    [({"line_by_line": False}, None), ({"whole_word_mask": True}, None), ({"text": "review"}, "review")],
    ids=["blocks", "whole-word", "csv-column"],
)
def test_data_shapes(tmp_path: Path, text_file: Path, data: dict, column: str | None) -> None:
    train = text_file
    if column:
        train = write_csv(tmp_path / "reviews.csv", [column, "stars"], [[s, 5] for s in SENTENCES])
    result = llmkit.finetune(fill_mask_recipe(train, tmp_path / "out", **data))
    assert "eval_masked_accuracy" in result.metrics


def test_blocks_are_max_length_tokens(tmp_path: Path) -> None:
    """Only the corpus's last partial block is left out, however many rows (not one per 1,000 rows)."""
    from transformers import AutoTokenizer

    from llmkit.data.files import read_table
    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.fill_mask import FillMaskTask

    task = FillMaskTask(
        {**COMMON_DATA_DEFAULTS, **FillMaskTask.data_defaults, "line_by_line": False, "max_length": 16}
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-bert"))
    corpus = tmp_path / "corpus.txt"
    lines = [f"{SENTENCES[i % len(SENTENCES)]} {i}\n" for i in range(2500)]  # more than 1,000 rows
    corpus.write_text("".join(lines), encoding="utf-8")
    rows = read_table(corpus, "data.train")
    blocks = task.encode(rows, tokenizer)
    total = sum(len(ids) for ids in tokenizer(list(rows["text"]))["input_ids"])
    assert len(blocks) == total // 16 and {len(ids) for ids in blocks["input_ids"]} == {16}


def test_masked_positions_loss_equals_full_loss() -> None:
    """The fast training path (logits only at masked positions) computes exactly the model's own loss."""
    import torch
    from transformers import AutoTokenizer, TrainingArguments

    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.fill_mask import FillMaskTask, masked_positions_trainer, mlm_head

    task = FillMaskTask({**COMMON_DATA_DEFAULTS, **FillMaskTask.data_defaults, "mlm_probability": 0.5})
    folder = resolve_model("tiny-bert")
    model, tokenizer = task.load_model(folder), AutoTokenizer.from_pretrained(folder)
    assert mlm_head(model) is model.cls
    torch.manual_seed(0)
    batch = task.collator(tokenizer)([tokenizer(s) for s in SENTENCES[:6]])
    trainer = masked_positions_trainer()(model=model, args=TrainingArguments("unused", report_to="none"))
    model.eval()  # no dropout, so both paths see the same network
    model.training = True  # ...but take the training branch of compute_loss
    fast = trainer.compute_loss(model, dict(batch))
    model.training = False
    full = trainer.compute_loss(model, dict(batch))
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)


def test_placeholders_are_normalised() -> None:
    assert (
        normalise_masks("a [MASK] b [mask] c <mask> d <MASK>", "[MASK]")
        == "a [MASK] b [MASK] c [MASK] d [MASK]"
    )
    assert normalise_masks("the [MASK] sat", "<mask>") == "the <mask> sat"


def test_cli_several_masks_table_and_json(run_cli, trained: Path) -> None:
    result = run_cli("fill-mask", "the [MASK] was <mask>.", "--model", trained, "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "the [MASK] was <mask>."
    assert lines[1].startswith("  mask 1: 1. ") and any(line.startswith("  mask 2: 1. ") for line in lines)
    assert len(lines) == 1 + 2 * 3

    result = run_cli("fill-mask", "the food was [MASK].", "--model", trained, "--json", "-k", "2")
    payload = json.loads(result.stdout)
    assert payload["text"] == "the food was [MASK]."
    assert len(payload["masks"]) == 1 and len(payload["masks"][0]) == 2
    scores = [c["score"] for c in payload["masks"][0]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_cli_reads_texts_from_a_file_and_defaults_to_the_newest_run(
    run_cli, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("a [MASK] film\n\nthe [MASK] was cold\n", encoding="utf-8")
    result = run_cli("fill-mask", "--input", texts, "--json")  # no --model: the newest fill-mask run
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [
        "a [MASK] film",
        "the [MASK] was cold",
    ]


def test_cli_bad_inputs(run_cli, trained: Path, tmp_path: Path, sentiment_files) -> None:
    result = run_cli("fill-mask", "no placeholder here", "--model", trained)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: text 1 has no mask: 'no placeholder here'; "
        "write [MASK] (or <mask>) where a word should be filled in"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    result = run_cli("fill-mask", "--input", empty, "--model", trained)
    assert result.exit_code == 2 and f"error: --input {empty} is empty" in result.stderr

    train, validation = sentiment_files
    classifier = llmkit.finetune(
        {
            "model": "tiny-bert",
            "data": {"train": str(train), "validation": str(validation)},
            "training": {"max_steps": 1},
            "output_dir": str(tmp_path / "clf"),
        }
    ).output_dir
    result = run_cli("fill-mask", "a [MASK] film", "--model", classifier)
    assert result.exit_code == 2
    assert "holds a BertForSequenceClassification, which cannot do fill-mask" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_untrained_head_is_refused(run_cli) -> None:
    """A base encoder's masked-LM head would be created at random: one line saying so, not noise."""
    result = run_cli("fill-mask", "a [MASK] film", "--model", "tiny-bert")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "error: model tiny-bert has no trained masked-LM head (" in result.stderr
    assert "`llmkit finetune recipes/fill-mask-brown.yaml model=tiny-bert`" in result.stderr
    assert "--model smollm2-135m" in result.stderr


def test_cli_says_which_model_answered(
    run_cli, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("fill-mask", "a [MASK] film")  # no --model: the newest fill-mask run under ./runs
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == (
        "llmkit: runs/fm answers (the newest fill-mask run under ./runs): a masked LM, reading both sides "
        "of each mask"
    )


def test_cli_without_any_fill_mask_run_uses_a_causal_lm(
    run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing trained here: the default causal LM answers (tiny-gpt2 stands in for smollm2-135m here)."""
    import llmkit.inference.fill_mask

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(llmkit.inference.fill_mask, "DEFAULT_CAUSAL_MODEL", "tiny-gpt2")
    result = run_cli("fill-mask", "a [MASK] film", "-k", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip().startswith(
        "llmkit: tiny-gpt2 answers (the default: no fill-mask run under ./runs): a causal LM, zero-shot"
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "a [MASK] film" and len(lines) == 1 + 3 and lines[1].startswith("   1. ")


# -- causal LMs ------------------------------------------------------------------------------------------
def tiny_gpt2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmkit.models.resolve import resolve_model

    folder = resolve_model("tiny-gpt2")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


class Steered:
    """tiny-gpt2 pushed to write ``pieces`` after ``after``: each piece's logit +30 after the one before."""

    def __init__(self, model, after: int, pieces: list[int]) -> None:
        self.model, self.config, self.device = model, model.config, model.device
        self.route = dict(zip([after, *pieces[:-1]], pieces, strict=True))

    def eval(self):
        return self

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def __call__(self, input_ids, **kwargs):
        output = self.model(input_ids=input_ids, **kwargs)
        kept = input_ids[:, -output.logits.shape[1] :]
        for previous, following in self.route.items():
            output.logits[..., following] += 30.0 * (kept == previous)
        return output


def test_causal_lm_proposes_a_word_of_several_tokens() -> None:
    from llmkit.inference.fill_mask import fill_masks_causal

    model, tokenizer = tiny_gpt2()
    pieces = tokenizer(" charming").input_ids
    assert len(pieces) == 3  # Ġchar m ing
    steered = Steered(model, after=tokenizer(" the").input_ids[-1], pieces=pieces)
    [[candidates]] = fill_masks_causal(steered, tokenizer, ["the cat sat on the [MASK]."], top_k=3)
    assert candidates[0]["token"] == "charming" and candidates[0]["token_ids"] == pieces
    assert candidates[0]["score"] > 0.9


@pytest.mark.parametrize("right_context", [0, 3], ids=["whole-text", "3-tokens"])
def test_causal_rescoring_is_the_text_log_likelihood(
    monkeypatch: pytest.MonkeyPatch, right_context: int
) -> None:
    """Cached, padded, batched rescoring gives log P(word + right context | left), as one plain pass does;
    ``right_context`` tokens of it, or all."""
    import torch

    import llmkit.inference.fill_mask as causal_fill

    monkeypatch.setattr(causal_fill, "RESCORE_BATCH_TOKENS", 16)  # several batches, padded rows
    plain, tokenizer = tiny_gpt2()
    model = Steered(plain, after=tokenizer(" a").input_ids[-1], pieces=tokenizer(" charming").input_ids)
    vocab = causal_fill.vocabulary(tokenizer, plain.get_output_embeddings().weight.shape[0])
    left, right = "a wonderful film with a ", " cast and a lovely room"
    candidates = causal_fill.fill_one_mask(model, tokenizer, vocab, left, right, 12, right_context)
    assert len(candidates) == 12 and any(len(c.token_ids) > 1 for c in candidates)
    left_ids = vocab.start + tokenizer(left[:-1]).input_ids
    right_ids = tokenizer(right).input_ids
    assert len(right_ids) > 3
    right_ids = right_ids[:right_context] if right_context else right_ids
    for candidate in candidates:
        ids = left_ids + candidate.token_ids + right_ids
        with torch.no_grad():
            log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        expected = sum(float(log_probs[j - 1, ids[j]]) for j in range(len(left_ids), len(ids)))
        assert candidate.log_likelihood == pytest.approx(expected, abs=1e-3)
    assert [c.log_likelihood for c in candidates] == sorted(
        (c.log_likelihood for c in candidates), reverse=True
    )


def test_causal_lm_fills_two_masks_left_to_right(run_cli) -> None:
    from llmkit.inference.fill_mask import fill_masks_causal

    model, tokenizer = tiny_gpt2()
    [[first, second]] = fill_masks_causal(model, tokenizer, ["the [MASK] was <mask>."], top_k=4)
    assert len(first) == len(second) == 4
    # the second mask is filled with the first one's best word in place
    [[alone]] = fill_masks_causal(model, tokenizer, [f"the {first[0]['token']} was [MASK]."], top_k=4)
    assert alone == second

    result = run_cli("fill-mask", "the [MASK] was <mask>.", "--model", "tiny-gpt2", "-k", "2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "the [MASK] was <mask>." and len(lines) == 1 + 2 * 2
    assert lines[1].startswith("  mask 1: 1. ") and lines[3].startswith("  mask 2: 1. ")


def test_causal_lm_json_shape(run_cli) -> None:
    result = run_cli("fill-mask", "a [MASK] film with a great [MASK]", "-m", "tiny-gpt2", "--json", "-k", "3")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["text"] == "a [MASK] film with a great [MASK]" and len(payload["masks"]) == 2
    for candidates in payload["masks"]:
        assert len(candidates) == 3 and all(set(c) == {"token", "token_ids", "score"} for c in candidates)
        assert all(c["token"].isalpha() and c["token_ids"] for c in candidates)
        scores = [c["score"] for c in candidates]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6


def test_causal_lm_mask_placeholders() -> None:
    """[MASK], <mask> (any case) and the tokenizer's own mask token all mark a blank for a causal LM."""
    from types import SimpleNamespace

    from llmkit.inference.fill_mask import check_texts

    tokenizer = SimpleNamespace(mask_token="<|fill|>")
    parts = check_texts(["a [MASK] b <mask> c <|fill|> d [mask]"], tokenizer, None, "m")
    assert parts == [["a ", " b ", " c ", " d ", ""]]


def test_causal_lm_bad_inputs(run_cli) -> None:
    from llmkit.inference.fill_mask import MAX_MASKS

    too_many = " ".join(["[MASK]"] * (MAX_MASKS + 1))
    result = run_cli("fill-mask", too_many, "--model", "tiny-gpt2")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: text 1 has {MAX_MASKS + 1} masks; a causal LM fills at most {MAX_MASKS} per text (left to "
        f"right, each guess leaning on the ones before it): split the text"
    )
    long_text = "a wonderful film " * 100 + "[MASK]"
    result = run_cli("fill-mask", long_text, "--model", "tiny-gpt2")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "but tiny-gpt2 attends over 256 positions; shorten the text" in result.stderr
    result = run_cli("fill-mask", "no placeholder", "--model", "tiny-gpt2")
    assert result.exit_code == 2 and "error: text 1 has no mask: 'no placeholder'" in result.stderr


def test_a_model_that_is_neither_masked_nor_causal_is_refused(run_cli) -> None:
    result = run_cli("fill-mask", "a [MASK] film", "--model", "tiny-t5")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "holds a T5ForConditionalGeneration, which cannot do fill-mask" in result.stderr
    assert "or a causal LM such as `--model smollm2-135m`" in result.stderr


@pytest.mark.slow
def test_smollm2_demo_gives_real_words(run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The demo in a fresh folder, nothing trained: SmolLM2 answers with real words."""
    monkeypatch.chdir(tmp_path)
    result = run_cli("fill-mask", "The cat sat on the [MASK].", "--json")
    assert result.exit_code == 0, result.stderr
    assert "llmkit: smollm2-135m answers (the default: no fill-mask run under ./runs)" in result.stderr
    words = [c["token"] for c in json.loads(result.stdout)["masks"][0]]
    assert words[0] in {"floor", "mat", "bed", "couch", "ground", "sofa", "rug", "chair"}, words
    assert all(word.isalpha() for word in words)


def test_masked_positions_evaluation_equals_the_stock_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation computes vocabulary logits at the masked positions only: the same loss and accuracy."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForMaskedLM, AutoTokenizer, TrainingArguments

    import llmkit.tasks.fill_mask as fill_mask
    from llmkit.inference.predict import task_with_defaults
    from llmkit.models.resolve import resolve_model

    folder = resolve_model("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    task = task_with_defaults(fill_mask.FillMaskTask, {"max_length": 32, "mlm_probability": 0.3})
    encoded = task.encode(Dataset.from_dict({"text": SENTENCES}), tokenizer)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(folder)
    args = TrainingArguments(
        output_dir="/tmp/unused", use_cpu=True, report_to="none", per_device_eval_batch_size=8
    )
    trainer = fill_mask.masked_positions_trainer()(
        model=model,
        args=args,
        eval_dataset=encoded,
        data_collator=task.collator(tokenizer),
        compute_metrics=task.compute_metrics(),
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics(),
    )
    torch.manual_seed(1)  # the collator draws the masks from torch's generator: the same masks twice
    fast = trainer.evaluate()
    batch = task.collator(tokenizer)([encoded[i] for i in range(8)])
    _, fast_tokens, labels = trainer.prediction_step(model.eval(), dict(batch), prediction_loss_only=False)
    monkeypatch.setattr(fill_mask, "mlm_head", lambda model: None)  # the stock path: every position's logits
    torch.manual_seed(1)
    stock = trainer.evaluate()
    _, stock_logits, _ = trainer.prediction_step(model.eval(), dict(batch), prediction_loss_only=False)
    assert fast["eval_loss"] == pytest.approx(stock["eval_loss"], rel=1e-5)
    assert fast["eval_masked_accuracy"] == stock["eval_masked_accuracy"]
    masked = labels != -100
    assert masked.sum() > 0 and not fast_tokens.is_floating_point()
    assert fast_tokens[masked].equal(stock_logits.argmax(dim=-1)[masked])
    assert (fast_tokens[~masked] == -100).all()


@pytest.mark.parametrize("task", ["fill-mask", "generation"])
def test_a_batch_without_labels_is_a_zero_loss_not_nan(task: str, tmp_path: Path) -> None:
    """A batch in which no token was masked (short lines, small batches) has no label to predict: the Trainer
    passes num_items_in_batch=0, and 0/0 made the loss NaN, which stopped the run as if it had diverged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, TrainingArguments

    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.causal_lm import causal_lm_trainer_class
    from llmkit.tasks.fill_mask import masked_positions_trainer

    if task == "fill-mask":
        cls, auto_class, name = masked_positions_trainer(), AutoModelForMaskedLM, "tiny-bert"
    else:
        cls, auto_class, name = causal_lm_trainer_class(), AutoModelForCausalLM, "tiny-gpt2"
    model = auto_class.from_pretrained(resolve_model(name))
    trainer = cls(model=model, args=TrainingArguments(str(tmp_path), report_to="none"))
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    batch = {"input_ids": ids, "labels": torch.full_like(ids, -100)}  # nothing to predict
    loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(0))
    assert loss.item() == 0.0
    loss.backward()  # a step that changes nothing, rather than NaN weights
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("task", ["fill-mask", "generation"])
def test_eval_loss_is_the_mean_over_the_evaluations_labelled_tokens(task: str, tmp_path: Path) -> None:
    """An evaluation batch without a labelled token made eval_loss NaN (fill-mask: a mean over no masked
    token) or pulled it towards 0 (causal LM); batches of more tokens counted no more than others."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, TrainingArguments

    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.causal_lm import causal_lm_trainer_class
    from llmkit.tasks.fill_mask import masked_positions_trainer
    from llmkit.training.loss_scaling import step_weighted_trainer

    if task == "fill-mask":
        base, auto_class, name, shift = masked_positions_trainer(), AutoModelForMaskedLM, "tiny-bert", 0
    else:
        base, auto_class, name, shift = causal_lm_trainer_class(), AutoModelForCausalLM, "tiny-gpt2", 1
    model = auto_class.from_pretrained(resolve_model(name)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16], [17, 18, 19, 20, 21, 22]])
    labels = torch.full_like(ids, -100)
    labels[0, 2:4] = ids[0, 2:4]  # two labelled tokens, none in the second row, one in the third
    labels[2, 5] = ids[2, 5]
    rows = [{"input_ids": i, "labels": label} for i, label in zip(ids, labels, strict=True)]
    args = TrainingArguments(
        str(tmp_path), per_device_eval_batch_size=1, logging_nan_inf_filter=False, report_to="none"
    )
    trainer = step_weighted_trainer(base, ("labels",))(model=model, args=args, eval_dataset=rows)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, : ids.shape[1] - shift]
    targets = labels[:, shift:]
    expected = F.cross_entropy(logits[targets != -100], targets[targets != -100]).item()
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-5)


def test_an_eval_batch_masking_nothing_keeps_eval_loss_finite(text_file: Path, tmp_path: Path) -> None:
    recipe = fill_mask_recipe(text_file, tmp_path / "out", mlm_probability=0.05)
    recipe["training"].update(max_steps=1, per_device_eval_batch_size=1)
    metrics = llmkit.finetune(recipe).metrics
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0


def test_next_sentence_pretraining_without_masked_tokens_keeps_a_finite_loss() -> None:
    import torch
    from transformers import BertForPreTraining

    from llmkit.models.resolve import resolve_model
    from llmkit.tasks import next_sentence

    model = BertForPreTraining.from_pretrained(resolve_model("tiny-bert"))
    ids = torch.tensor([[2, 5, 6, 3, 7, 8, 3]])
    batch = {"input_ids": ids, "labels": torch.full_like(ids, -100), next_sentence.LABEL: torch.tensor([0])}
    terms = next_sentence.pretraining_loss_terms(model, batch)
    assert terms["labels"].item() == 0  # no masked token: a zero term, not 0/0
    assert torch.isfinite(terms[next_sentence.LABEL])  # the next-sentence loss alone


def test_wrapped_model_loss_terms_without_masked_tokens_give_finite_gradients() -> None:
    """The path DDP and sharded runs take (the model's own logits at every position)."""
    import torch

    from llmkit.tasks import next_sentence

    logits = torch.randn(1, 7, 11, requires_grad=True)
    relationship = torch.randn(1, 2, requires_grad=True)
    batch = {"labels": torch.full((1, 7), -100), next_sentence.LABEL: torch.tensor([0])}
    terms = next_sentence.loss_terms_of(logits, relationship, batch)
    assert terms["labels"].item() == 0  # no masked token: a zero term, not 0/0
    sum(terms.values()).backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(relationship.grad).all()


def test_a_run_whose_first_batch_masks_nothing_trains(text_file: Path, tmp_path: Path) -> None:
    recipe = fill_mask_recipe(text_file, tmp_path / "out", mlm_probability=0.01)
    recipe["training"].update(per_device_train_batch_size=2, max_steps=2, logging_steps=1)
    out = llmkit.finetune(recipe).output_dir  # stopped with "training loss became nan at step 1" before
    history = json.loads((out / "log_history.json").read_text())
    assert [math.isfinite(entry["loss"]) for entry in history if "loss" in entry] == [True, True]
