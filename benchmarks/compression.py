"""Compression side by side: a teacher, its distilled student and the same student trained without the
teacher, each in PyTorch fp32, PyTorch int8, ONNX fp32 and ONNX int8 (and the teacher in bf16), on SST-2
(MiniLM-L6 classifier) and CoNLL-2003 (MiniLM-L6 tagger), all measured in one run on this CPU.

    python benchmarks/compression.py                    # both tasks, the runs below
    python benchmarks/compression.py --tasks sst2 --calls 50 --resamples 100    # a quick look

The runs it compresses (made beforehand; each is a plain llmkit run folder):

* SST-2: the teacher ``runs/evaluate-real/sst2-minilm`` (``python benchmarks/evaluate_real.py sst2``: the
  recipe's one epoch) and the students ``runs/distill-sst2/student-{distilled,labels-only}`` (``python
  benchmarks/distill_sst2.py --teacher runs/evaluate-real/sst2-minilm``: layers 0, 2, 4 of the teacher, one
  epoch, with ``distill: {alpha: 0.5, temperature: 2}`` and on the labels alone);
* CoNLL-2003: the teacher ``runs/evaluate-real/ner`` (``python benchmarks/evaluate_real.py ner``) and the
  students ``runs/distill-ner/student-{distilled,labels-only}``, trained by the teacher's recipe with
  ``model.init_from=runs/evaluate-real/ner model.layers=[0,2,4]`` (and
  ``distill.teacher=runs/evaluate-real/ner`` for the distilled one); ``--sst2``/``--conll`` name other runs.

For each task every model is exported by ``llmkit export`` (``--format torch --quantize int8``,
``--format onnx``, ``--format onnx --quantize int8``) into runs/compression/TASK/, and the teacher is also
saved with bf16 weights. Then, for each of the 13 variants:

* **size on disk** of the weights file;
* **latency at batch 1**, p50 and p95 over ``--calls`` calls on the task's own sentences (tokenized
  beforehand: the tokenizer is the same for all), with 1 and with 2 threads; the variants take turns in rounds
  of 20 calls, so a neighbour's burst on the shared cores hits them alike;
* **throughput at batch 32** (rows per second over 256 sentences, the best of 5 passes, the variants taking
  turns, 1 and 2 threads);
* **quality**: ``llmkit evaluate`` of all 13 on the whole SST-2 validation file (accuracy, 872 sentences) or
  CoNLL-2003 test file (entity F1, 3,453 sentences), in fp32 (``training.precision=fp32``; the bf16 teacher
  computes in its weights' bf16), with 95 % bootstrap intervals and each variant's paired difference to the
  teacher in fp32 (paired bootstrap p-value).

Writes benchmarks/results/compression.{json,md} and compression.png (quality against batch-1 latency).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from export_speed import cpu_name, percentile, version  # this folder is first on sys.path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "compression"
TASKS = {
    "sst2": {
        "title": "SST-2 (MiniLM-L6 classifier)",
        "data": SHARED / "sst2" / "dev.tsv",
        "metric": "accuracy",
        "runs": [
            "runs/evaluate-real/sst2-minilm",
            "runs/distill-sst2/student-distilled",
            "runs/distill-sst2/student-labels-only",
        ],
    },
    "conll": {
        "title": "CoNLL-2003 (MiniLM-L6 tagger)",
        "data": SHARED / "conll2003" / "test.txt",
        "metric": "f1",
        "runs": [
            "runs/evaluate-real/ner",
            "runs/distill-ner/student-distilled",
            "runs/distill-ner/student-labels-only",
        ],
    },
}
MODELS = ("teacher", "distilled", "labels-only")
#: format -> (llmkit export --format, --quantize); "fp32" is the run folder itself, "bf16" a bf16 copy.
EXPORTS = {"torch int8": ("torch", "int8"), "ONNX fp32": ("onnx", None), "ONNX int8": ("onnx", "int8")}
LATENCY_TEXTS = 256
PER_ROUND = 20
#: Batch-32 passes over the sentences per variant and thread count (the best one counts).
PASSES = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--sst2", nargs=3, metavar=("TEACHER", "DISTILLED", "LABELS_ONLY"))
    parser.add_argument("--conll", nargs=3, metavar=("TEACHER", "DISTILLED", "LABELS_ONLY"))
    parser.add_argument("--calls", type=int, default=300, help="batch-1 calls per variant and thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--resamples", type=int, default=1000)
    options = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"no shared data at {SHARED}: this benchmark scores on SST-2 and CoNLL-2003")

    started = time.perf_counter()
    load_before = os.getloadavg()
    results = {}
    for name in options.tasks:
        runs = [Path(run) for run in (getattr(options, name) or TASKS[name]["runs"])]
        results[name] = measure_task(
            name, [REPO / run if not run.is_absolute() else run for run in runs], options
        )
    result = {
        "tasks": results,
        "calls": options.calls,
        "threads": options.threads,
        "resamples": options.resamples,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": version("torch"),
        "onnxruntime": version("onnxruntime"),
        # other jobs share the cores: the 1/5/15-minute load averages before and after
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "seconds": round(time.perf_counter() - started),
        "command": "python benchmarks/compression.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compression.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / "compression.md").write_text(table)
    plot(result, RESULTS / "compression.png")
    print(table)


# -- one task ---------------------------------------------------------------------------------------------
def measure_task(name: str, runs: list[Path], options: argparse.Namespace) -> dict:
    """Export every model, time every variant, score every variant: one task's rows."""
    for run in runs:
        if not (run / "config.json").exists():
            sys.exit(f"{run}: no trained run there; the module doc says which command makes it")
    work = WORK / name
    variants = build_variants(dict(zip(MODELS, runs, strict=True)), work)
    texts = latency_texts(TASKS[name]["data"])
    print(f"{name}: {len(variants)} variants; timing on {len(texts)} sentences", flush=True)
    timings = time_variants(variants, runs[0], texts, options)
    scores = score_variants(variants, TASKS[name], work / "evaluation", options.resamples)
    base = variants["teacher fp32"]
    rows = []
    for label, folder in variants.items():
        rows.append(
            {
                "variant": label,
                "folder": str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder),
                "bytes": weights_bytes(folder),
                "size_share": round(weights_bytes(folder) / weights_bytes(base), 3),
                **timings[label],
                **scores[label],
            }
        )
    one = str(min(options.threads))
    for row in rows:
        row["speedup_batch1"] = round(rows[0]["latency"][one]["p50_ms"] / row["latency"][one]["p50_ms"], 2)
    return {
        "title": TASKS[name]["title"],
        "data": str(TASKS[name]["data"].relative_to(REPO.parent)),
        "metric": TASKS[name]["metric"],
        "runs": dict(zip(MODELS, map(str, runs), strict=True)),
        "mean_tokens": timings["mean_tokens"],
        "rows": rows,
    }


