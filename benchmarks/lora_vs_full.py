"""LoRA against full fine-tuning, side by side in one run, each at its own documented learning rate.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/lora_vs_full.py                       # Alpaca 40 steps + SST-2 200 steps, both methods
    python benchmarks/lora_vs_full.py --alpaca-steps 20 --sst2-steps 100

* **SmolLM2-135M on Alpaca** (``recipes/instruct-alpaca.yaml`` on the 5,000-row subset, batch 8,
  max_length 256): trainable share of the parameters, training tokens/s (llmkit's clock, without the
  evaluation before training), peak memory, held-out eval loss before and after (100 held-out examples), and
  the saved model's size (adapter file vs model.safetensors).
* **MiniLM-L6 on SST-2** (``recipes/sst2-minilm.yaml``): samples/s and dev accuracy.

Full fine-tuning trains at llmkit's recipe rates (5e-5 Alpaca, 1e-4 SST-2); LoRA (``--ranks``, default r=8
and r=16, alpha = 2r, every linear layer, ``--lora-dropout`` default 0 as llmkit's default) at 2e-4 Alpaca and
5e-4 SST-2, the rates LoRA papers and tools use (its updates start at zero and are scaled by alpha/r). The
first LoRA rank runs before full fine-tuning and the others after, so a change of machine load shows. Each
contestant runs in its own child process, one
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


def lora_overrides(rank: int, dropout: float) -> list[str]:
    return ["peft.method=lora", f"peft.r={rank}", f"peft.alpha={2 * rank}", f"peft.dropout={dropout}"]


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


def one_run(case: str, method: str, steps: int, dropout: float = 0.0, rate: float | None = None) -> dict:
    """Train one contestant in this (child) process; return its figures."""
    import torch

    import llmkit

    spec = CASES[case]
    output = WORK / f"{case}-{method}"
    rank = int(method.removeprefix("lora")) if method.startswith("lora") else 0
    learning_rate = (rate if rank and rate else None) or spec["rates"]["lora" if rank else "full"]
    overrides = [
        *spec["overrides"],
        f"training.max_steps={steps}",
        f"training.learning_rate={learning_rate}",
        f"output_dir={output}",
        *(lora_overrides(rank, dropout) if rank else []),
    ]
    started = time.perf_counter()
    result = llmkit.finetune(spec["recipe"], overrides, overwrite=True)
    wall = time.perf_counter() - started
    metrics = result.metrics
    stats = json.loads((output / "run_stats.json").read_text())
    weights = output / ("adapter_model.safetensors" if rank else "model.safetensors")
    adapter = stats.get("adapter") or {}
    figures = {
        "case": case,
        "method": method,
        "steps": steps,
        "learning_rate": learning_rate,
        "rank": rank,
        "dropout": dropout if rank else None,
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
    if not rank:
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


def child(case: str, method: str, steps: int, dropout: float, rate: float | None) -> dict:
    """Run one contestant in a fresh process, so its peak memory is its own."""
    command = [sys.executable, __file__, "--one", f"{case}:{method}:{steps}:{dropout}:{rate or ''}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{case} {method} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[str]:
    """One Markdown table per case: full beside each LoRA rank, each figure with its ratio to full's."""
    lines = []
    for case, title in (("alpaca", "SmolLM2-135M on Alpaca"), ("sst2", "MiniLM-L6 on SST-2")):
        runs = [row for row in rows if row["case"] == case]
        full = next((row for row in runs if not row["rank"]), None)
        loras = sorted((row for row in runs if row["rank"]), key=lambda row: row["rank"])
        if full is None or not loras:
            continue
        lines += case_table(case, title, full, loras)
    return lines


