"""Counterfactual data augmentation (``data.augment: counterfactual``) measured on SST-2: the same MiniLM run
with and without it, then the bias probe of `llmkit audit RUN` on each (issue 35).

    python benchmarks/counterfactual_augment.py                         # the recipe's epoch, both runs
    python benchmarks/counterfactual_augment.py --steps 20 --tag smoke  # a smoke run

Both runs are ``recipes/sst2-minilm.yaml`` on the shared SST-2 files (train → dev) as written (one epoch;
``--steps`` cuts both to that many steps), the same seed; the augmented one also trains on every training
row's counterfactuals (identity terms swapped, with the row's label). Reported per run: dev accuracy with
its Wilson 95 % interval, and per group of identity terms the probe's flip rate on the dev rows with its
bootstrap interval. Writes benchmarks/results/counterfactual_augment{--tag}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from evaluate_real import llmkit  # this folder is first on sys.path

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-counterfactual"
ARMS = {"plain": [], "augmented": ["data.augment=counterfactual"]}


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return round(centre - half, 4), round(centre + half, 4)


def arm(name: str, steps: int | None, log: list[dict]) -> dict:
    output = WORK / name
    llmkit(
        [
            "finetune",
            "recipes/sst2-minilm.yaml",
            f"data.train={SST2 / 'train.tsv'}",
            f"data.validation={SST2 / 'dev.tsv'}",
            *([f"training.max_steps={steps}"] if steps else []),
            f"output_dir={output}",
            "--overwrite",
            *ARMS[name],
        ],
        log,
    )
    llmkit(["audit", str(output), "--no-label-noise", "--no-near"], log)
    metrics = json.loads((output / "metrics.json").read_text())
    bias = json.loads((output / "audit" / "audit.json").read_text())["bias"]
    rows = len((SST2 / "dev.tsv").read_text(encoding="utf-8").strip().splitlines()) - 1  # the header
    accuracy = metrics["eval_accuracy"]
    return {
        "run": name,
        "accuracy": accuracy,
        "interval": wilson(round(accuracy * rows), rows),
        "counterfactuals_added": metrics.get("train_counterfactuals_added", 0),
        "train_runtime": metrics.get("train_runtime"),
        "groups": {
            group: {
                key: value[key]
                for key in ("rows_with_terms", "counterfactuals", "flips", "flip_rate", "interval")
            }
            for group, value in bias["groups"].items()
        },
    }


def table(runs: dict[str, dict], steps: int | None) -> list[str]:
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    option, schedule = (
        (f" --steps {steps}", f"cut to {steps} steps") if steps else ("", "as written (one epoch)")
    )
    lines = [
        f"`python benchmarks/counterfactual_augment.py{option}` (OMP_NUM_THREADS={threads}); "
        f"`recipes/sst2-minilm.yaml` {schedule}, SST-2 train → dev (872 rows)",
        "",
        "| run | rows added | dev accuracy [95 %] | "
        + " | ".join(
            f"{group}: flip rate [95 %] (flips / counterfactuals)" for group in runs["plain"]["groups"]
        )
        + " |",
        "|---|---|---|" + "---|" * len(runs["plain"]["groups"]),
    ]
    for name, run in runs.items():
        low, high = run["interval"]
        cells = [flip_cell(group) for group in run["groups"].values()]
        lines.append(
            f"| {name} | {run['counterfactuals_added']:,} | {run['accuracy']:.3f} [{low:.3f}, {high:.3f}] | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def flip_cell(group: dict) -> str:
    if not group["counterfactuals"]:
        return "–"
    low, high = group["interval"]
    return f"{group['flip_rate']:.3f} [{low:.3f}, {high:.3f}] ({group['flips']} / {group['counterfactuals']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="training steps of 32 rows per run (default: one epoch)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    log: list[dict] = []
    runs = {name: arm(name, args.steps, log) for name in ARMS}
    tag = f"-{args.tag}" if args.tag else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"counterfactual_augment{tag}.json").write_text(
        json.dumps({"runs": runs, "commands": log}, indent=2)
    )
    text = table(runs, args.steps)
    (RESULTS / f"counterfactual_augment{tag}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
