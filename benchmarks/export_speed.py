"""Speed and size of `llmkit export`'s formats against the PyTorch model, side by side on this CPU (issue
target: ONNX int8 at least 2.5x the batch-1 speed of PyTorch fp32, at most 30 % of its size).

    python benchmarks/export_speed.py               # MiniLM-L6, 300 batch-1 calls per format and thread count
    python benchmarks/export_speed.py --calls 50    # a quick check that it runs

A MiniLM-L6 classifier is fine-tuned on the shipped sentiment sample (recipes/classification.yaml as it is:
4 epochs, 100 steps; ``--train-steps`` fewer, the point being speed and size), then exported with `llmkit
export` as ONNX fp32, ONNX int8 and PyTorch int8. Each of the four (PyTorch fp32 being the run itself) is
measured on the sample's 120 validation sentences, tokenized beforehand (the tokenizer is the same for all
four, so only the model call is timed):

* size on disk of the weights file;
* batch-1 latency, p50 and p95 over ``--calls`` calls, with 1 and with 2 threads (torch.set_num_threads /
  onnxruntime's intra-op threads), the four formats taking turns in rounds so a noisy neighbour on the shared
  cores hits them alike;
* throughput at batch 32 (rows per second over the 120 sentences, best of 3 passes, with 1 and 2 threads;
  batches padded to their longest row);
* agreement: the share of the 120 sentences whose predicted label is the PyTorch fp32 model's, and
  accuracy: the share whose label is the gold one.

Prints a Markdown table and writes benchmarks/results/export_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-export"
SAMPLE = REPO / "llmkit" / "samples" / "sentiment" / "validation.csv"
FORMATS = {  # name -> (--format, --quantize); PyTorch fp32 is the run folder itself
    "ONNX fp32": ("onnx", None),
    "ONNX int8": ("onnx", "int8"),
    "PyTorch int8": ("torch", "int8"),
}
ORDER = ("PyTorch fp32", "PyTorch int8", "ONNX fp32", "ONNX int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="batch-1 calls per format and thread count")
    parser.add_argument("--train-steps", type=int, help="default: the recipe's 4 epochs (100 steps)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--run", help="measure this classification run folder instead of training one")
    options = parser.parse_args()

    import torch

    run = Path(options.run) if options.run else train(options.train_steps)
    folders = {"PyTorch fp32": run, **{name: export_to(run, name, *how) for name, how in FORMATS.items()}}
    texts = [row["text"] for row in csv.DictReader(SAMPLE.open(encoding="utf-8"))]
    load_before = os.getloadavg()

    sizes = {name: weights_bytes(folder) for name, folder in folders.items()}
    latency: dict[str, dict[str, dict[str, float]]] = {name: {} for name in ORDER}
    for threads in options.threads:
        torch.set_num_threads(threads)
        runners = {name: runner(name, folders[name], threads) for name in ORDER}
        single = [encode(run, [text]) for text in texts]
        times = {name: [] for name in ORDER}
        for name in ORDER:  # warm up
            for inputs in single[:20]:
                runners[name](inputs)
        per_round = 20
        for start in range(0, options.calls, per_round):
            for name in ORDER:
                for i in range(start, min(start + per_round, options.calls)):
                    inputs = single[i % len(single)]
                    began = time.perf_counter()
                    runners[name](inputs)
                    times[name].append(time.perf_counter() - began)
        for name in ORDER:
            latency[name][f"{threads}"] = {
                "p50_ms": round(percentile(times[name], 50) * 1000, 3),
                "p95_ms": round(percentile(times[name], 95) * 1000, 3),
            }

    gold = [row["label"] for row in csv.DictReader(SAMPLE.open(encoding="utf-8"))]
    batches = [encode(run, texts[i : i + 32]) for i in range(0, len(texts), 32)]
    throughput: dict[str, dict[str, float]] = {name: {} for name in ORDER}
    labels = {}
    for threads in options.threads:
        torch.set_num_threads(threads)
        runners = {name: runner(name, folders[name], threads) for name in ORDER}
        for name in ORDER:
            runners[name](batches[0])  # warm up
            best = float("inf")
            for _ in range(3):  # best of 3 passes: a neighbour's burst on the shared cores hits one pass
                began = time.perf_counter()
                predicted = [runners[name](batch).argmax(-1) for batch in batches]
                best = min(best, time.perf_counter() - began)
            throughput[name][f"{threads}"] = round(len(texts) / best, 1)
            labels[name] = [int(label) for part in predicted for label in part]
    id2label = json.loads((run / "config.json").read_text())["id2label"]

    base = "PyTorch fp32"
    one = str(min(options.threads))
    rows = []
    for name in ORDER:
        rows.append(
            {
                "format": name,
                "bytes": sizes[name],
                "size_share": round(sizes[name] / sizes[base], 3),
                "latency": latency[name],
                "speedup_batch1": round(latency[base][one]["p50_ms"] / latency[name][one]["p50_ms"], 2),
                "batch32_rows_per_second": throughput[name],
                "agreement": share(labels[name], labels[base]),
                "accuracy": share([id2label[str(label)] for label in labels[name]], gold),
            }
        )
    result = {
        "model": "minilm-l6 (all-MiniLM-L6-v2) sequence classifier, 2 labels",
        "run": str(run),
        "sentences": len(texts),
        "mean_tokens": round(statistics.mean(len(b["input_ids"][0]) for b in single), 1),
        "calls": options.calls,
        "run_eval_accuracy": TRAINED.get("eval_accuracy"),
        "threads": options.threads,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "onnxruntime": version("onnxruntime"),
        # other jobs share the cores: the 1/5/15-minute load averages before and after the measurements
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "rows": rows,
        "target": "ONNX int8: >= 2.5x PyTorch fp32's batch-1 speed (p50, 1 thread), <= 30 % of its size",
    }
    onnx_int8 = next(row for row in rows if row["format"] == "ONNX int8")
    result["target_met"] = onnx_int8["speedup_batch1"] >= 2.5 and onnx_int8["size_share"] <= 0.30
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (RESULTS / "export_speed.md").write_text(table)
    print(table)


def train(steps: int | None) -> Path:
    import llmkit

    output = WORK / "run"
    limit = [f"training.max_steps={steps}"] if steps else []
    result = llmkit.finetune(None, [*limit, f"output_dir={output}", "overwrite=true"])
    TRAINED["eval_accuracy"] = result.metrics.get("eval_accuracy")
    return output


TRAINED: dict[str, float | None] = {}


def export_to(run: Path, name: str, format: str, quantize: str | None) -> Path:
    from llmkit.inference.export import export

    folder = WORK / name.lower().replace(" ", "-")
    return export(run, folder, format, quantize, overwrite=True)


def weights_bytes(folder: Path) -> int:
    from llmkit.models.exported import is_exported_folder, read_export

    if is_exported_folder(folder):
        return (folder / read_export(folder)["file"]).stat().st_size
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


_TOKENIZERS: dict[Path, object] = {}


def encode(run: Path, texts: list[str]) -> dict:
    from transformers import AutoTokenizer

    tokenizer = _TOKENIZERS.setdefault(run, AutoTokenizer.from_pretrained(run))
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt"))


def runner(name: str, folder: Path, threads: int):
    """``inputs -> logits`` (a torch tensor) for one format, with ``threads`` threads."""
    import numpy as np
    import torch

    from llmkit.inference.predict import task_for_model
    from llmkit.models.exported import load_exported, onnx_session, read_export
    from llmkit.models.resolve import load_model

    task = task_for_model(folder)
    if name.startswith("ONNX"):  # the session itself: the engine, without the torch <-> numpy wrapper
        session = onnx_session(folder / read_export(folder)["file"], threads)
        names = [item.name for item in session.get_inputs()]

        def run_onnx(inputs: dict) -> torch.Tensor:
            feed = {key: inputs[key].numpy().astype(np.int64) for key in names}
            return torch.from_numpy(session.run(["logits"], feed)[0])

        return run_onnx
    model = load_exported(task, folder) if name == "PyTorch int8" else load_model(task, folder).eval()

    def run_torch(inputs: dict) -> torch.Tensor:
        with torch.inference_mode():
            return model(**inputs).logits

    return run_torch


def share(mine: list, theirs: list) -> float:
    return round(sum(a == b for a, b in zip(mine, theirs, strict=True)) / len(theirs), 4)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share / 100 * (len(ordered) - 1)))]


def version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def markdown(result: dict) -> str:
    threads = result["threads"]
    header = ["format", "size", "vs fp32"]
    for count in threads:
        header += [f"batch-1 p50 ({count}t)", f"p95 ({count}t)"]
    header += ["speed-up (batch 1, 1t)"]
    header += [f"batch 32 ({count}t)" for count in threads]
    header += ["agreement", "accuracy"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["format"], f"{row['bytes'] / 1e6:.1f} MB", f"{row['size_share']:.0%}"]
        for count in threads:
            numbers = row["latency"][str(count)]
            cells += [f"{numbers['p50_ms']:.2f} ms", f"{numbers['p95_ms']:.2f} ms"]
        cells.append(f"{row['speedup_batch1']:.2f}x")
        cells += [f"{row['batch32_rows_per_second'][str(count)]:.0f} rows/s" for count in threads]
        cells += [f"{row['agreement']:.1%}", f"{row['accuracy']:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{result['model']}; {result['sentences']} sentences of the sentiment sample (mean "
        f"{result['mean_tokens']} tokens), {result['calls']} batch-1 calls per row and thread count; "
        f"{result['cpu']} ({result['cpu_count']} cores, shared; load average "
        f"{result['load_average_before'][0]} before, {result['load_average_after'][0]} after); torch "
        f"{result['torch']}, onnxruntime {result['onnxruntime']}. Target ({result['target']}): "
        f"{'met' if result['target_met'] else 'not met'}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
