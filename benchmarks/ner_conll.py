"""NER benchmark: llmkit's CoNLL-2003 recipe against a ``run_ner.py``-style plain ``Trainer``, side by side.

One command (from the repo root, ../shared/data beside it):

    OMP_NUM_THREADS=1 python benchmarks/ner_conll.py                 # the recipe's budget (1,300 steps)
    OMP_NUM_THREADS=1 python benchmarks/ner_conll.py --steps 60      # the short budget of docs/benchmarks.md

Both contestants train MiniLM-L6 (``minilm-l6``) on the CoNLL-2003 training file for the same steps, batch,
learning rate, schedule, weight decay and seed, then tag the CoNLL-2003 *test* file (3,453 sentences):

- ``plain Trainer (run_ner.py style)``: words tokenized with ``is_split_into_words``, the tag on each word's
  first sub-token (the others -100), ``DataCollatorForTokenClassification`` (dynamic padding, run_ner's
  default), random batches, seqeval entity F1 -- what ``examples/pytorch/token-classification/run_ner.py``
  does with its defaults;
- ``llmkit``: ``recipes/ner-conll2003.yaml`` with its ``shared data:`` files (batches grouped by length).

Reported: samples/s and the training loop's wall time (the Trainer's own ``train_runtime`` less the time of
the learning-curve evaluations inside it), and test entity F1/precision/recall (seqeval, the CoNLL scoring)
with the time the test evaluation took. ``--curve 3`` scores the test file at a third, two thirds and all of
the steps (the learning curve); ``--plain-stop-at K`` stops the baseline after K steps of the same schedule
(its figures are then those at step K), when the slower baseline's full run does not fit the time there is.
Writes benchmarks/results/ner_conll.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from learning_curve import curve_points, curve_settings, curve_text, stop_at, training_seconds

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "conll2003"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-ner"
RECIPE = REPO / "recipes" / "ner-conll2003.yaml"
# The recipe's settings, repeated for the plain baseline.
BATCH, LEARNING_RATE, WARMUP, WEIGHT_DECAY, MAX_LENGTH = 32, 1e-4, 0.1, 0.01, 256
#: The published cased BERT-base test F1 (Devlin et al., 2019, fine-tuning approach), for scale.
BERT_BASE_CASED_F1 = 92.4


def conll_sentences(path: Path) -> dict[str, list]:
    """The CoNLL file as {tokens, tags} lists, read the way run_ner's users prepare it (JSON lines)."""
    rows = [json.loads(line) for line in path.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()]
    return {"tokens": [r["tokens"] for r in rows], "ner_tags": [r["ner_tags"] for r in rows]}