def build_variants(models: dict[str, Path], work: Path) -> dict[str, Path]:
    """Each model as trained (fp32) and exported three ways; the teacher also with bf16 weights."""
    from llmkit.inference.export import export

    variants: dict[str, Path] = {}
    for model, run in models.items():
        variants[f"{model} fp32"] = run
        if model == "teacher":
            variants["teacher bf16"] = bf16_copy(run, work / "teacher-bf16")
        for label, (format, quantize) in EXPORTS.items():
            folder = work / f"{model}-{label.lower().replace(' ', '-')}"
            variants[f"{model} {label}"] = export(run, folder, format, quantize, overwrite=True)
    return variants


def bf16_copy(run: Path, folder: Path) -> Path:
    """The run's model with its weights stored in bf16 (its recipe and tokenizer beside them), as a user who
    halves a model's size without quantizing it would save it."""
    import torch

    from llmkit.inference.predict import task_for_model
    from llmkit.models.resolve import load_model

    if folder.exists():
        shutil.rmtree(folder)  # this benchmark's own earlier copy
    folder.mkdir(parents=True)
    model = load_model(task_for_model(run), run)
    model.to(torch.bfloat16).save_pretrained(folder)
    for name in ("recipe.yaml", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (run / name).exists():
            shutil.copy2(run / name, folder / name)
    return folder


def latency_texts(data: Path) -> list[str]:
    """The first sentences of the scored file, as a service would receive them (CoNLL: the words joined,
    from the JSON-lines copy of the same file)."""
    if data.suffix == ".txt":
        lines = data.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line)["tokens"] for line in lines]
        return [" ".join(tokens) for tokens in rows if tokens][:LATENCY_TEXTS]
    lines = data.read_text(encoding="utf-8").splitlines()[1 : LATENCY_TEXTS + 1]
    return [line.split("\t")[0] for line in lines]


