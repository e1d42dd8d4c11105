"""The teacher-logit cache (``distill.cache``) measured: a distillation run with the teacher live on every
step, and the same run with the cache, first written (cold) then read (warm), side by side.

    python benchmarks/teacher_cache.py --teacher runs/evaluate-real/sst2-minilm    # an SST-2 MiniLM run
    python benchmarks/teacher_cache.py --teacher RUN --rows 500 --steps 20         # a smoke run

The student is the teacher's layers 0, 2 and 4 (``model: {init_from: TEACHER, layers: [0, 2, 4]}``), trained
by ``recipes/sst2-minilm.yaml`` on the first ``--rows`` SST-2 training rows for ``--steps`` steps (several
epochs: the cache pays once, the live teacher on every step). All three runs share one fresh LLMKIT_CACHE
folder, so the first (cold) also tokenizes and the other two read the tokenization cache; the Trainer's own
``train_runtime`` leaves both out (the cold run's teacher pass comes before training starts and is timed on
its own from the run's log). The three runs' training losses are compared: the cache must change the time,
not the numbers. Writes benchmarks/results/teacher_cache{--tag}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from evaluate_real import llmkit, relative  # this folder is first on sys.path

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-teacher-cache"
ORDER = ("cold", "warm", "live")  # cold first: it tokenizes for all three


def run(name: str, args: argparse.Namespace, log: list[dict]) -> dict:
    output = WORK / name
    llmkit(
        [
            "finetune",
            "recipes/sst2-minilm.yaml",
            f"data.train={SST2 / 'train.tsv'}",
            "data.validation=null",
            "data.validation_split=0",
            f"data.max_train_samples={args.rows}",
            f"model.init_from={args.teacher}",
            "model.layers=[0,2,4]",
            f"distill.teacher={args.teacher}",
            f"distill.cache={'false' if name == 'live' else 'true'}",
            f"training.max_steps={args.steps}",
            "training.logging_steps=10",
            f"output_dir={output}",
            "--overwrite",
        ],
        log,
    )
    metrics = json.loads((output / "metrics.json").read_text())
    stats = json.loads((output / "run_stats.json").read_text())
    history = json.loads((output / "log_history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return {
        "run": name,
        "command_seconds": log[-1]["seconds"],
        "train_runtime": metrics.get("train_runtime"),
        "train_steps_per_second": metrics.get("train_steps_per_second"),
        "teacher_cache": stats.get("distillation", {}).get("teacher_cache"),
        "losses": losses,
    }


def table(runs: dict[str, dict], args: argparse.Namespace) -> list[str]:
    live = runs["live"]["train_runtime"]
    lines = [
        f"`python benchmarks/teacher_cache.py --teacher {relative(str(args.teacher))} --rows {args.rows} "
        f"--steps {args.steps}` (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'all')})",
        "",
        "| run | teacher cache | training time (s) | × live | whole command (s) | training losses vs live |",
        "|---|---|---|---|---|---|",
    ]
    for name in ORDER:
        each = runs[name]
        state = (each["teacher_cache"] or {}).get("state", "–")
        same = max(abs(a - b) for a, b in zip(each["losses"], runs["live"]["losses"], strict=True))
        lines.append(
            f"| {name} | {state} | {each['train_runtime']:.1f} | {live / each['train_runtime']:.2f} | "
            f"{each['command_seconds']:.1f} | largest difference {same:.2g} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=REPO / "runs" / "evaluate-real" / "sst2-minilm")
    parser.add_argument("--rows", type=int, default=2000, help="the first N SST-2 training rows")
    parser.add_argument("--steps", type=int, default=200, help="steps of 32 rows (200: 3.2 epochs of 2,000)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.teacher = args.teacher.resolve()
    log: list[dict] = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LLMKIT_CACHE"] = cache  # fresh: the cold run writes, the warm one reads
        runs = {name: run(name, args, log) for name in ORDER}
    tag = f"-{args.tag}" if args.tag else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"teacher_cache{tag}.json").write_text(json.dumps({"runs": runs, "commands": log}, indent=2))
    text = table(runs, args)
    (RESULTS / f"teacher_cache{tag}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
