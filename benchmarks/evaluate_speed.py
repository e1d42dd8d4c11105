"""Speed of `llmkit evaluate` against `llmkit predict` on the same SST-2 rows (target: 10,000 rows <= 30 s
on 2 CPU cores with MiniLM-L6).

    python benchmarks/evaluate_speed.py                 # 10,000 rows of SST-2 train, 1,000 resamples
    python benchmarks/evaluate_speed.py --rows 200      # a quick check that it runs

A MiniLM-L6 classifier is trained for a few steps (recipes/sst2-minilm.yaml; the scores do not matter here),
then the same rows are scored by ``evaluate`` (the evaluation pass, the bootstrap intervals, the per-row
predictions read off that pass, the error analysis), again with ``--length-order`` (batches of similar
length), and predicted by ``predict``. Reported: wall seconds of each, and evaluate's parts (its
scoring pass and the resampling are timed inside llmkit and logged). Writes
benchmarks/results/evaluate_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "sst2"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-evaluate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="SST-2 rows to score (default 10,000)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--run", help="score this run folder instead of training one")
    options = parser.parse_args()

    from llmkit.inference.evaluate import evaluate_models
    from llmkit.inference.predict import predict_file

    WORK.mkdir(parents=True, exist_ok=True)
    rows = rows_file(options.rows)
    run = Path(options.run) if options.run else train(options)

    load_before = os.getloadavg()
    began = time.perf_counter()
    evaluation = evaluate_models(
        [str(run)], str(rows), resamples=options.resamples, output=fresh("evaluation")
    )
    evaluate_seconds = time.perf_counter() - began
    began = time.perf_counter()
    evaluate_models(
        [str(run)],
        str(rows),
        resamples=options.resamples,
        output=fresh("evaluation-length-order"),
        length_order=True,
    )
    length_order_seconds = time.perf_counter() - began
    began = time.perf_counter()
    predict_file(str(run), rows, WORK / "predictions.jsonl")
    predict_seconds = time.perf_counter() - began

    scored = evaluation.scores[0]
    result = {
        "rows": scored.rows,
        "resamples": options.resamples,
        "model": options.model,
        "cpu_threads": os.cpu_count(),
        "torch_threads": torch_threads(),
        # other jobs share the cores: the 1/5/15-minute load averages before evaluate and after predict
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "evaluate_seconds": round(evaluate_seconds, 2),
        "evaluate_length_order_seconds": round(length_order_seconds, 2),
        "predict_seconds": round(predict_seconds, 2),
        "evaluate_rows_per_second": round(scored.rows / evaluate_seconds, 1),
        "evaluate_length_order_rows_per_second": round(scored.rows / length_order_seconds, 1),
        "predict_rows_per_second": round(scored.rows / predict_seconds, 1),
        "target_seconds": 30,
        "metrics": scored.metrics,
        "intervals": scored.intervals,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "evaluate_speed.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


def train(options: argparse.Namespace) -> Path:
    """A few steps of MiniLM on SST-2 (the scores do not matter here, only the folder's shape)."""
    import llmkit

    return llmkit.finetune(
        str(REPO / "recipes" / "sst2-minilm.yaml"),
        [
            f"model={options.model}",
            f"training.max_steps={options.train_steps}",
            f"data.train={DATA / 'train.tsv'}",
            f"data.validation={DATA / 'dev.tsv'}",
            "data.max_train_samples=2000",
            "data.max_eval_samples=64",
            f"output_dir={WORK / 'run'}",
        ],
        overwrite=True,
    ).output_dir


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def rows_file(count: int) -> Path:
    """``count`` rows of SST-2's training file after the ones trained on (its dev split has 872), as JSON."""
    lines = (DATA / "train.tsv").read_text(encoding="utf-8").splitlines()[2001 : 2001 + count]
    path = WORK / f"sst2-{count}.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            sentence, label = line.rsplit("\t", 1)
            handle.write(json.dumps({"sentence": sentence, "label": int(label)}) + "\n")
    return path


def fresh(name: str) -> Path:
    """A new output folder for each run (evaluate never writes into an earlier one)."""
    return WORK / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


if __name__ == "__main__":
    main()
