"""The audit at scale: exact and near duplicates of 1,000,000 rows (issue 35: ≤ 3 minutes, ≤ 2 GB on 2 cores).

One command (from the repo root, ../shared/data beside it):

    python benchmarks/audit_scale.py                 # 1,000,000 rows
    python benchmarks/audit_scale.py --rows 100000   # a smaller run

The rows are synthetic but shaped like real data, built from SST-2's training sentences with a seeded
generator: most rows join the first half of one sentence to the second half of another (new texts of
realistic length), 5 % repeat an earlier row exactly (with its case and spacing changed, so normalisation
matters) and 5 % are near copies of an earlier row (one word dropped, swapped with its neighbour or
replaced). The measurement runs in a fresh Python process after the rows are built, and covers what
`llmkit audit` does for duplicates: normalising every row (``llmkit.data.audit.normalise``), counting exact
duplicates, and MinHash LSH near duplicates (``near_duplicates`` and its report). Peak memory is the
process's resident peak (``getrusage``'s ``ru_maxrss``), the rows included. The planted near copies give
a recall: the share found in a near-duplicate group with their source (or equal to it once normalised).

Writes benchmarks/results/audit_scale.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
EXACT_SHARE = 0.05
NEAR_SHARE = 0.05


def sentences() -> list[str]:
    with (DATA / "sst2" / "train.tsv").open(encoding="utf-8", newline="") as handle:
        rows = [row["sentence"].strip() for row in csv.DictReader(handle, delimiter="\t")]
    return [row for row in rows if len(row.split()) >= 6]  # whole sentences, not SST-2's short phrases


def synthetic_rows(count: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """The rows, and (copy, source) for each planted near copy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pool = sentences()
    rows: list[str] = []
    planted: list[tuple[int, int]] = []
    kinds = rng.random(count)
    for index in range(count):
        if index > 100 and kinds[index] < EXACT_SHARE:
            source = rows[int(rng.integers(0, index))]
            rows.append(("  " + source.upper()) if rng.random() < 0.5 else source.title())
        elif index > 100 and kinds[index] < EXACT_SHARE + NEAR_SHARE:
            source_index = int(rng.integers(0, index))
            rows.append(perturbed(rows[source_index], rng))
            planted.append((index, source_index))
        else:
            first, second = (pool[int(i)].split() for i in rng.integers(0, len(pool), 2))
            rows.append(" ".join(first[: len(first) // 2] + second[len(second) // 2 :]))
    return rows, planted


def perturbed(text: str, rng) -> str:
    """One edit: a word dropped, two neighbours swapped, or a word replaced."""
    words = text.split()
    if len(words) < 4:
        return text + " indeed"
    at = int(rng.integers(0, len(words) - 1))
    edit = rng.integers(0, 3)
    if edit == 0:
        del words[at]
    elif edit == 1:
        words[at], words[at + 1] = words[at + 1], words[at]
    else:
        words[at] = "really"
    return " ".join(words)


def measure(count: int, seed: int) -> dict:
    from llmkit.data import audit as checks

    build_started = time.perf_counter()
    rows, planted = synthetic_rows(count, seed)
    build_seconds = time.perf_counter() - build_started
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    keys = [checks.normalise(text) for text in rows]
    normalised = time.perf_counter()
    split = checks.AuditRows("train", keys, rows, None, [0] * len(rows), lambda i: f"row {i + 1}")
    exact = checks.exact_duplicates(split)
    exact_done = time.perf_counter()
    near = checks.near_duplicates([split])
    report = checks.near_duplicate_report([split], near)
    finished = time.perf_counter()
    group = {}
    for number, members in enumerate(near.groups):
        for _, index in members:
            group[index] = number
    found = sum(
        1
        for copy, source in planted
        if keys[copy] == keys[source] or (copy in group and group.get(source) == group[copy])
    )
    return {
        "rows": count,
        "seed": seed,
        "seconds": {
            "build_rows (not counted)": round(build_seconds, 1),
            "normalise": round(normalised - started, 1),
            "exact_duplicates": round(exact_done - normalised, 1),
            "near_duplicates": round(finished - exact_done, 1),
            "total": round(finished - started, 1),
        },
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "memory_before_audit_mb": round(before),
        "exact_duplicate_rows": exact["duplicate_rows"],
        "near_duplicate_groups": report["within"]["train"]["groups"],
        "rows_in_near_groups": report["within"]["train"]["rows"],
        "planted_near_copies": len(planted),
        "planted_found": found,
        "planted_recall": round(found / len(planted), 4) if planted else None,
        "method": report["method"],
        "threshold": report["threshold"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rows, args.seed)))
        return
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    command = [sys.executable, __file__, "--child", "--rows", str(args.rows), "--seed", str(args.seed)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    seconds = result["seconds"]
    lines = [
        "# Audit at scale: exact and near duplicates",
        "",
        f"{result['rows']:,} synthetic rows from SST-2 sentences (seed {result['seed']}); "
        f"{result['machine']}.",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {step} | {value} |" for step, value in seconds.items()],
        "",
        f"Peak memory {result['peak_memory_mb']} MB ({result['memory_before_audit_mb']} MB before the audit, "
        f"with the rows built). Exact duplicate rows: {result['exact_duplicate_rows']:,}; near-duplicate "
        f"groups: {result['near_duplicate_groups']:,} ({result['rows_in_near_groups']:,} rows). Planted near "
        f"copies found: {result['planted_found']:,} of {result['planted_near_copies']:,} "
        f"({result['planted_recall']:.1%}).",
        "",
        f"Method: {result['method']}, threshold {result['threshold']}.",
    ]
    (RESULTS / "audit_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
