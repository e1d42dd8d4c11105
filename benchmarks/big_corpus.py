"""Big corpora: `llmkit validate` on a million-row CSV, and streaming's peak memory on 100 MB and 1 GB.

One command (from the repo root, ../shared/data beside it; about 6 minutes on 2 cores):

    python benchmarks/big_corpus.py
    python benchmarks/big_corpus.py --skip csv --sizes 100       # a part only

The corpora are written into a temporary folder and deleted afterwards (about 2.3 GB of disk meanwhile).
Every measurement runs in a fresh Python process, which reports its wall time and peak resident memory
(``getrusage``'s ``ru_maxrss``):

1. ``csv``: ``llmkit validate recipes/sst2-minilm.yaml`` on SST-2's ``train.tsv`` repeated 15 times as a CSV:
   1,010,235 rows, 58 MB, the file the issue measured (3 min 47 s and 1.1 GB before).
2. ``stream``: Brown (``brown.txt``, a sentence a line) and Tiny Shakespeare (``input.txt``) each repeated to
   100 MB and to 1 GB. For each size, with ``data.streaming: true``:
   - ``fill-mask``: ``recipes/fill-mask-brown.yaml`` on **tiny-bert** (the bundled test model: the point is
     the data's memory, not the model's), 30 steps, validation the first 200 lines;
   - ``generation``: ``recipes/generation-shakespeare.yaml`` on **tiny-gpt2**, 30 steps;
   - ``full pass``: every training text of the Brown stream read once, a 10,000-text reservoir sample kept
     (``llmkit.data.files.sample_texts(stream_texts(...))``, the path a tokenizer trainer takes).
   For 100 MB also ``llmkit validate`` of the fill-mask recipe without streaming: reading that corpus whole.

Writes benchmarks/results/big_corpus.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
SST2 = DATA / "sst2" / "train.tsv"
BROWN = DATA / "brown" / "brown.txt"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
SST2_COPIES = 15  # 67,349 rows x 15 = 1,010,235
MB = 1_000_000
STEPS = 30
SAMPLE_TEXTS = 10_000
#: The issue's measurement of the same validate before this work.
BEFORE = {"seconds": 227, "peak_rss_mb": 1100}


# -- the corpora ------------------------------------------------------------------------------------------
def write_sst2_csv(path: Path) -> int:
    """SST-2's training rows repeated as one CSV (sentence, label); returns the rows written."""
    import csv

    with SST2.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header, *rows = list(reader)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for _ in range(SST2_COPIES):
            writer.writerows(rows)
    return len(rows) * SST2_COPIES


def repeat_to_size(source: Path, path: Path, size: int) -> None:
    """``source`` written again and again (a blank line between copies) until ``path`` has ``size`` bytes."""
    text = source.read_bytes().rstrip(b"\n") + b"\n\n"
    with path.open("wb") as handle:
        written = 0
        while written < size:
            written += handle.write(text)


# -- one measurement, in a fresh process -------------------------------------------------------------------
def measure(kind: str, **arguments) -> dict:
    """Run ``child(kind, ...)`` in a new interpreter; its wall time and peak RSS."""
    command = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **arguments})]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{kind} {arguments.get('label', '')}: {result}", file=sys.stderr)
    return result


def child(kind: str, **arguments) -> None:
    """The measured work; prints one JSON line with wall seconds and peak RSS (MB)."""
    import resource

    began = time.perf_counter()
    extra = {}
    if kind == "validate":
        from llmkit.training.validate import validate

        extra["lines"] = validate(arguments["recipe"], arguments["overrides"])[:4]
    elif kind == "finetune":
        import llmkit

        result = llmkit.finetune(arguments["recipe"], arguments["overrides"], overwrite=True)
        extra["metrics"] = result.quality_metrics()
    elif kind == "full_pass":
        from llmkit.data.files import load_splits, sample_texts, stream_texts
        from llmkit.recipe.loader import load_recipe

        recipe = load_recipe(arguments["recipe"], arguments["overrides"])
        train = load_splits(recipe.data, seed=42)["train"]
        counted = [0]

        def counting(texts):
            for text in texts:
                counted[0] += 1
                yield text

        sample = sample_texts(counting(stream_texts(train)), SAMPLE_TEXTS, seed=42)
        extra.update({"texts_read": counted[0], "sampled": len(sample)})
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mb": round(peak), **extra}))