def plain_trainer(steps: int, seed: int, model_path: Path, curve: int = 1, stop: int | None = None) -> dict:
    """run_ner.py's recipe with its defaults (no padding to max_length, first sub-token labelled)."""
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from llmkit.metrics import load_metrics

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_rows = conll_sentences(DATA / "train.txt")
    label_list = sorted({tag for tags in train_rows["ner_tags"] for tag in tags})
    label_to_id = {label: i for i, label in enumerate(label_list)}

    def tokenize_and_align_labels(batch: dict) -> dict:
        encoded = tokenizer(batch["tokens"], truncation=True, max_length=MAX_LENGTH, is_split_into_words=True)
        labels = []
        for i, tags in enumerate(batch["ner_tags"]):
            previous, row = None, []
            for word in encoded.word_ids(batch_index=i):
                row.append(-100 if word is None or word == previous else label_to_id[tags[word]])
                previous = word
            labels.append(row)
        encoded["labels"] = labels
        return encoded

    def encode(rows: dict) -> Dataset:
        dataset = Dataset.from_dict(rows)
        return dataset.map(tokenize_and_align_labels, batched=True, remove_columns=dataset.column_names)

    train, test = encode(train_rows), encode(conll_sentences(DATA / "test.txt"))
    set_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path,
        num_labels=len(label_list),
        id2label=dict(enumerate(label_list)),
        label2id=label_to_id,
    )
    seqeval = load_metrics("seqeval")

    def compute_metrics(prediction) -> dict:
        predictions = np.argmax(prediction.predictions, axis=2)
        true_predictions = [
            [label_list[p] for p, label in zip(row, labels, strict=True) if label != -100]
            for row, labels in zip(predictions, prediction.label_ids, strict=True)
        ]
        true_labels = [
            [label_list[label] for label in labels if label != -100] for labels in prediction.label_ids
        ]
        scores = seqeval.compute(predictions=true_predictions, references=true_labels)
        return {key: scores[key] for key in ("precision", "recall", "f1", "accuracy")}

    args = TrainingArguments(
        output_dir=str(WORK / "plain"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64,
        learning_rate=LEARNING_RATE,
        warmup_steps=WARMUP,
        weight_decay=WEIGHT_DECAY,
        seed=seed,
        save_strategy="no",
        report_to="none",
        logging_steps=max(steps // 4, 1),
        disable_tqdm=True,
        use_cpu=True,
        **curve_settings(steps, curve),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test if curve > 1 or stop else None,  # the curve is scored on the test file
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[stop_at(stop)],
    )
    metrics = trainer.train().metrics
    done = trainer.state.global_step
    last = [e for e in trainer.state.log_history if "eval_f1" in e and e["step"] == done]
    if last:  # the curve's last point is the final score: no second pass
        metrics.update({key.replace("eval_", "test_"): value for key, value in last[0].items()})
    else:
        metrics.update(trainer.evaluate(test, metric_key_prefix="test"))
    return figures(metrics, curve_points(trainer.state.log_history, "f1", 100), done)


def llmkit_recipe(steps: int, seed: int, overrides: list[str], curve: int = 1) -> dict:
    import llmkit

    line = next(line for line in RECIPE.read_text().splitlines() if line.startswith("# shared data: "))
    files = [
        item.replace("../shared/data", str(REPO.parent / "shared" / "data")) for item in line.split()[3:]
    ]
    if curve > 1:  # the test file is the evaluation set (nothing is selected on it: no best-model loading)
        files = [f.replace("data.validation=", "data.unused=") for f in files if "data.validation=" not in f]
        files = [f.replace("data.test=", "data.validation=") for f in files]
        evaluation = [f"training.{key}={value}" for key, value in curve_settings(steps, curve).items()]
    else:  # as the baseline: no validation pass, the test file scored once
        evaluation = ["data.validation=null"]
    result = llmkit.finetune(
        str(RECIPE),
        [
            *files,
            *evaluation,
            "data.validation_split=0",
            f"training.max_steps={steps}",
            f"training.seed={seed}",
            "training.use_cpu=true",
            f"output_dir={WORK / 'llmkit'}",
            *overrides,
        ],
        overwrite=True,
    )
    metrics = dict(result.metrics)
    if curve > 1:
        metrics.update({k.replace("eval_", "test_"): v for k, v in metrics.items() if k.startswith("eval_")})
    history = json.loads((result.output_dir / "log_history.json").read_text(encoding="utf-8"))
    return figures(metrics, curve_points(history, "f1", 100), steps)


def figures(metrics: dict, curve: list[dict] | None = None, steps_done: int | None = None) -> dict:
    """Headline figures; training time and samples/s leave out the curve's evaluations inside train()."""
    curve = curve or []
    train_s = training_seconds(metrics["train_runtime"], curve)
    if steps_done:
        samples = steps_done * BATCH
    else:
        samples = metrics["train_samples_per_second"] * metrics["train_runtime"]
    return {
        "steps_done": steps_done,
        "train_runtime_s": round(train_s, 1),
        "samples_per_second": round(samples / max(train_s, 1e-9), 2),
        "test_f1": round(100 * metrics["test_f1"], 2),
        "test_precision": round(100 * metrics["test_precision"], 2),
        "test_recall": round(100 * metrics["test_recall"], 2),
        "test_eval_s": round(metrics["test_runtime"], 1),
        "curve": curve,
    }


def write_results(results: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    rows = [
        "| contestant | steps done (of the schedule) × batch | train s | samples/s | test F1 | P | R | "
        "test eval s | learning curve (step: F1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["contestants"].items():
        curve = curve_text(r["curve"], "f1")
        rows.append(
            f"| {name} | {r['steps_done']} ({results['steps']}) × {BATCH} | {r['train_runtime_s']} | "
            f"{r['samples_per_second']} | {r['test_f1']} | {r['test_precision']} | {r['test_recall']} | "
            f"{r['test_eval_s']} | {curve} |"
        )
    rows.append(f"| BERT-base cased, published (full fine-tuning) | | | | {BERT_BASE_CASED_F1} | | | | |")
    (RESULTS / f"{stem}.md").write_text(
        f"CoNLL-2003 test entity F1 (seqeval), MiniLM-L6, {results['machine']}, "
        f"{results['threads']} thread(s); `{results['command']}`\n\n" + "\n".join(rows) + "\n",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1300, help="training steps for each contestant")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", choices=["plain", "llmkit"], action="append", default=[])
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override for the llmkit contestant (e.g. training.precision=fp32)",
    )
    parser.add_argument(
        "--curve",
        type=int,
        default=1,
        help="test-set scorings (3: at 1/3, 2/3, end)",
    )
    parser.add_argument(
        "--plain-stop-at", type=int, default=None, metavar="K", help="stop the baseline after K steps"
    )
    parser.add_argument("--tag", default="", help="write ner_conll-TAG.* instead of ner_conll.*")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()

    import torch

    from llmkit.models.resolve import resolve_model

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    contestants = {}
    if "llmkit" not in args.skip:
        name = "llmkit (recipes/ner-conll2003.yaml" + "".join(f", {o}" for o in args.override) + ")"
        contestants[name] = llmkit_recipe(args.steps, args.seed, args.override, args.curve)
    if "plain" not in args.skip:
        contestants["plain Trainer (run_ner.py style)"] = plain_trainer(
            args.steps, args.seed, resolve_model("minilm-l6"), args.curve, args.plain_stop_at
        )
    results = {
        "steps": args.steps,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": " ".join(["OMP_NUM_THREADS=" + str(args.threads), "python", *sys.argv]),
        "wall_s": round(time.perf_counter() - started, 1),
        "contestants": contestants,
    }
    write_results(results, f"ner_conll-{args.tag}" if args.tag else "ner_conll")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
