"""Counterfactual data augmentation (``data.augment: counterfactual``, classification): the rows it adds
(each training row's counterfactuals, as the bias probe makes them, with the row's label and the row's file
line), that it works on the rows data.shots keeps, that it removes a bias the training data teaches (the
flip rate of `llmkit audit RUN` on a tiny run), and its bad settings, each one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmkit
from llmkit.data.counterfactual import TermGroup, counterfactual_rows
from llmkit.data.files import load_splits
from llmkit.recipe.loader import load_recipe
from llmkit.tasks import build_task
from llmkit.tasks.base import checked_splits
from tests.conftest import write_csv
from tests.test_distill import tiny_bert_without_dropout

PRONOUNS = TermGroup("pronouns", "swap", (("he", "she"), ("him", "her")))
RELIGIONS = TermGroup("religions", "replace", (("Christian", "Muslim", "Jewish"),))


def test_each_row_gives_every_counterfactual_of_every_group_once() -> None:
    texts = ["he met a Christian", "a quiet evening", "she and he", "he saw him"]
    assert counterfactual_rows(texts, [PRONOUNS, RELIGIONS]) == [
        (0, "she met a Christian"),
        (0, "he met a Muslim"),
        (0, "he met a Jewish"),
        (2, "he and she"),
        (3, "she saw her"),
    ]


def splits_of(*overrides: str):
    recipe = load_recipe(None, ["model=tiny-bert", *overrides])
    task = build_task(recipe.task, recipe.data, recipe.options)
    splits = load_splits(recipe.data, seed=recipe.training["seed"])
    counts = checked_splits(task, splits, recipe.data, recipe.task)
    return splits["train"], counts


def test_added_rows_carry_their_rows_label_columns_and_file_line(tmp_path: Path) -> None:
    rows = [
        ["he loved this film", "positive", "a"],
        ["a dull evening", "negative", "b"],
        ["a Christian drama she hated", "negative", "c"],
    ]
    train = write_csv(tmp_path / "train.csv", ["text", "label", "source"], rows)
    split, counts = splits_of(f"data.train={train}", "data.validation_split=0", "data.augment=counterfactual")
    shipped_religions = 6  # the shipped list's 7 religions: 6 others for "Christian"
    assert counts == {"train_counterfactuals_added": 1 + 1 + shipped_religions}
    records = split.dataset.to_list()
    assert records[:3] == [{"text": t, "label": label, "source": s} for t, label, s in rows]
    added = records[3:]
    assert added[0] == {"text": "she loved this film", "label": "positive", "source": "a"}
    assert {"text": "a Christian drama he hated", "label": "negative", "source": "c"} in added
    assert {"text": "a Muslim drama she hated", "label": "negative", "source": "c"} in added
    assert [split.where(index) for index in (0, 3, 4, len(records) - 1)] == [
        "line 2",
        "line 2",
        "line 4",
        "line 4",
    ]


def test_augmentation_follows_the_shots_and_a_terms_file_adds_groups(tmp_path: Path) -> None:
    rows = [[f"he liked film {i}", "positive"] for i in range(6)] + [
        [f"she disliked film {i}", "negative"] for i in range(6)
    ]
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    terms = tmp_path / "terms.yaml"
    terms.write_text("verbs:\n  swap: [[liked, enjoyed]]\n", encoding="utf-8")
    base = [f"data.train={train}", "data.validation_split=0", "data.augment=counterfactual", "data.shots=2"]
    split, counts = splits_of(*base)
    assert counts == {"train_counterfactuals_added": 4} and len(split.dataset) == 8  # 2 shots per class
    split, counts = splits_of(*base, f"data.augment_terms={terms}")
    assert counts == {"train_counterfactuals_added": 4 + 2}  # each "liked" row: its pronoun and its verb
    assert sum("enjoyed" in text for text in split.dataset["text"]) == 2


def test_augmentation_removes_a_bias_the_training_data_teaches(tmp_path: Path, run_cli, monkeypatch) -> None:
    """Training rows where only the pronoun decides the label: a model learns "she" means negative, and
    `llmkit audit RUN` finds nearly every pronoun swap flips it; with every row's counterfactual added
    under the same label, the pronoun no longer tells the label and the swaps stop flipping it."""
    monkeypatch.chdir(tmp_path)
    things = [
        "film",
        "book",
        "song",
        "meal",
        "trip",
        "show",
        "game",
        "play",
        "room",
        "town",
        "car",
        "cake",
        "lake",
        "road",
        "farm",
        "shop",
        "park",
        "bank",
        "tree",
        "ship",
    ]
    rows = [
        [f"{who} talked about the {thing}", label]
        for thing in things
        for who, label in (
            ("he", "positive"),
            ("she", "negative"),
        )
    ]
    write_csv(tmp_path / "train.csv", ["text", "label"], rows[:32] * 2)
    write_csv(tmp_path / "validation.csv", ["text", "label"], rows[32:])
    calm_bert = tiny_bert_without_dropout(
        tmp_path
    )  # dropout's noise on a tiny model makes what it learns erratic
    flip_rates = {}
    for augment in ("null", "counterfactual"):
        run = llmkit.finetune(
            None,
            [
                f"model={calm_bert}",
                "data.train=train.csv",
                "data.validation=validation.csv",
                f"data.augment={augment}",
                "training.max_steps=40",
                "training.learning_rate=3e-3",
                "training.eval_strategy=no",
                "training.report_to=none",
                f"output_dir=run-{augment}",
            ],
        ).output_dir
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics.get("train_counterfactuals_added", 0) == (64 if augment != "null" else 0)
        result = run_cli("audit", str(run), "--no-label-noise", "--no-near")
        assert result.exit_code == 0, result.stderr
        group = json.loads((run / "audit" / "audit.json").read_text())["bias"]["groups"]
        flip_rates[augment] = group["pronouns_and_gendered_words"]["flip_rate"]
    # measured 1.0 and 0.0 at 1 and 2 threads, and with 40 to 80 steps at 1e-3 to 3e-3
    assert flip_rates["null"] >= 0.8 and flip_rates["counterfactual"] <= 0.2, flip_rates


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.augment=paraphrase"], "data.augment must be counterfactual (or null), got 'paraphrase'"),
        (
            ["data.augment_terms=terms.yaml"],
            "data.augment_terms adds term groups to data.augment: counterfactual; set data.augment or "
            "remove data.augment_terms",
        ),
        (
            ["data.augment=counterfactual", "data.augment_terms=5"],
            "data.augment_terms must be a YAML file's path (string), got 5",
        ),
        (
            ["data.augment=counterfactual", "data.augment_terms=nowhere.yaml"],
            "data.augment_terms nowhere.yaml: no such file; give a YAML file of term groups",
        ),
    ],
)
def test_bad_augmentation_settings_are_one_line(
    overrides, message, run_cli, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("finetune", "model=tiny-bert", "output_dir=run", *overrides)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.strip().splitlines() == [f"error: {message}"], result.stderr
    assert not (tmp_path / "run").exists()
