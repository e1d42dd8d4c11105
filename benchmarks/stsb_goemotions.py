"""STS-B regression and GoEmotions multi-label: llmkit's recipes against a plain ``Trainer``, side by side.

One command (from the repo root, ../shared/data beside it; OMP_NUM_THREADS=1 on the shared 2-core machine):

    OMP_NUM_THREADS=1 python benchmarks/stsb_goemotions.py               # the recipes' full schedules
    OMP_NUM_THREADS=1 python benchmarks/stsb_goemotions.py --steps 400   # a shorter budget for each run

1. STS-B (``recipes/stsb-minilm.yaml``): MiniLM-L6 as a cross-encoder regressing the 0-5 similarity of a
   sentence pair. Reported: dev Spearman, test Pearson and Spearman.
2. GoEmotions (``recipes/goemotions-minilm.yaml``): 28 labels, one sigmoid each. Reported: test macro and
   micro F1 at the recipe's threshold 0.5, and with a threshold per label tuned on the validation split
   (computed here from the saved model's probabilities: the grid 0.05, 0.10, ..., 0.95 that maximises each
   label's validation F1; llmkit itself predicts with the one data.threshold).

Each dataset has two contestants with the same model, steps, batch, learning rate, schedule, seed and
precision (what llmkit's ``training.precision: auto`` picks on the machine: bf16 autocast on a CPU with native
bf16): llmkit (the recipe, reading the shared files) and a plain ``Trainer`` written from the transformers
docs (tokenize, ``AutoModelForSequenceClassification`` with the problem type, ``DataCollatorWithPadding``,
train). The scores of both come from the same code (``*_scores`` below) on the saved models. Run wall time:
model loading, tokenization and training, plus for llmkit its own evaluation of validation and test.
Writes benchmarks/results/stsb_goemotions.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-stsb-goemotions"
STSB, EMOTIONS = DATA / "stsb", DATA / "goemotions"
STSB_FILES = [
    f"data.train={STSB / 'train.jsonl'}",
    f"data.validation={STSB / 'validation.jsonl'}",
    f"data.test={STSB / 'test.jsonl'}",
    "data.label=score",
]
EMOTION_FILES = [
    f"data.train={EMOTIONS / 'train.jsonl'}",
    f"data.validation={EMOTIONS / 'validation.jsonl'}",
    f"data.test={EMOTIONS / 'test.jsonl'}",
]
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def recipe_settings(name: str) -> dict:
    import yaml

    return yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text(encoding="utf-8"))


# -- the same scoring for both contestants ------------------------------------------------------------------


def model_outputs(model_dir: Path, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
    """Raw logits of a saved classifier, in batches."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    outputs = []
    for start in range(0, len(texts), 256):
        batch = tokenizer(
            texts[start : start + 256],
            pairs[start : start + 256] if pairs else None,
            truncation=True,
            max_length=128,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            outputs.append(model(**batch).logits.float().numpy())
    return np.concatenate(outputs)


def stsb_scores(model_dir: Path) -> dict:
    from scipy import stats

    figures = {}
    for role, prefix in (("validation", "dev"), ("test", "test")):
        rows = read_jsonl(STSB / f"{role}.jsonl")
        predicted = model_outputs(model_dir, [r["sentence1"] for r in rows], [r["sentence2"] for r in rows])[
            :, 0
        ]
        gold = np.array([r["score"] for r in rows])
        figures[f"{prefix}_pearson"] = round(float(stats.pearsonr(predicted, gold)[0]), 4)
        figures[f"{prefix}_spearman"] = round(float(stats.spearmanr(predicted, gold)[0]), 4)
    return figures


def emotion_matrix(rows: list[dict], names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    gold = np.zeros((len(rows), len(names)), dtype=bool)
    for r, row in enumerate(rows):
        for label in row["labels"]:
            gold[r, index[label]] = True
    return gold


def f1s(predicted: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    macro = f1_score(gold, predicted, average="macro", zero_division=0)
    return float(macro), float(f1_score(gold, predicted, average="micro", zero_division=0))


def goemotions_scores(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    sigmoid = lambda logits: 1 / (1 + np.exp(-logits))  # noqa: E731
    probabilities, gold = {}, {}
    for role in ("validation", "test"):
        rows = read_jsonl(EMOTIONS / f"{role}.jsonl")
        probabilities[role] = sigmoid(model_outputs(model_dir, [r["text"] for r in rows]))
        gold[role] = emotion_matrix(rows, names)
    macro, micro = f1s(probabilities["test"] >= 0.5, gold["test"])
    tuned = np.array(
        [
            best_threshold(probabilities["validation"][:, j], gold["validation"][:, j])
            for j in range(len(names))
        ]
    )
    tuned_macro, tuned_micro = f1s(probabilities["test"] >= tuned, gold["test"])
    return {
        "test_macro_f1@0.5": round(macro, 4),
        "test_micro_f1@0.5": round(micro, 4),
        "test_macro_f1@tuned": round(tuned_macro, 4),
        "test_micro_f1@tuned": round(tuned_micro, 4),
    }


def best_threshold(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """The grid threshold with the best validation F1 for one label (0.5 when the label never occurs)."""
    if not gold.any():
        return 0.5
    scores = []
    for threshold in THRESHOLD_GRID:
        predicted = probabilities >= threshold
        true_positive = (predicted & gold).sum()
        scores.append(2 * true_positive / max(predicted.sum() + gold.sum(), 1))
    return float(THRESHOLD_GRID[int(np.argmax(scores))])


# -- contestants ------------------------------------------------------------------------------------------


def llmkit_run(recipe: str, files: list[str], steps: int | None, out: Path) -> tuple[Path, float]:
    import llmkit

    started = time.perf_counter()
    limit = [f"training.max_steps={steps}"] if steps else []
    result = llmkit.finetune(f"recipes/{recipe}.yaml", [*files, *limit, f"output_dir={out}"], overwrite=True)
    return result.output_dir, time.perf_counter() - started


def plain_run(recipe: str, steps: int | None, out: Path) -> tuple[Path, float]:
    """What one writes from the transformers docs, with the recipe's optimisation settings."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from llmkit.core.devices import choose_precision, probe_machine
    from llmkit.models.resolve import resolve_model

    started = time.perf_counter()
    settings = recipe_settings(recipe)
    training, data = settings["training"], settings["data"]
    model_path = resolve_model(settings["model"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_length = data["max_length"]
    if recipe.startswith("stsb"):
        rows = read_jsonl(STSB / "train.jsonl")
        train = Dataset.from_dict(
            {
                "a": [r["sentence1"] for r in rows],
                "b": [r["sentence2"] for r in rows],
                "labels": [float(r["score"]) for r in rows],
            }
        )
        train = train.map(
            lambda batch: tokenizer(batch["a"], batch["b"], truncation=True, max_length=max_length),
            batched=True,
            remove_columns=["a", "b"],
        )
        head = {"num_labels": 1, "problem_type": "regression"}
    else:
        names = (EMOTIONS / "labels.txt").read_text().split()
        rows = read_jsonl(EMOTIONS / "train.jsonl")
        matrix = emotion_matrix(rows, names).astype(np.float32)
        train = Dataset.from_dict({"text": [r["text"] for r in rows], "labels": matrix.tolist()})
        train = train.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
            batched=True,
            remove_columns=["text"],
        )
        head = {
            "num_labels": len(names),
            "problem_type": "multi_label_classification",
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }
    set_seed(training["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(model_path, **head)
    # the precision llmkit's `auto` picks on this machine, so both contestants do the same arithmetic
    precision = choose_precision("auto", probe_machine(), "benchmark").precision
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps or -1,
        num_train_epochs=training["num_train_epochs"],
        per_device_train_batch_size=training["per_device_train_batch_size"],
        learning_rate=float(training["learning_rate"]),
        warmup_steps=training["warmup_steps"],
        weight_decay=training["weight_decay"],
        seed=training["seed"],
        save_strategy="no",
        report_to="none",
        logging_steps=training["logging_steps"],
        disable_tqdm=True,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out))
    return out, time.perf_counter() - started


def benchmark(
    name: str, recipe: str, files: list[str], scores, steps: int | None, skip_plain: bool
) -> list[dict]:
    rows = []
    contestants = [("llmkit", lambda out: llmkit_run(recipe, files, steps, out))]
    if not skip_plain:
        contestants.append(("plain Trainer", lambda out: plain_run(recipe, steps, out)))
    for contestant, run in contestants:
        out = WORK / f"{name}-{contestant.split()[0]}"
        model_dir, train_wall = run(out)
        started = time.perf_counter()
        figures = scores(model_dir)
        rows.append(
            {
                "dataset": name,
                "contestant": contestant,
                "steps": steps or "recipe",
                "run_wall_s": round(train_wall, 1),
                "scoring_wall_s": round(time.perf_counter() - started, 1),
                **figures,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    lines = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        chosen = [row for row in rows if row["dataset"] == dataset]
        keys = [k for k in chosen[0] if k not in ("dataset",)]
        lines += [f"### {dataset}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in chosen]
        lines.append("")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines.append(
        f"Command: `{command}`; OMP_NUM_THREADS={threads}; "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per run (default: the recipe's epochs)"
    )
    parser.add_argument("--only", choices=["stsb", "goemotions"], default=None)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--tag", default="", help="suffix for the result files, e.g. -400steps")
    options = parser.parse_args()
    os.chdir(REPO)
    rows = []
    if options.only in (None, "stsb"):
        rows += benchmark("STS-B", "stsb-minilm", STSB_FILES, stsb_scores, options.steps, options.skip_plain)
    if options.only in (None, "goemotions"):
        rows += benchmark(
            "GoEmotions",
            "goemotions-minilm",
            EMOTION_FILES,
            goemotions_scores,
            options.steps,
            options.skip_plain,
        )
    command = "python benchmarks/stsb_goemotions.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"stsb_goemotions{options.tag}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(rows, command))
    print(markdown(rows, command))


if __name__ == "__main__":
    main()
