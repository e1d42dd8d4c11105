"""Throughput benchmark: llmkit's recipes against a plain ``Trainer``, side by side in one process.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/throughput.py                    # SST-2 (200 steps each) + Alpaca + CLI help times
    python benchmarks/throughput.py --steps 50 --skip alpaca

1. SST-2 sequence classification, MiniLM-L6, batch 32, the same steps, learning rate, schedule and seed for
   every contestant:
   - ``plain, pad to 128``: the transformers example scripts' default (``padding="max_length"``);
   - ``plain, dynamic padding``: ``DataCollatorWithPadding``;
   - ``llmkit``: ``recipes/sst2-minilm.yaml`` with its defaults.
   Reported: samples/s, real (non-pad) tokens/s, padded tokens per real token, the share of this machine's
   measured fp32 matmul peak spent on real tokens, and SST-2 dev accuracy after the same steps.
2. Causal LM on Alpaca (``recipes/instruct-alpaca.yaml``, SmolLM2-135M): real tokens/s of a plain Trainer
   padding every row to max_length, of llmkit padding each batch to its longest row, and of llmkit packing.
3. Wall time of ``llmkit --help`` and ``llmkit finetune --help``.

Writes benchmarks/results/throughput.json and .md. Throughput comes from the Trainer's own clock
(``train_runtime``: the training loop, not tokenization or model loading); real tokens are counted by the
Trainer (``include_num_input_tokens_seen="non_padding"``: attention-mask sums).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-throughput"
BATCH = 32
# The SST-2 recipe's optimisation settings, repeated for the plain baselines.
LEARNING_RATE, WARMUP, WEIGHT_DECAY = 1e-4, 0.1, 0.01
# The recipes read their data from the Hugging Face Hub; the benchmark reads the same data from DATA.
SST2_FILES = [f"data.train={DATA / 'sst2' / 'train.tsv'}", f"data.validation={DATA / 'sst2' / 'dev.tsv'}"]
ALPACA_FILE = f"data.train={DATA / 'alpaca' / 'alpaca_5000.json'}"


def matmul_peak_gflops(seconds: float = 2.0) -> float:
    """Best fp32 GEMM rate this machine reaches (square matrices, all cores torch uses)."""
    import torch

    best = 0.0
    for size in (1024, 2048):
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 2:
            a @ b
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def training_flops_per_token(model) -> float:
    """6 x parameters outside the embedding tables (2 forward + 4 backward FLOPs per weight and token)."""
    embeddings = sum(
        module.weight.numel()
        for name, module in model.named_modules()
        if type(module).__name__ == "Embedding" and "embeddings" in name
    )
    return 6.0 * (sum(p.numel() for p in model.parameters()) - embeddings)


def minilm_flops_per_token(model_path: Path) -> float:
    from transformers import AutoModelForSequenceClassification

    from llmkit.core.progress import quiet_library_progress

    with quiet_library_progress():
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    return training_flops_per_token(model)


def plain_trainer_sst2(padding: str, steps: int, model_path: Path, seed: int) -> dict:
    """What one writes from the transformers docs: tokenize, Trainer, train, evaluate."""
    import numpy as np
    import pandas as pd
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_to_128 = padding == "max_length"

    def encode(path: Path) -> Dataset:
        frame = pd.read_csv(path, sep="\t", quoting=3)
        dataset = Dataset.from_pandas(frame)
        return dataset.map(
            lambda batch: tokenizer(
                batch["sentence"],
                truncation=True,
                max_length=128,
                padding="max_length" if pad_to_128 else False,
            ),
            batched=True,
            remove_columns=["sentence"],
        )

    train, dev = encode(DATA / "sst2" / "train.tsv"), encode(DATA / "sst2" / "dev.tsv")
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    args = TrainingArguments(
        output_dir=str(WORK / f"plain-{padding}"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=128,
        learning_rate=LEARNING_RATE,
        warmup_steps=WARMUP,
        weight_decay=WEIGHT_DECAY,
        seed=seed,
        save_strategy="no",
        report_to="none",
        logging_steps=max(steps // 4, 1),
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=default_data_collator if pad_to_128 else DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    metrics = trainer.train().metrics
    metrics.update(trainer.evaluate())
    return contestant_figures(metrics, padded_tokens=steps * BATCH * 128 if pad_to_128 else None)


def llmkit_sst2(steps: int, overrides: list[str], seed: int) -> dict:
    import llmkit

    result = llmkit.finetune(
        "recipes/sst2-minilm.yaml",
        [
            *SST2_FILES,
            f"training.max_steps={steps}",
            f"training.seed={seed}",
            f"output_dir={WORK / 'llmkit'}",
            *overrides,
        ],
        overwrite=True,
    )
    return contestant_figures(result.metrics)


def contestant_figures(metrics: dict, padded_tokens: int | None = None) -> dict:
    runtime = metrics["train_runtime"]
    real_tokens = metrics["num_input_tokens_seen"]
    figures = {
        "train_runtime_s": round(runtime, 1),
        "samples_per_second": round(metrics["train_samples_per_second"], 1),
        "real_tokens": real_tokens,
        "real_tokens_per_second": round(real_tokens / runtime, 1),
        "dev_accuracy": round(metrics["eval_accuracy"], 4),
    }
    if padded_tokens is not None:
        figures["padded_tokens_per_real_token"] = round(padded_tokens / real_tokens, 2)
    return figures


def over_seeds(run, seeds: list[int]) -> dict:
    """Run once per seed: speed figures averaged, dev accuracy averaged and listed (200 steps are noisy)."""
    runs = [run(seed) for seed in seeds]
    figures = {
        key: round(statistics.mean(r[key] for r in runs), 4 if key == "dev_accuracy" else 1)
        for key in runs[0]
        if isinstance(runs[0][key], (int, float))
    }
    figures["dev_accuracy_per_seed"] = [r["dev_accuracy"] for r in runs]
    return figures


ALPACA_ROWS = "data.max_train_samples=2000"  # tokenizing all 5,000 rows would take longer than training


def llmkit_alpaca(packing: bool, steps: int, batch: int, max_length: int) -> dict:
    import llmkit

    result = llmkit.finetune(
        "recipes/instruct-alpaca.yaml",
        [
            ALPACA_FILE,
            f"data.packing={str(packing).lower()}",
            f"data.max_length={max_length}",
            ALPACA_ROWS,
            "data.max_eval_samples=8",
            f"training.max_steps={steps}",
            f"training.per_device_train_batch_size={batch}",
            f"output_dir={WORK / ('alpaca-packed' if packing else 'alpaca-padded')}",
        ],
        overwrite=True,
    )
    return alpaca_figures(result.metrics)


def alpaca_figures(metrics: dict) -> dict:
    return {
        "train_runtime_s": round(metrics["train_runtime"], 1),
        "rows_per_second": round(metrics["train_samples_per_second"], 2),
        "real_tokens": metrics["num_input_tokens_seen"],
        "real_tokens_per_second": round(metrics["num_input_tokens_seen"] / metrics["train_runtime"], 1),
    }


def plain_trainer_alpaca(steps: int, batch: int, max_length: int) -> dict:
    """A plain Trainer padding every row to max_length (``padding="max_length"``), on llmkit's own tokens.

    The rows, chat template and reply-only labels are exactly those of llmkit's padded run, so the only
    differences are the padding and llmkit's loss (vocabulary logits only where a label is).
    """
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

    from llmkit.data.files import load_splits
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.recipe.loader import load_recipe
    from llmkit.tasks.generation import GenerationTask

    recipe = load_recipe(
        "recipes/instruct-alpaca.yaml", [ALPACA_FILE, f"data.max_length={max_length}", ALPACA_ROWS]
    )
    task = GenerationTask(recipe.data)
    splits = load_splits(recipe.data, seed=recipe.training["seed"])
    task.check_data(splits)
    model_path = resolve_model(recipe.model)
    tokenizer = load_tokenizer(model_path)
    train = task.encode(splits["train"].dataset, tokenizer)

    def pad_to_max_length(features: list[dict]) -> dict:
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for feature in features:
            padding = max_length - len(feature["input_ids"])
            batch["input_ids"].append(feature["input_ids"] + [tokenizer.pad_token_id] * padding)
            batch["attention_mask"].append([1] * len(feature["input_ids"]) + [0] * padding)
            batch["labels"].append(feature["labels"] + [-100] * padding)
        return {key: torch.tensor(value) for key, value in batch.items()}

    set_seed(recipe.training["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_path)
    args = TrainingArguments(
        output_dir=str(WORK / "alpaca-plain-max-length"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=recipe.training["learning_rate"],
        warmup_steps=recipe.training["warmup_steps"],
        seed=recipe.training["seed"],
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=pad_to_max_length)
    return alpaca_figures(trainer.train().metrics)


def help_seconds(arguments: list[str], repeats: int = 5) -> float:
    """Median wall time of `llmkit ARGS` in a fresh interpreter (what a user waits for)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llmkit", *arguments], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine']}; fp32 matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s", ""]
    if "sst2" in report:
        sst2 = report["sst2"]
        lines += [
            f"SST-2, MiniLM-L6, batch {BATCH}, {sst2['steps']} steps each (dev: 872 sentences); dev accuracy "
            f"is the mean over seeds {', '.join(map(str, sst2['seeds']))} (pad to 128: the first seed only)",
            "",
            "| contestant | samples/s | real tokens/s | padded/real tokens | peak used on real tokens "
            "| dev accuracy | vs dynamic padding |",
            "|---|---|---|---|---|---|---|",
        ]
        dynamic = sst2["contestants"].get("plain, dynamic padding", {}).get("samples_per_second")
        for name, figures in sst2["contestants"].items():
            padded = figures.get("padded_tokens_per_real_token", "")
            speedup = f"{figures['samples_per_second'] / dynamic:.2f}x" if dynamic else ""
            per_seed = ", ".join(f"{a:.4f}" for a in figures["dev_accuracy_per_seed"])
            lines.append(
                f"| {name} | {figures['samples_per_second']:.1f} | {figures['real_tokens_per_second']:.0f} "
                f"| {padded} | {figures['peak_share']:.0%} | {figures['dev_accuracy']:.4f} ({per_seed}) "
                f"| {speedup} |"
            )
        lines.append("")
    if "alpaca" in report:
        alpaca = report["alpaca"]
        rows = [
            ("plain Trainer, padded to max_length", alpaca["plain_padded_to_max_length"]),
            ("llmkit, `data.packing=false` (padded to the batch's longest)", alpaca["padded"]),
            ("llmkit, `data.packing=true`", alpaca["packed"]),
        ]
        lines += [
            f"Alpaca instruction tuning, SmolLM2-135M, batch {alpaca['batch']}, max_length "
            f"{alpaca['max_length']}, {alpaca['steps']} steps each (a row is one example, or one packed row)",
            "",
            "| contestant | rows/s | real tokens/s |",
            "|---|---|---|",
            *(f"| {name} | {f['rows_per_second']} | {f['real_tokens_per_second']:.0f} |" for name, f in rows),
            "",
            f"Packing: {alpaca['packing_speedup_vs_max_length']:.2f}x the real tokens/s of padding to "
            f"max_length, {alpaca['packing_speedup']:.2f}x that of padding each batch to its longest row.",
            "",
        ]
    if "cli" in report:
        lines += [
            "| command | wall time (median of 5) |",
            "|---|---|",
            *(f"| `{command}` | {seconds:.2f} s |" for command, seconds in report["cli"].items()),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="SST-2 training steps per contestant")
    parser.add_argument("--seeds", default="42,43", help="comma-separated; accuracy is averaged over them")
    parser.add_argument("--alpaca-steps", type=int, default=16)
    parser.add_argument("--alpaca-batch", type=int, default=4)
    parser.add_argument("--alpaca-max-length", type=int, default=256)
    parser.add_argument(
        "--skip", action="append", default=[], choices=["pad128", "dynamic", "llmkit", "alpaca", "cli"]
    )
    parser.add_argument(
        "--tag", default="", help="write throughput-TAG.{json,md} (e.g. extra seeds) instead of throughput.*"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides for llmkit's SST-2 run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import resolve_model

    peak = matmul_peak_gflops()
    report: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "matmul_peak_gflops": round(peak, 1),
    }
    minilm = resolve_model("minilm-l6")
    # one count for every contestant: they all train the same MiniLM classifier
    flops_per_token = minilm_flops_per_token(minilm)
    contestants: dict[str, dict] = {}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with quiet_library_progress():
        if "pad128" not in args.skip:  # the same arithmetic as dynamic padding, 4-8x slower: one seed
            contestants["plain, pad to 128"] = over_seeds(
                lambda seed: plain_trainer_sst2("max_length", args.steps, minilm, seed), seeds[:1]
            )
        if "dynamic" not in args.skip:
            contestants["plain, dynamic padding"] = over_seeds(
                lambda seed: plain_trainer_sst2("dynamic", args.steps, minilm, seed), seeds
            )
    if "llmkit" not in args.skip:
        contestants["llmkit"] = over_seeds(lambda seed: llmkit_sst2(args.steps, args.overrides, seed), seeds)
    for figures in contestants.values():
        figures["flops_per_real_token"] = flops_per_token
        flops = figures["real_tokens_per_second"] * flops_per_token
        figures["peak_share"] = flops / (peak * 1e9)
    if contestants:
        report["sst2"] = {
            "steps": args.steps,
            "seeds": seeds,
            "overrides": args.overrides,
            "contestants": contestants,
        }
    if "alpaca" not in args.skip:
        shape = {"steps": args.alpaca_steps, "batch": args.alpaca_batch, "max_length": args.alpaca_max_length}
        with quiet_library_progress():
            max_padded = plain_trainer_alpaca(args.alpaca_steps, args.alpaca_batch, args.alpaca_max_length)
        padded = llmkit_alpaca(False, args.alpaca_steps, args.alpaca_batch, args.alpaca_max_length)
        packed = llmkit_alpaca(True, args.alpaca_steps, args.alpaca_batch, args.alpaca_max_length)
        report["alpaca"] = {
            **shape,
            "plain_padded_to_max_length": max_padded,
            "padded": padded,
            "packed": packed,
            "packing_speedup": round(packed["real_tokens_per_second"] / padded["real_tokens_per_second"], 2),
            "packing_speedup_vs_max_length": round(
                packed["real_tokens_per_second"] / max_padded["real_tokens_per_second"], 2
            ),
        }
    if "cli" not in args.skip:
        report["cli"] = {
            "llmkit --help": help_seconds(["--help"]),
            "llmkit finetune --help": help_seconds(["finetune", "--help"]),
        }

    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"throughput-{args.tag}" if args.tag else "throughput"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (RESULTS / f"{name}.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