# -- speed ------------------------------------------------------------------------------------------------
def time_variants(
    variants: dict[str, Path], run: Path, texts: list[str], options: argparse.Namespace
) -> dict:
    """Batch-1 latency (rounds, every variant in turn) and batch-32 throughput, per thread count."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run)

    def encode(batch: list[str]) -> dict:
        return dict(tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt"))

    single = [encode([text]) for text in texts]
    batches = [encode(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    found: dict = {label: {"latency": {}, "batch32_rows_per_second": {}} for label in variants}
    for threads in options.threads:
        torch.set_num_threads(threads)
        runners = {label: runner(label, folder, threads) for label, folder in variants.items()}
        times: dict[str, list[float]] = {label: [] for label in variants}
        for call in runners.values():  # warm up
            for inputs in single[:PER_ROUND]:
                call(inputs)
        for start in range(0, options.calls, PER_ROUND):
            for label, call in runners.items():
                for i in range(start, min(start + PER_ROUND, options.calls)):
                    began = time.perf_counter()
                    call(single[i % len(single)])
                    times[label].append(time.perf_counter() - began)
        for label in variants:
            found[label]["latency"][str(threads)] = {
                "p50_ms": round(percentile(times[label], 50) * 1000, 3),
                "p95_ms": round(percentile(times[label], 95) * 1000, 3),
            }
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(PASSES):  # the variants in turn; the best pass: a neighbour's burst hits one pass
            for label, call in runners.items():
                began = time.perf_counter()
                for batch in batches:
                    call(batch)
                best[label] = min(best[label], time.perf_counter() - began)
        for label in variants:
            found[label]["batch32_rows_per_second"][str(threads)] = round(len(texts) / best[label], 1)
        print(f"  timed with {threads} thread(s)", flush=True)
    found["mean_tokens"] = round(statistics.mean(len(item["input_ids"][0]) for item in single), 1)
    return found


def runner(label: str, folder: Path, threads: int):
    """``inputs -> logits`` for one variant with ``threads`` threads: the ONNX session itself (no torch
    wrapper), the int8 PyTorch model, or the model as saved (fp32 or bf16 weights)."""
    import numpy as np
    import torch

    from llmkit.inference.predict import task_for_model
    from llmkit.models.exported import load_exported, onnx_session, read_export
    from llmkit.models.resolve import load_model

    task = task_for_model(folder)
    if "ONNX" in label:
        session = onnx_session(folder / read_export(folder)["file"], threads)
        names = [item.name for item in session.get_inputs()]

        def run_onnx(inputs: dict):
            feed = {key: inputs[key].numpy().astype(np.int64) for key in names}
            return session.run(["logits"], feed)[0]

        return run_onnx
    model = load_exported(task, folder) if "int8" in label else load_model(task, folder).eval()

    def run_torch(inputs: dict):
        with torch.inference_mode():
            return model(**inputs).logits

    return run_torch


def weights_bytes(folder: Path) -> int:
    from llmkit.models.exported import is_exported_folder, read_export

    if is_exported_folder(folder):
        return (folder / read_export(folder)["file"]).stat().st_size
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


# -- quality ----------------------------------------------------------------------------------------------
def score_variants(variants: dict[str, Path], task: dict, output: Path, resamples: int) -> dict:
    """``llmkit evaluate`` of every variant on the task's file, in fp32; each one's headline, its interval and
    its paired difference to the first (the teacher in fp32)."""
    import llmkit

    if output.exists():
        shutil.rmtree(output)  # this benchmark's own earlier scores
    evaluation = llmkit.evaluate_models(
        [str(folder) for folder in variants.values()],
        str(task["data"]),
        ["training.precision=fp32"],
        resamples=resamples,
        output=output,
        write_predictions=False,
    )
    report = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    del evaluation
    key = f"eval_{task['metric']}"
    scores = {}
    for label, record in zip(variants, report["models"], strict=True):
        difference = record.get("difference_to_first", {}).get(key, {})
        scores[label] = {
            "score": round(record["metrics"][key], 4),
            "interval": [round(value, 4) for value in record["intervals"].get(key, [])],
            "difference_to_teacher": difference,
        }
    return scores


# -- the report -------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    threads = result["threads"]
    lines = []
    for task in result["tasks"].values():
        metric = task["metric"]
        header = ["variant", "size", "vs teacher"]
        for count in threads:
            header += [f"batch-1 p50/p95 ({count}t)"]
        header += ["speed-up (b1, 1t)", *[f"batch 32 ({count}t)" for count in threads]]
        header += [f"{metric} [95% CI]", "Δ vs teacher fp32 (paired p)"]
        lines += [f"### {task['title']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in task["rows"]:
            cells = [row["variant"], f"{row['bytes'] / 1e6:.1f} MB", f"{row['size_share']:.0%}"]
            for count in threads:
                numbers = row["latency"][str(count)]
                cells.append(f"{numbers['p50_ms']:.2f} / {numbers['p95_ms']:.2f} ms")
            cells.append(f"{row['speedup_batch1']:.2f}x")
            cells += [f"{row['batch32_rows_per_second'][str(count)]:.0f}/s" for count in threads]
            low, high = row["interval"] or (float("nan"), float("nan"))
            cells.append(f"{row['score']:.4f} [{low:.3f}, {high:.3f}]")
            cells.append(difference_cell(row["difference_to_teacher"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"{task['data']}; latency on its first {LATENCY_TEXTS} sentences "
            f"(mean {task['mean_tokens']} tokens).",
            "",
        ]
    lines += [
        f"{result['calls']} batch-1 calls per variant and thread count; {result['cpu']} "
        f"({result['cpu_count']} cores, shared; load average {result['load_average_before'][0]} before, "
        f"{result['load_average_after'][0]} after); torch {result['torch']}, onnxruntime "
        f"{result['onnxruntime']}; {result['seconds']} s. Command: `{result['command'].strip()}`.",
        "",
    ]
    return "\n".join(lines)


def difference_cell(difference: dict) -> str:
    if not difference:
        return "—"
    return f"{difference['difference']:+.4f} (p {difference['p_value']:.2f})"


def plot(result: dict, path: Path) -> None:
    """Quality (with its interval) against batch-1 p50 latency with one thread, a panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"].values())
    figure, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.8), squeeze=False)
    colours = {"teacher": "tab:blue", "distilled": "tab:green", "labels-only": "tab:orange"}
    markers = {"fp32": "o", "bf16": "D", "torch int8": "s", "ONNX fp32": "^", "ONNX int8": "*"}
    one = str(min(result["threads"]))
    for axis, task in zip(axes[0], tasks, strict=True):
        for row in task["rows"]:
            model, form = row["variant"].split(" ", 1)
            x = row["latency"][one]["p50_ms"]
            low, high = row["interval"]
            axis.errorbar(
                x,
                row["score"],
                yerr=[[row["score"] - low], [high - row["score"]]],
                fmt=markers[form],
                color=colours[model],
                markersize=9 if form == "ONNX int8" else 6,
                capsize=2,
                alpha=0.85,
            )
            axis.annotate(form, (x, row["score"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel(f"batch-1 latency, p50 ({one} thread), ms (log)")
        axis.set_ylabel(task["metric"])
        axis.set_title(task["title"])
        axis.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], color=colour, marker="o", linestyle="", label=model)
        for model, colour in colours.items()
    ]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
