"""CPU precision benchmark: SST-2 with llmkit in fp32 and in bf16 autocast, side by side in one process.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/cpu_precision.py                      # 200 steps, seeds 42,43,44, + plain Trainer
    python benchmarks/cpu_precision.py --steps 50 --seeds 42 --skip-plain

Each seed runs ``recipes/sst2-minilm.yaml`` (MiniLM-L6, batch 32) once with ``training.precision=fp32`` and
once with ``training.precision=bf16``, one right after the other, so both see the same machine load; a plain
``Trainer`` with dynamic padding (fp32) runs once as the baseline. Reported: samples/s and real tokens/s from
the Trainer's clock, SST-2 dev accuracy per seed and mean, this machine's fp32 and bf16 matmul rates, whether
the CPU has native bf16, and the precision ``auto`` picks here.
Writes benchmarks/results/cpu_precision.{json,md}.

``precision: auto`` picks bf16 only on CPUs with native bf16 (AVX512-BF16 or AMX); this benchmark is the
evidence for that choice, and on a CPU without native bf16 it shows why auto stays fp32 there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import SST2_FILES, contestant_figures, plain_trainer_sst2  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-cpu-precision"


def matmul_gflops(dtype_name: str, seconds: float = 1.5) -> float:
    """A 1024x1024 GEMM's rate in this dtype on all the cores torch uses."""
    import torch

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype_name])
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    a @ b
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 1024**3 * count / (time.perf_counter() - start) / 1e9


def llmkit_run(precision: str, steps: int, seed: int) -> dict:
    import llmkit

    result = llmkit.finetune(
        "recipes/sst2-minilm.yaml",
        [
            *SST2_FILES,
            f"training.precision={precision}",
            f"training.max_steps={steps}",
            f"training.seed={seed}",
            f"output_dir={WORK / precision}",
        ],
        overwrite=True,
    )
    return contestant_figures(result.metrics)


def summary(runs: list[dict]) -> dict:
    return {
        "samples_per_second": round(statistics.mean(r["samples_per_second"] for r in runs), 1),
        "real_tokens_per_second": round(statistics.mean(r["real_tokens_per_second"] for r in runs), 1),
        "dev_accuracy": round(statistics.mean(r["dev_accuracy"] for r in runs), 4),
        "samples_per_second_per_seed": [r["samples_per_second"] for r in runs],
        "dev_accuracy_per_seed": [r["dev_accuracy"] for r in runs],
    }


def markdown(report: dict) -> str:
    lines = [
        f"# CPU precision on SST-2 ({report['steps']} steps, batch 32, seeds {report['seeds']})",
        "",
        f"Machine: {report['machine']['cpu_name']}, {report['machine']['cpu_cores']} cores, native bf16: "
        f"{'yes' if report['machine']['cpu_bf16'] else 'no'}; matmul fp32 {report['matmul_gflops']['fp32']} "
        f"GFLOP/s, bf16 {report['matmul_gflops']['bf16']} GFLOP/s; torch threads: {report['torch_threads']}.",
        f"`precision: auto` here: **{report['auto']['precision']}** ({report['auto']['reason']}).",
        "",
        "| contestant | samples/s (mean) | samples/s per seed | dev accuracy (mean) | per seed |",
        "|---|---|---|---|---|",
    ]
    for name, figures in report["contestants"].items():
        lines.append(
            f"| {name} | {figures['samples_per_second']} | {figures['samples_per_second_per_seed']} | "
            f"{figures['dev_accuracy']} | {figures['dev_accuracy_per_seed']} |"
        )
    if "bf16_speedup" in report:
        lines += ["", f"bf16 / fp32 samples/s: **{report['bf16_speedup']}x**."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--skip-plain", action="store_true", help="no plain-Trainer baseline run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(REPO)

    from llmkit.core.devices import choose_precision, probe_machine
    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import resolve_model

    machine = probe_machine()
    auto = choose_precision("auto", machine, "benchmark")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    import torch

    report: dict = {
        "machine": machine.to_dict(),
        "torch_threads": torch.get_num_threads(),
        "auto": {"precision": auto.precision, "reason": auto.reason},
        "matmul_gflops": {name: round(matmul_gflops(name), 1) for name in ("fp32", "bf16")},
        "steps": args.steps,
        "seeds": seeds,
        "contestants": {},
    }
    if not args.skip_plain:
        with quiet_library_progress():
            plain = plain_trainer_sst2("dynamic", args.steps, resolve_model("minilm-l6"), seeds[0])
        report["contestants"]["plain Trainer, dynamic padding, fp32"] = summary([plain])
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for seed in seeds:  # interleaved: a change in machine load hits both precisions alike
        for precision in runs:
            runs[precision].append(llmkit_run(precision, args.steps, seed))
    for precision, results in runs.items():
        report["contestants"][f"llmkit, precision {precision}"] = summary(results)
    fp32, bf16 = (report["contestants"][f"llmkit, precision {p}"] for p in ("fp32", "bf16"))
    report["bf16_speedup"] = round(bf16["samples_per_second"] / fp32["samples_per_second"], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cpu_precision.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "cpu_precision.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
