"""The counterfactual bias probe of `llmkit audit RUN`: term swaps (whole words, case kept, pairs both
ways), the flip count and its bootstrap interval against a hand count, the term file's errors, and the probe
on a tiny run through the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmkit.core.errors import LlmkitError
from llmkit.data.counterfactual import TermGroup, counterfactuals, load_terms
from llmkit.inference.bias import flip_rate, group_flips
from tests.conftest import write_csv

PRONOUNS = TermGroup("pronouns", "swap", (("he", "she"), ("him", "her")))
RELIGIONS = TermGroup("religions", "replace", (("Christian", "Muslim", "Jewish"),))


def test_swaps_are_whole_words_both_ways_at_once_and_keep_the_case() -> None:
    assert counterfactuals("He told her. The theme: HIM!", PRONOUNS) == [
        ("She told him. The theme: HER!", "he→she, her→him, him→her")
    ]
    assert counterfactuals("the theme and the shelf", PRONOUNS) == []  # "he" inside words is not a term
    assert counterfactuals("a christian film", RELIGIONS) == [
        ("a muslim film", "christian→muslim"),
        ("a jewish film", "christian→jewish"),
    ]


def test_the_shipped_list_has_the_four_groups_and_a_file_extends_it(tmp_path: Path) -> None:
    names = [group.name for group in load_terms()]
    assert names == ["given_names_by_gender", "pronouns_and_gendered_words", "nationalities", "religions"]
    extra = tmp_path / "terms.yaml"
    extra.write_text("religions:\n  replace: [Christian, Pagan]\nages:\n  swap: [[young, old]]\n")
    groups = {group.name: group for group in load_terms(extra)}
    assert groups["religions"].terms == (("Christian", "Pagan"),) and groups["ages"].kind == "swap"
    extra.write_text("ages:\n  swap: [young, old]\n")
    with pytest.raises(LlmkitError, match=r"group 'ages': swap takes pairs of words"):
        load_terms(extra)
    with pytest.raises(LlmkitError, match=r"--bias-terms .*missing.yaml: no such file"):
        load_terms(tmp_path / "missing.yaml")


def test_flip_rate_is_flips_per_counterfactual_with_an_interval_over_rows() -> None:
    rate, low, high = flip_rate([[True, False], [False], [True], [False, False]], seed=0)
    assert rate == round(2 / 6, 4) and 0.0 <= low <= rate <= high <= 1.0 and low < high
    assert flip_rate([[False], [False, False]], seed=0) == (0.0, 0.0, 0.0)


class FakeSplit:
    role = "validation"

    def where(self, index: int) -> str:
        return f"line {index + 2}"


class SheIsNegative:
    """A stand-in task whose 'model' calls every text with "she" negative: its flips are known."""

    def __init__(self) -> None:
        self.data = {"text": "text"}

    def predict(self, model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        negative = [" she " in f" {row['text'].lower()} " for row in rows]
        return [
            {"predicted_label": "negative" if n else "positive", "predicted_score": 0.9 if n else 0.8}
            for n in negative
        ]


def test_group_flips_count_the_predictions_a_swap_changes() -> None:
    task = SheIsNegative()
    rows = [{"text": "he was great"}, {"text": "she was great"}, {"text": "him again"}, {"text": "no terms"}]
    original = task.predict(None, None, rows)
    found = group_flips(task, None, None, rows, original, PRONOUNS, FakeSplit(), seed=0)  # type: ignore[arg-type]
    assert (found["rows_with_terms"], found["counterfactuals"], found["flips"]) == (3, 3, 2)
    assert found["flip_rate"] == round(2 / 3, 4)
    assert found["mean_score_shift"] == 0.0  # "him" -> "her": positive both times, the same score
    first = found["examples"][0]
    assert first["where"] == "line 2" and first["counterfactual"] == "she was great"
    assert (first["prediction"], first["counterfactual_prediction"]) == ("positive (0.80)", "negative (0.90)")


def test_audit_of_a_run_adds_the_probe_to_its_files(tmp_path: Path, run_cli, monkeypatch) -> None:
    import llmkit

    monkeypatch.chdir(tmp_path)
    rows = [
        ["he loved this film", "positive"],
        ["she hated the plot", "negative"],
        ["James gave a great performance", "positive"],
        ["a dull Christian drama", "negative"],
        ["a quiet evening", "positive"],
    ]
    write_csv(tmp_path / "train.csv", ["text", "label"], rows * 3)
    write_csv(tmp_path / "validation.csv", ["text", "label"], rows)
    run = llmkit.finetune(
        None,
        ["model=tiny-bert", "data.train=train.csv", "data.validation=validation.csv", "output_dir=run"],
    ).output_dir
    result = run_cli("audit", str(run), "--no-label-noise", "--no-near")
    assert result.exit_code == 0, result.stderr
    report = json.loads((run / "audit" / "audit.json").read_text())
    bias = report["bias"]
    assert bias["checked"] and bias["rows"] == len(rows) and bias["split"] == "validation"
    counted = {
        name: (group["rows_with_terms"], group["counterfactuals"]) for name, group in bias["groups"].items()
    }
    assert counted == {
        "given_names_by_gender": (1, 1),
        "pronouns_and_gendered_words": (2, 2),
        "nationalities": (0, 0),
        "religions": (1, 6),
    }
    for group in bias["groups"].values():
        if group["counterfactuals"]:
            low, high = group["interval"]
            assert low <= group["flip_rate"] <= high
    assert "## Bias probe: counterfactual invariance" in (run / "audit" / "audit.md").read_text()
    assert "bias probe, religions:" in result.stdout
    refused = run_cli("audit", str(run), "--no-label-noise", "--bias-terms", "nowhere.yaml", "-o", "other")
    assert refused.exit_code == 2 and "--bias-terms nowhere.yaml: no such file" in refused.stderr
