"""SetFit (a recipe's ``setfit:`` section): the pairs, the exact head, a run folder that evaluate and predict
read back with the run's own scores, and one-line refusals."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from llmkit.models.sentence_classifier import HEAD_FILE, head_from_logistic_regression
from llmkit.runs.entries import is_run_entry
from llmkit.training.setfit import contrastive_pairs
from tests.conftest import NEGATIVE, POSITIVE, write_csv

TEXTS = [f"row {i}" for i in range(7)]
LABELS = [0, 0, 0, 1, 1, 2, 1]  # class 2 has a single row


# -- stage 1: the pairs --------------------------------------------------------------------------------
def test_each_row_gets_iterations_positive_and_as_many_negative_pairs() -> None:
    pairs = contrastive_pairs(TEXTS, LABELS, iterations=5, seed=1)
    assert len(pairs) == 2 * 5 * len(TEXTS)
    assert Counter(target for _, _, target in pairs) == {1.0: 35, 0.0: 35}
    label_of = dict(zip(TEXTS, LABELS, strict=True))
    assert Counter(first for first, _, _ in pairs) == {text: 10 for text in TEXTS}
    for first, second, target in pairs:
        assert (label_of[first] == label_of[second]) == (target == 1.0)
        if target == 1.0 and label_of[first] != 2:  # a class of several rows pairs a row with another one
            assert first != second
    assert ("row 5", "row 5", 1.0) in pairs  # a class of one row: the row itself is its only positive


def test_the_pairs_follow_the_seed() -> None:
    first = contrastive_pairs(TEXTS, LABELS, iterations=3, seed=1)
    assert contrastive_pairs(TEXTS, LABELS, iterations=3, seed=1) == first
    assert contrastive_pairs(TEXTS, LABELS, iterations=3, seed=2) != first


# -- stage 2: the head ---------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [2, 3])
def test_the_linear_head_gives_logistic_regressions_probabilities(classes: int) -> None:
    from sklearn.linear_model import LogisticRegression

    generator = np.random.default_rng(0)
    features = generator.normal(size=(60, 8))
    labels = np.arange(60) % classes
    features[:, 0] += labels  # something to learn
    fitted = LogisticRegression().fit(features, labels)
    weight, bias = head_from_logistic_regression(fitted)
    assert weight.shape == (classes, 8)
    head = torch.nn.Linear(8, classes).double()
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight))
        head.bias.copy_(torch.as_tensor(bias))
        probabilities = head(torch.as_tensor(features)).softmax(dim=-1).numpy()
    np.testing.assert_allclose(probabilities, fitted.predict_proba(features), rtol=0, atol=1e-12)


# -- a run end to end ---------------------------------------------------------------------------------
@pytest.fixture
def setfit_run(sentiment_files: tuple[Path, Path], tmp_path: Path, run_cli) -> Path:
    train, validation = sentiment_files
    out = tmp_path / "setfit"
    result = run_cli(
        "finetune",
        "model=tiny-bert",
        f"data.train={train}",
        f"data.validation={validation}",
        "data.shots=4",
        "setfit.iterations=3",
        "training.max_steps=3",
        "training.per_device_train_batch_size=4",
        "training.learning_rate=1e-3",
        "training.precision=fp32",  # embeddings as the refit below computes them (no bf16 autocast)
        f"output_dir={out}",
    )
    assert result.exit_code == 0, result.stderr
    assert "setfit: 48 contrastive pairs from 8 rows (3 iterations)" in result.stderr
    return out


def test_a_run_folder_is_a_sentence_transformer_with_a_head_that_evaluate_and_predict_read(
    setfit_run: Path, sentiment_files: tuple[Path, Path], run_cli
) -> None:
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from llmkit.models.resolve import resolve_model

    metrics = json.loads((setfit_run / "metrics.json").read_text())
    assert {"eval_accuracy", "eval_f1", "eval_loss", "train_loss"} <= set(metrics)
    assert not any("model_preparation" in key for key in metrics)
    assert (setfit_run / "report.md").is_file() and (setfit_run / "recipe.yaml").is_file()
    assert all(is_run_entry(entry.name) for entry in setfit_run.iterdir())  # --overwrite replaces them all
    config = json.loads((setfit_run / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    # stage 1 trained the body, which loads on its own; stage 2's head is LogisticRegression on its
    # embeddings of the run's training rows (the same shots, sampled again from the saved recipe)
    texts, labels = training_rows(setfit_run)
    assert len(texts) == 8 and sorted(labels) == [0] * 4 + [1] * 4
    body = SentenceTransformer(str(setfit_run), device="cpu")
    untrained = SentenceTransformer(str(resolve_model("tiny-bert")), device="cpu")
    assert not np.allclose(body.encode(texts), untrained.encode(texts))
    refit = LogisticRegression(C=1.0, max_iter=100, random_state=42).fit(body.encode(texts), labels)
    weight, bias = head_from_logistic_regression(refit)
    head = load_file(str(setfit_run / HEAD_FILE))
    np.testing.assert_allclose(head["weight"].numpy(), weight, atol=1e-5)
    np.testing.assert_allclose(head["bias"].numpy(), bias, atol=1e-5)

    _, validation = sentiment_files
    evaluated = run_cli("evaluate", setfit_run, "--data", validation, "--output", setfit_run.parent / "ev")
    assert evaluated.exit_code == 0, evaluated.stderr
    scored = json.loads((setfit_run.parent / "ev" / "evaluation.json").read_text())["models"][0]["metrics"]
    for key in ("eval_accuracy", "eval_f1", "eval_matthews_correlation", "eval_loss"):
        assert scored[key] == metrics[key], key
    predicted = run_cli("predict", "--model", setfit_run, "--input", validation)
    assert predicted.exit_code == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [row["text"] for row in rows] == POSITIVE[8:10] + NEGATIVE[8:10]
    assert all(row["predicted_label"] in ("negative", "positive") for row in rows)


def training_rows(run: Path) -> tuple[list[str], list[int]]:
    """The texts and class ids a run trained on, settled again from its saved recipe."""
    from llmkit.data.files import column_values, load_splits
    from llmkit.recipe.loader import load_recipe
    from llmkit.tasks import get_task_class
    from llmkit.tasks.base import checked_splits

    recipe = load_recipe(run / "recipe.yaml")
    task = get_task_class(recipe.task)(recipe.data)
    splits = load_splits(recipe.data, seed=recipe.training["seed"])
    checked_splits(task, splits, recipe.data, recipe.task)
    train = splits["train"].dataset
    ids = {label: index for index, label in enumerate(task.labels)}
    return column_values(train, "text"), [ids[label] for label in column_values(train, "label")]


# -- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=embedding", "setfit.iterations=2"], "works for task classification only"),
        (["peft.method=lora"], "setfit and peft are two ways to train the model"),
        (["distill.teacher=tiny-bert"], "setfit and distill are two ways to train the model"),
        (["setfit.iteration=2"], "unknown key 'setfit.iteration' (did you mean 'iterations'?)"),
        (["setfit.iterations=0"], "setfit.iterations must be a positive integer"),
        (["setfit.head_c=-1"], "setfit.head_c must be a number above 0"),
        (
            ["data.problem=regression", "data.label=score"],
            "setfit trains single-label classifiers, and data.problem is regression",
        ),
        (
            ["data.label_separator=;"],
            "setfit trains single-label classifiers, and data.problem is multi_label",
        ),
        (["data.text_pair=text"], "setfit embeds one text per row, and data.text_pair is set"),
        (["training.save_steps=1"], "training.save_strategy needs checkpoints of one training loop"),
    ],
)
def test_what_setfit_cannot_train_is_a_one_line_error(
    overrides: list[str], message: str, tmp_path: Path, run_cli
) -> None:
    rows = [[text, "positive", "1.5"] for text in POSITIVE] + [[text, "negative", "0.5"] for text in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", ["text", "label", "score"], rows)
    setfit = [] if any(item.startswith("setfit.") for item in overrides) else ["setfit.iterations=2"]
    result = run_cli(
        "finetune",
        "model=tiny-bert",
        f"data.train={train}",
        "data.validation=null",
        *setfit,
        *overrides,
        "training.max_steps=1",
        f"output_dir={tmp_path / 'out'}",
    )
    assert result.exit_code == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert message in last, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("module", "package"), [("sklearn", "scikit-learn"), ("sentence_transformers", "sentence-transformers")]
)
def test_a_missing_extra_is_a_one_line_error_naming_it(
    module: str, package: str, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [[text, "positive"] for text in POSITIVE] + [[text, "negative"] for text in NEGATIVE]
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    result = run_cli(
        "finetune", "model=tiny-bert", f"data.train={train}", "data.validation=null", "setfit.iterations=2",
        "training.max_steps=1", f"output_dir={tmp_path / 'out'}",
    )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"setfit needs the {package} package" in last and "pip install -e '.[setfit]'" in last
    assert not (tmp_path / "out").exists()