def case_table(case: str, title: str, full: dict, loras: list[dict]) -> list[str]:
    """The rows of one case: full fine-tuning, then each LoRA rank with its ratio to full's figure."""
    batch = "batch 8, max_length 256" if case == "alpaca" else "batch 32"
    dropout = loras[0]["dropout"]
    lines = [
        f"{title} ({full['steps']} steps, {batch}, {full['device']}; LoRA alpha = 2 r, dropout {dropout:g}):",
        "",
        "| | full | " + " | ".join(f"LoRA r={row['rank']}" for row in loras) + " | target (LoRA / full) |",
        "|---|---|" + "---|" * len(loras) + "---|",
    ]

    def line(label: str, value, ratio=None, target: str = "") -> str:
        cells = [value(row) + (f" ({ratio(row)})" if ratio else "") for row in loras]
        return f"| {label} | {value(full)} | " + " | ".join(cells) + f" | {target} |"

    lines.append(
        line(
            "trainable parameters",
            lambda r: f"{r['trainable_parameters'] / r['all_parameters']:.2%}",
            target="≤ 2 %" if case == "alpaca" else "",
        )
    )
    lines.append(line("learning rate", lambda r: f"{r['learning_rate']:g}"))
    if case == "alpaca":
        drop = full["eval_before_loss"] - full["eval_loss"]
        lines.append(
            line(
                "eval loss before → after",
                lambda r: f"{r['eval_before_loss']:.4f} → {r['eval_loss']:.4f}",
                lambda r: f"{(r['eval_before_loss'] - r['eval_loss']) / drop:.0%} of full's drop",
                "≥ 80 % of the drop",
            )
        )
        lines.append(
            line(
                "training tokens/s",
                lambda r: f"{r['tokens_per_second']:.1f}",
                lambda r: f"{r['tokens_per_second'] / full['tokens_per_second']:.2f}×",
                "≥ 1.2×",
            )
        )
    else:
        lines.append(line("dev accuracy", lambda r: f"{r['eval_accuracy']:.3f}"))
        lines.append(
            line(
                "training samples/s",
                lambda r: f"{r['samples_per_second']:.1f}",
                lambda r: f"{r['samples_per_second'] / full['samples_per_second']:.2f}×",
            )
        )
    lines.append(
        line(
            "peak memory (MB)",
            lambda r: f"{r['peak_memory_mb']:.0f}",
            lambda r: f"{r['peak_memory_mb'] / full['peak_memory_mb']:.0%}",
            "≤ 70 %" if case == "alpaca" else "",
        )
    )
    lines.append(
        line(
            "saved weights (MB)",
            lambda r: f"{r['saved_bytes'] / 1e6:.1f}",
            lambda r: f"{r['saved_bytes'] / full['saved_bytes']:.1%}",
            "≤ 5 %" if case == "alpaca" else "",
        )
    )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpaca-steps", type=int, default=40)
    parser.add_argument("--sst2-steps", type=int, default=200)
    parser.add_argument("--cases", default="alpaca,sst2")
    parser.add_argument("--ranks", default="8,16", help="LoRA ranks to run (alpha = 2 x rank)")
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument(
        "--lora-lr", type=float, help="LoRA's learning rate (default: 2e-4 Alpaca, 5e-4 SST-2)"
    )
    parser.add_argument("--skip-full", action="store_true", help="LoRA only (a learning-rate sweep)")
    parser.add_argument("--tag", default="", help="write lora_vs_full-TAG.* instead of lora_vs_full.*")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # CASE:METHOD:STEPS, in a child process
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        case, method, steps, dropout, rate = args.one.split(":")
        print(json.dumps(one_run(case, method, int(steps), float(dropout), float(rate) if rate else None)))
        return
    steps = {"alpaca": args.alpaca_steps, "sst2": args.sst2_steps}
    rows = []
    for case in args.cases.split(","):
        ranks = [f"lora{rank}" for rank in args.ranks.split(",")]
        order = [ranks[0], *([] if args.skip_full else ["full"]), *ranks[1:]]  # LoRA on both sides of full
        for method in order:
            print(f"{case} {method} ...", file=sys.stderr, flush=True)
            rows.append(child(case, method, steps[case], args.lora_dropout, args.lora_lr))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"lora_vs_full-{args.tag}" if args.tag else "lora_vs_full"
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    command = "python benchmarks/lora_vs_full.py " + " ".join(sys.argv[1:])
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"command": command, "threads": threads, "runs": rows}, indent=2)
    )
    text = [f"`{command}` (OMP_NUM_THREADS={threads})", "", *table(rows)]
    (RESULTS / f"{stem}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
