"""LoRA against full fine-tuning, side by side in one run, each at its own documented learning rate.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/lora_vs_full.py                       # Alpaca 40 steps + SST-2 200 steps, both methods
    python benchmarks/lora_vs_full.py --alpaca-steps 20 --sst2-steps 100

* **SmolLM2-135M on Alpaca** (``recipes/instruct-alpaca.yaml`` on the 5,000-row subset, batch 8,
  max_length 256): trainable share of the parameters, training tokens/s (llmkit's clock, without the
  evaluation before training), peak memory, held-out eval loss before and after (100 held-out examples), and
  the saved model's size (adapter file vs model.safetensors).
* **MiniLM-L6 on SST-2** (``recipes/sst2-minilm.yaml``): samples/s and dev accuracy.

Full fine-tuning trains at llmkit's recipe rates (5e-5 Alpaca, 1e-4 SST-2); LoRA (r=16, alpha=32, every
linear layer, dropout 0.05) at 2e-4 Alpaca and 5e-4 SST-2, the rates LoRA papers and tools use (its
updates start at zero and are scaled by alpha/r). Each contestant runs in its own child process, one
right after the other, so peak memory is that run's own (RSS on a CPU, ``torch.cuda.max_memory_allocated``
on a GPU) and both see the same machine load. Writes benchmarks/results/lora_vs_full.{json,md}.
(Not named peft.py: a script's folder comes first on sys.path, and that name would hide the peft package.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-peft"
DATA = REPO.parent / "shared" / "data"
LORA = ["peft.method=lora", "peft.r=16", "peft.alpha=32", "peft.dropout=0.05"]

CASES = {
    "alpaca": {
        "recipe": "recipes/instruct-alpaca.yaml",
        "overrides": [
            f"data.train={DATA / 'alpaca' / 'alpaca_5000.json'}",
            "data.max_length=256",
            "training.per_device_train_batch_size=8",
            "training.per_device_eval_batch_size=8",
            "data.max_eval_samples=100",
            "training.eval_on_start=true",
            "training.eval_strategy=steps",
            "training.eval_steps=100000",  # evaluated at the start and once after training
            "training.logging_steps=5",
        ],
        "rates": {"full": 5e-5, "lora": 2e-4},
    },
    "sst2": {
        "recipe": "recipes/sst2-minilm.yaml",
        "overrides": [
            f"data.train={DATA / 'sst2' / 'train.tsv'}",
            f"data.validation={DATA / 'sst2' / 'dev.tsv'}",
            "training.logging_steps=50",
        ],
        "rates": {"full": 1e-4, "lora": 5e-4},
    },
}


def one_run(case: str, method: str, steps: int) -> dict:
    """Train one contestant in this (child) process; return its figures."""
    import torch

    import llmkit

    spec = CASES[case]
    output = WORK / f"{case}-{method}"
    overrides = [
        *spec["overrides"],
        f"training.max_steps={steps}",
        f"training.learning_rate={spec['rates'][method]}",
        f"output_dir={output}",
        *(LORA if method == "lora" else []),
    ]
    started = time.perf_counter()
    result = llmkit.finetune(spec["recipe"], overrides, overwrite=True)
    wall = time.perf_counter() - started
    metrics = result.metrics
    stats = json.loads((output / "run_stats.json").read_text())
    weights = output / ("adapter_model.safetensors" if method == "lora" else "model.safetensors")
    adapter = stats.get("adapter") or {}
    figures = {
        "case": case,
        "method": method,
        "steps": steps,
        "learning_rate": spec["rates"][method],
        "wall_seconds": round(wall, 1),
        "train_seconds": round(metrics["train_runtime"], 1),
        "samples_per_second": round(metrics["train_samples_per_second"], 2),
        "tokens_per_second": metrics.get("train_tokens_per_second"),
        "saved_bytes": weights.stat().st_size,
        "trainable_parameters": adapter.get("trainable_parameters"),
        "all_parameters": adapter.get("all_parameters"),
        "eval_loss": metrics.get("eval_loss"),
        "eval_before_loss": metrics.get("eval_before_loss"),
        "eval_accuracy": metrics.get("eval_accuracy"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        figures["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        figures["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if method == "full":
        figures["trainable_parameters"] = figures["all_parameters"] = parameter_count(output)
    return figures


def parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
            count = 1
            for size in handle.get_slice(key).get_shape():
                count *= size
            total += count
    return total


def child(case: str, method: str, steps: int) -> dict:
    """Run one contestant in a fresh process, so its peak memory is its own."""
    command = [sys.executable, __file__, "--one", f"{case}:{method}:{steps}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{case} {method} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[str]:
    by = {(row["case"], row["method"]): row for row in rows}
    lines = []
    alpaca_full, alpaca_lora = by.get(("alpaca", "full")), by.get(("alpaca", "lora"))
    if alpaca_full and alpaca_lora:
        lines += [
            f"SmolLM2-135M on Alpaca ({alpaca_full['steps']} steps, batch 8, max_length 256, "
            f"{alpaca_full['device']}):",
            "",
            "| | full | LoRA r=16 | LoRA / full | target |",
            "|---|---|---|---|---|",
        ]
        share = alpaca_lora["trainable_parameters"] / alpaca_lora["all_parameters"]
        drop = {
            m: r["eval_before_loss"] - r["eval_loss"]
            for m, r in (("full", alpaca_full), ("lora", alpaca_lora))
        }
        lines.append(f"| trainable parameters | 100 % | {share:.2%} | | ≤ 2 % |")
        lines.append(
            f"| learning rate | {alpaca_full['learning_rate']:g} | {alpaca_lora['learning_rate']:g} | | |"
        )
        lines.append(
            f"| eval loss before → after | {alpaca_full['eval_before_loss']:.4f} → "
            f"{alpaca_full['eval_loss']:.4f} | {alpaca_lora['eval_before_loss']:.4f} → "
            f"{alpaca_lora['eval_loss']:.4f} "
            f"| drop {drop['lora'] / drop['full']:.0%} of full's | ≥ 80 % |"
            if drop["full"] > 0
            else f"| eval loss before → after | {alpaca_full['eval_before_loss']:.4f} → "
            f"{alpaca_full['eval_loss']:.4f} | {alpaca_lora['eval_before_loss']:.4f} → "
            f"{alpaca_lora['eval_loss']:.4f} | full did not lower it | ≥ 80 % |"
        )
        lines.append(
            f"| training tokens/s | {alpaca_full['tokens_per_second']} | {alpaca_lora['tokens_per_second']} "
            f"| {alpaca_lora['tokens_per_second'] / alpaca_full['tokens_per_second']:.2f}× | ≥ 1.2× |"
        )
        lines.append(
            f"| peak memory (MB) | {alpaca_full['peak_memory_mb']:.0f} | {alpaca_lora['peak_memory_mb']:.0f} "
            f"| {alpaca_lora['peak_memory_mb'] / alpaca_full['peak_memory_mb']:.0%} | ≤ 70 % |"
        )
        lines.append(
            f"| saved weights (MB) | {alpaca_full['saved_bytes'] / 1e6:.1f} | "
            f"{alpaca_lora['saved_bytes'] / 1e6:.2f} "
            f"| {alpaca_lora['saved_bytes'] / alpaca_full['saved_bytes']:.1%} | ≤ 5 % |"
        )
        lines.append("")
    sst_full, sst_lora = by.get(("sst2", "full")), by.get(("sst2", "lora"))
    if sst_full and sst_lora:
        lines += [
            f"MiniLM-L6 on SST-2 ({sst_full['steps']} steps, batch 32, {sst_full['device']}):",
            "",
            "| | full | LoRA r=16 | LoRA / full |",
            "|---|---|---|---|",
            f"| trainable parameters | 100 % | "
            f"{sst_lora['trainable_parameters'] / sst_lora['all_parameters']:.2%} | |",
            f"| learning rate | {sst_full['learning_rate']:g} | {sst_lora['learning_rate']:g} | |",
            f"| dev accuracy | {sst_full['eval_accuracy']:.3f} | {sst_lora['eval_accuracy']:.3f} | |",
            f"| training samples/s | {sst_full['samples_per_second']:.1f} | "
            f"{sst_lora['samples_per_second']:.1f} "
            f"| {sst_lora['samples_per_second'] / sst_full['samples_per_second']:.2f}× |",
            f"| peak memory (MB) | {sst_full['peak_memory_mb']:.0f} | {sst_lora['peak_memory_mb']:.0f} "
            f"| {sst_lora['peak_memory_mb'] / sst_full['peak_memory_mb']:.0%} |",
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpaca-steps", type=int, default=40)
    parser.add_argument("--sst2-steps", type=int, default=200)
    parser.add_argument("--cases", default="alpaca,sst2")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # CASE:METHOD:STEPS, in a child process
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        case, method, steps = args.one.split(":")
        print(json.dumps(one_run(case, method, int(steps))))
        return
    steps = {"alpaca": args.alpaca_steps, "sst2": args.sst2_steps}
    rows = []
    for case in args.cases.split(","):
        for method in ("full", "lora"):
            print(f"{case} {method} ...", file=sys.stderr, flush=True)
            rows.append(child(case, method, steps[case]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    command = "python benchmarks/lora_vs_full.py " + " ".join(sys.argv[1:])
    (RESULTS / "lora_vs_full.json").write_text(
        json.dumps({"command": command, "threads": threads, "runs": rows}, indent=2)
    )
    text = [f"`{command}` (OMP_NUM_THREADS={threads})", "", *table(rows)]
    (RESULTS / "lora_vs_full.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