# -- the benchmark -------------------------------------------------------------------------------------------
def csv_validate(folder: Path) -> dict:
    path = folder / "sst2_x15.csv"
    rows = write_sst2_csv(path)
    result = measure("validate", recipe="sst2-minilm", overrides=[f"data.train={path}"], label="1M-row CSV")
    return {"rows": rows, "bytes": path.stat().st_size, **result}


def streaming(folder: Path, megabytes: int) -> dict:
    brown, shakespeare = folder / f"brown-{megabytes}mb.txt", folder / f"shakespeare-{megabytes}mb.txt"
    repeat_to_size(BROWN, brown, megabytes * MB)
    repeat_to_size(SHAKESPEARE, shakespeare, megabytes * MB)
    stream = ["data.streaming=true", f"training.max_steps={STEPS}", "data.max_eval_samples=200"]
    runs = {
        "fill-mask": measure(
            "finetune",
            recipe="fill-mask-brown",
            overrides=[f"data.train={brown}", "model=tiny-bert", f"output_dir={folder / 'fm'}", *stream],
            label=f"{megabytes} MB",
        ),
        "generation": measure(
            "finetune",
            recipe="generation-shakespeare",
            overrides=[
                f"data.train={shakespeare}",
                "model=tiny-gpt2",
                f"output_dir={folder / 'gen'}",
                *stream,
            ],
            label=f"{megabytes} MB",
        ),
        "full pass": measure(
            "full_pass",
            recipe="fill-mask-brown",
            overrides=[f"data.train={brown}", "model=tiny-bert", *stream],
            label=f"{megabytes} MB",
        ),
    }
    if megabytes <= 100:
        runs["not streamed: validate"] = measure(
            "validate",
            recipe="fill-mask-brown",
            overrides=[f"data.train={brown}", "model=tiny-bert", "data.max_eval_samples=200"],
            label=f"{megabytes} MB",
        )
    for path in (brown, shakespeare):
        path.unlink()
    return {"brown_bytes": megabytes * MB, **runs}


def write_results(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "big_corpus.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = [f"{results['machine']}; `{results['command']}`", ""]
    if "csv" in results:
        csv = results["csv"]
        lines += [
            f"`llmkit validate` of SST-2 x {SST2_COPIES} ({csv['rows']:,} rows, {csv['bytes'] / MB:.0f} MB)",
            "",
            "| | wall | peak RSS |",
            "|---|---|---|",
            f"| before (the issue) | {BEFORE['seconds']} s | {BEFORE['peak_rss_mb']} MB |",
            f"| now | {csv['seconds']} s | {csv['peak_rss_mb']} MB |",
            "",
        ]
    sizes = results.get("streaming", {})
    if sizes:
        labels = list(sizes)
        lines += [
            "| streamed (`data.streaming: true`) | "
            + " | ".join(f"{label}: wall, peak RSS" for label in labels)
            + " | RSS ratio |",
            "|---|" + "---|" * (len(labels) + 1),
        ]
        kinds = dict.fromkeys(kind for size in sizes.values() for kind in size if kind != "brown_bytes")
        for kind in kinds:
            cells = [
                f"{size[kind]['seconds']} s, {size[kind]['peak_rss_mb']} MB" if kind in size else "–"
                for size in sizes.values()
            ]
            peaks = [size[kind]["peak_rss_mb"] for size in sizes.values() if kind in size]
            ratio = f"{peaks[-1] / peaks[0]:.2f}" if len(peaks) > 1 else "–"
            lines.append(f"| {kind} | " + " | ".join(cells) + f" | {ratio} |")
    (RESULTS / "big_corpus.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[], choices=["csv", "stream"])
    parser.add_argument("--sizes", default="100,1000", help="streamed corpus sizes in MB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(**json.loads(options.child))
        return
    results: dict = {
        "command": " ".join(["python", "benchmarks/big_corpus.py", *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    with tempfile.TemporaryDirectory(prefix="llmkit-big-corpus-") as folder:
        if "csv" not in options.skip:
            results["csv"] = csv_validate(Path(folder))
        if "stream" not in options.skip:
            results["streaming"] = {
                f"{size} MB": streaming(Path(folder), int(size)) for size in options.sizes.split(",")
            }
    write_results(results)


if __name__ == "__main__":
    main()
