"""SetFit's settings on SST-2 with 16 rows per class (issue 34's target: 0.80): ``recipes/sst2-setfit.yaml``
as written, a higher learning rate, twice the pairs, and both, each on three shot samples.

    python benchmarks/setfit_settings.py               # 12 runs, about 16 min on 2 threads
    python benchmarks/setfit_settings.py --reuse-runs  # keep runs an earlier call finished

Every run trains on the shared SST-2 training file's 16-shot sample (``data.shots_seed`` 42, 43, 44) and is
scored on the 872 dev sentences (its ``eval_accuracy``). The settings are chosen by the dev score, so the best
row is an optimistic estimate of what a user with 32 labelled sentences and no dev set would get. Writes
benchmarks/results/setfit_settings{--tag}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from evaluate_real import llmkit  # this folder is first on sys.path

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO.parent / "shared" / "data" / "sst2"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-setfit-settings"
SEEDS = (42, 43, 44)
SETTINGS = {
    "as written (2e-5, 20 iterations)": [],
    "learning rate 1e-4": ["training.learning_rate=1e-4"],
    "40 iterations": ["setfit.iterations=40"],
    "5e-5, 40 iterations": ["training.learning_rate=5e-5", "setfit.iterations=40"],
}


def accuracy(name: str, overrides: list[str], seed: int, reuse: bool, log: list[dict]) -> float:
    output = WORK / f"{name.split(' (')[0].replace(' ', '-').replace(',', '')}-{seed}"
    if not (reuse and (output / "metrics.json").exists()):
        data = [f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}"]
        run = [f"data.shots_seed={seed}", *overrides, f"output_dir={output}", "--overwrite"]
        llmkit(["finetune", "recipes/sst2-setfit.yaml", *data, *run], log)
    return json.loads((output / "metrics.json").read_text())["eval_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse-runs", action="store_true", help="keep runs an earlier call finished")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    log: list[dict] = []
    rows = {
        name: [accuracy(name, overrides, seed, args.reuse_runs, log) for seed in SEEDS]
        for name, overrides in SETTINGS.items()
    }
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    lines = [
        f"`python benchmarks/setfit_settings.py` (OMP_NUM_THREADS={threads}): `recipes/sst2-setfit.yaml`, 16 "
        f"rows per class, SST-2 dev (872); target 0.80",
        "",
        "| setting | mean | " + " | ".join(f"shots_seed {seed}" for seed in SEEDS) + " |",
        "|---|---|" + "---|" * len(SEEDS),
    ]
    for name, scores in rows.items():
        cells = " | ".join(f"{score:.3f}" for score in scores)
        lines.append(f"| {name} | {statistics.mean(scores):.3f} | {cells} |")
    tag = f"-{args.tag}" if args.tag else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"settings": SETTINGS, "seeds": SEEDS, "accuracy": rows, "commands": log}
    (RESULTS / f"setfit_settings{tag}.json").write_text(json.dumps(record, indent=2))
    (RESULTS / f"setfit_settings{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
