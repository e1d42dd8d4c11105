"""The few-shot ladder on SST-2 (issue 34): zero-shot SmolLM2, plain fine-tuning of MiniLM-L6 and SetFit on
the same N labelled sentences per class, side by side on the 872 validation sentences, in one run.

    python benchmarks/ladder.py                        # 8, 16, 64 shots; 3 samples of the 8 and 16 shots
    python benchmarks/ladder.py --shots 8 --samples 8=1 --rows 100 --calls 20 --no-zero-shot   # a smoke run
    python benchmarks/ladder.py --full-run runs/evaluate-real/sst2-minilm   # the all-rows rung, made before
    python benchmarks/ladder.py --full --lora          # train the two slow rungs here too (off by default)

The rungs, each a plain ``llmkit`` command in a child process (printed as it runs; the shared SST-2 files of
the recipes' ``# shared data:`` line, no validation pass during training: ``llmkit evaluate`` scores them all
afterwards):

* **zero-shot**: ``llmkit evaluate smollm2-135m task=classification`` with the verbaliser
  ``{negative: [" negative"], positive: [" positive"]}`` and the prompt ``Review: {text}\\nSentiment:``
  (docs/tasks/classification.md, fixed before any prompt was scored there). Nothing is trained.
* for each N of ``--shots`` and each shot sample (``data.shots_seed`` 42, 43, ...; ``--samples N=K`` takes K
  samples of N, one otherwise), on the same 2N rows:

  - **SetFit**: ``recipes/sst2-setfit.yaml`` as written (SetFit's defaults: 20 iterations, 2e-5, 16 pairs a
    step, one epoch: 5N steps) with ``data.shots=N``;
  - **fine-tune, same steps**: ``recipes/sst2-minilm.yaml`` with ``data.shots=N`` and
    ``training.max_steps`` = SetFit's steps (its batch of 32 sentences is a SetFit step's 16 pairs): the
    recipe's learning rate and schedule, the same number of optimizer steps over the same rows;
  - **fine-tune, one epoch**: ``recipes/sst2-minilm.yaml`` as written with ``data.shots=N`` (its one epoch:
    ``ceil(2N / 32)`` steps), the command a user would run first.

* **all rows** (``--full``: trained here, one epoch over 67,349 rows, about 8 minutes on one thread; or
  ``--full-run RUN``: a run of ``recipes/sst2-minilm.yaml`` made before) and **SmolLM2 + LoRA**
  (``--lora``: ``recipes/sst2-minilm.yaml`` with ``model=smollm2-135m peft.method=lora``, the first 16-shot
  sample, SetFit's steps): off by default, slow on a shared CPU.

Scores: one ``llmkit evaluate`` of every trained run on dev.tsv (accuracy and its 95 % bootstrap interval),
one of the zero-shot rung; from the rows' predictions, a paired bootstrap of SetFit's difference to each
fine-tuning on the same rows. Speed: each run's training seconds (``train_runtime``: SetFit's both stages),
the weights' size on disk, and batch-1 latency (p50/p95 over ``--calls`` dev sentences, ``--threads``
threads, the models taking turns in rounds of 20 calls). Writes benchmarks/results/ladder.{json,md} and
ladder.png (accuracy against shots).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from evaluate_real import llmkit, relative, shared_data  # this folder is first on sys.path
from export_speed import cpu_name, percentile, version

from llmkit.inference.evaluate import paired_p_value

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEV = SHARED / "sst2" / "dev.tsv"
WORK = REPO / "runs" / "ladder"
RESULTS = REPO / "benchmarks" / "results"
FINETUNE_RECIPE = "recipes/sst2-minilm.yaml"
SETFIT_RECIPE = "recipes/sst2-setfit.yaml"
#: The runs are scored by `llmkit evaluate` afterwards: no validation pass during training.
NO_VALIDATION = ["data.validation=null", "data.validation_split=0"]
ZERO_SHOT = [
    "task=classification",
    "data.text=sentence",
    'data.verbalizer={negative: [" negative"], positive: [" positive"]}',
    "data.prompt=Review: {text}\\nSentiment:",
]
FIRST_SEED = 42  # data.shots_seed's default
PER_ROUND = 20
#: Issue 34's target for SetFit on 16 rows per class.
TARGET = {"shots": 16, "accuracy": 0.80, "points_above_finetuning": 10.0}


def main() -> None:
    options = arguments()
    if not DEV.is_file():
        sys.exit(f"no shared data at {SHARED}: this benchmark trains and scores on SST-2")
    WORK.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()
    log: list[dict] = []
    rungs = train_rungs(options, log)
    scores = evaluate_rungs(rungs, options, log)
    for rung in rungs:
        rung.update(scores[rung["name"]])
    comparisons = paired_comparisons(rungs, options.resamples)
    latency = time_models(rungs, options)
    result = {
        "rungs": rungs,
        "comparisons": comparisons,
        "latency": latency,
        "target": target_check(rungs, comparisons),
        "rows": options.rows or 872,
        "resamples": options.resamples,
        "calls": options.calls,
        "threads": options.threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": version("torch"),
        "sentence_transformers": version("sentence-transformers"),
        # other jobs share the cores: the 1/5/15-minute load averages before and after
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "seconds": round(time.perf_counter() - started),
        "command": "python benchmarks/ladder.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        "steps": log,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ladder.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown(result)
    (RESULTS / "ladder.md").write_text(table, encoding="utf-8")
    plot(result, RESULTS / "ladder.png")
    print(table)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 16, 64], help="rows per class")
    parser.add_argument(
        "--samples",
        nargs="*",
        default=["8=3", "16=3"],
        metavar="N=K",
        help="K shot samples (data.shots_seed 42, 43, ...) for N shots; one for the others",
    )
    parser.add_argument("--no-zero-shot", action="store_true", help="leave out the zero-shot SmolLM2 rung")
    parser.add_argument("--full", action="store_true", help="train MiniLM on all 67,349 rows here (slow)")
    parser.add_argument("--full-run", help="a run of recipes/sst2-minilm.yaml on all rows, made before")
    parser.add_argument("--lora", action="store_true", help="add SmolLM2-135M + LoRA on the first 16 shots")
    parser.add_argument("--rows", type=int, help="validation rows scored (default: all 872)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200, help="batch-1 calls per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the latency timing")
    parser.add_argument("--reuse-runs", action="store_true", help="keep runs an earlier call finished")
    options = parser.parse_args()
    options.sample_counts = {int(n): int(k) for n, k in (item.split("=") for item in options.samples)}
    return options


# -- training -----------------------------------------------------------------------------------------------
def train_rungs(options: argparse.Namespace, log: list[dict]) -> list[dict]:
    """Every trained rung's run folder, in the order of the tables: per shots and sample, SetFit and the two
    fine-tunings; then the optional all-rows and LoRA rungs."""
    setfit = yaml.safe_load((REPO / SETFIT_RECIPE).read_text(encoding="utf-8"))
    rungs: list[dict] = []
    for shots in options.shots:
        steps = setfit_steps(setfit, shots)
        for sample in range(options.sample_counts.get(shots, 1)):
            seed = FIRST_SEED + sample
            rows = [f"data.shots={shots}", f"data.shots_seed={seed}"]
            plans = [
                ("setfit", SETFIT_RECIPE, rows),
                ("finetune-same-steps", FINETUNE_RECIPE, [*rows, f"training.max_steps={steps}"]),
                ("finetune-one-epoch", FINETUNE_RECIPE, rows),
            ]
            for method, recipe, overrides in plans:
                name = f"{method}-{shots}-seed{seed}"
                run = finetune(WORK / name, recipe, overrides, log, options.reuse_runs)
                rungs.append(rung(name, method, run, shots, seed))
    if options.lora:
        shots, steps = TARGET["shots"], setfit_steps(setfit, TARGET["shots"])
        overrides = ["model=smollm2-135m", "peft.method=lora", f"data.shots={shots}"]
        overrides += [f"data.shots_seed={FIRST_SEED}", f"training.max_steps={steps}"]
        name = f"smollm2-lora-{shots}-seed{FIRST_SEED}"
        run = finetune(WORK / name, FINETUNE_RECIPE, overrides, log, options.reuse_runs)
        rungs.append(rung(name, "smollm2-lora", run, shots, FIRST_SEED))
    if options.full or options.full_run:
        run = (
            finetune(WORK / "finetune-all-rows", FINETUNE_RECIPE, [], log, options.reuse_runs)
            if options.full
            else (REPO / options.full_run).resolve()
        )
        rungs.append(rung("finetune-all-rows", "finetune-all-rows", run, None, None))
    return rungs


def setfit_steps(recipe: dict, shots: int) -> int:
    """SetFit's optimizer steps on 2N rows: 2 x iterations pairs a row, a batch of pairs a step."""
    pairs = 2 * recipe["setfit"]["iterations"] * 2 * shots
    per_epoch = math.ceil(pairs / recipe["training"]["per_device_train_batch_size"])
    return per_epoch * recipe["training"]["num_train_epochs"]


def finetune(run: Path, recipe: str, overrides: list[str], log: list[dict], reuse: bool) -> Path:
    """``llmkit finetune RECIPE`` on the shared SST-2 files into ``run`` (``reuse``: a finished run stays)."""
    command = ["finetune", recipe, *shared_data(REPO / recipe), *NO_VALIDATION, *overrides]
    command += [f"output_dir={run}", "--overwrite"]
    if reuse and (run / "metrics.json").exists():
        log.append(
            {"command": "llmkit " + " ".join(shlex.quote(relative(a)) for a in command), "seconds": "reused"}
        )
    else:
        llmkit(command, log)
    return run


def rung(name: str, method: str, run: Path, shots: int | None, seed: int | None) -> dict:
    """A trained rung as the tables show it: what it is, its run, the steps it took, its seconds and size."""
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    return {
        "name": name,
        "method": method,
        "shots": shots,
        "shots_seed": seed,
        "run": relative(str(run)),
        "steps": run_steps(run),
        "train_seconds": round(metrics["train_runtime"], 1),
        "bytes": weights_bytes(run),
    }


def run_steps(run: Path) -> int:
    """The optimizer steps a run took (its log's last step)."""
    history = json.loads((run / "log_history.json").read_text(encoding="utf-8"))
    return max(entry.get("step", 0) for entry in history)


def weights_bytes(folder: Path) -> int:
    """The weights on disk: every safetensors file of the folder (SetFit: the body and its head; a LoRA run:
    its adapter and the base model it needs)."""
    found = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    adapter = folder / "adapter_config.json"
    if adapter.exists():
        base = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
        found += weights_bytes(Path(base))
    return found


# -- scores -------------------------------------------------------------------------------------------------
def evaluate_rungs(rungs: list[dict], options: argparse.Namespace, log: list[dict]) -> dict[str, dict]:
    """Accuracy and its interval of every rung: the trained runs in one ``llmkit evaluate``, the zero-shot
    rung in another (its overrides make the causal LM a classifier); the zero-shot rung joins ``rungs``."""
    trained = evaluate([REPO / rung["run"] for rung in rungs], [], WORK / "evaluation", options, log)
    scores = {rung["name"]: score for rung, score in zip(rungs, trained, strict=True)}
    if not options.no_zero_shot:
        (score,) = evaluate(["smollm2-135m"], ZERO_SHOT, WORK / "evaluation-zero-shot", options, log)
        folder = resolved("smollm2-135m")
        rungs.insert(
            0,
            {
                "name": "zero-shot",
                "method": "zero-shot",
                "shots": 0,
                "shots_seed": None,
                "run": "smollm2-135m",
                "steps": 0,
                "train_seconds": 0.0,
                "bytes": weights_bytes(folder),
            },
        )
        scores["zero-shot"] = score
    return scores


def evaluate(
    models: list, overrides: list[str], output: Path, options: argparse.Namespace, log: list[dict]
) -> list[dict]:
    if output.exists():
        shutil.rmtree(output)  # this benchmark's own earlier scores
    command = ["evaluate", *map(str, models), "--data", str(DEV), "--resamples", str(options.resamples)]
    command += ["--output", str(output), *overrides]
    command += ["--max-samples", str(options.rows)] if options.rows else []
    llmkit(command, log)
    report = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))
    return [
        {
            "accuracy": round(record["metrics"]["eval_accuracy"], 4),
            "interval": [round(value, 4) for value in record["intervals"]["eval_accuracy"]],
            "predictions": relative(str(output / record["predictions"])),
        }
        for record in report["models"]
    ]


def paired_comparisons(rungs: list[dict], resamples: int) -> list[dict]:
    """SetFit minus each fine-tuning on the same rows (shots and sample): the accuracy difference, its 95 %
    interval and p-value from a paired bootstrap (the same resampled validation rows for both)."""
    by_name = {rung["name"]: rung for rung in rungs}
    found = []
    for setfit in (rung for rung in rungs if rung["method"] == "setfit"):
        correct = correctness(REPO / setfit["predictions"])
        draws = np.random.default_rng(0).integers(0, len(correct), size=(resamples, len(correct)))
        for method in ("finetune-same-steps", "finetune-one-epoch"):
            other = by_name[setfit["name"].replace("setfit", method, 1)]
            baseline = correctness(REPO / other["predictions"])
            difference = correct[draws].mean(axis=1) - baseline[draws].mean(axis=1)
            found.append(
                {
                    "shots": setfit["shots"],
                    "shots_seed": setfit["shots_seed"],
                    "against": method,
                    "difference": round(float(correct.mean() - baseline.mean()), 4),
                    "interval": [round(float(v), 4) for v in np.percentile(difference, [2.5, 97.5])],
                    "p_value": round(paired_p_value(difference), 4),
                }
            )
    return found


def correctness(predictions: Path) -> np.ndarray:
    """1 where a row's predicted label is its gold label (dev.tsv's 0/1 are negative, positive)."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    names = ["negative", "positive"]
    gold = [names[int(row["label"])] if str(row["label"]).isdigit() else row["label"] for row in rows]
    return np.array([row["predicted_label"] == label for row, label in zip(rows, gold, strict=True)], float)


def target_check(rungs: list[dict], comparisons: list[dict]) -> dict:
    """Issue 34's target on each 16-shot sample and on their mean: SetFit's accuracy and its lead over the
    same-steps fine-tuning (the stronger of the two baselines here, in points)."""
    shots = TARGET["shots"]
    setfit = {
        r["shots_seed"]: r["accuracy"] for r in rungs if r["method"] == "setfit" and r["shots"] == shots
    }
    lead = {
        c["shots_seed"]: 100 * c["difference"]
        for c in comparisons
        if c["shots"] == shots and c["against"] == "finetune-same-steps"
    }
    if not setfit:
        return {}
    samples = [
        {
            "shots_seed": seed,
            "accuracy": accuracy,
            "points_above_finetuning": round(lead[seed], 1),
            "met": accuracy >= TARGET["accuracy"] and lead[seed] >= TARGET["points_above_finetuning"],
        }
        for seed, accuracy in setfit.items()
    ]
    mean_accuracy = float(np.mean(list(setfit.values())))
    mean_lead = float(np.mean(list(lead.values())))
    return {
        **TARGET,
        "samples": samples,
        "mean_accuracy": round(mean_accuracy, 4),
        "mean_points_above_finetuning": round(mean_lead, 1),
        "met_on_mean": mean_accuracy >= TARGET["accuracy"] and mean_lead >= TARGET["points_above_finetuning"],
    }


# -- speed --------------------------------------------------------------------------------------------------
def time_models(rungs: list[dict], options: argparse.Namespace) -> dict[str, dict]:
    """Batch-1 latency of one model of each method (the runs of a method share an architecture), on the dev
    sentences as the task encodes them, the models taking turns in rounds."""
    import torch

    torch.set_num_threads(options.threads)
    texts = [line.split("\t")[0] for line in DEV.read_text(encoding="utf-8").splitlines()[1:]]
    texts = (texts * math.ceil(options.calls / len(texts)))[: options.calls]
    chosen: dict[str, dict] = {}
    for rung in rungs:
        chosen.setdefault(rung["method"], rung)
    callers = {
        method: caller(rung["run"], ZERO_SHOT if method == "zero-shot" else [], texts)
        for method, rung in chosen.items()
    }
    times: dict[str, list[float]] = {method: [] for method in callers}
    for call in callers.values():  # warm up
        call(0)
    for start in range(0, len(texts), PER_ROUND):
        for method, call in callers.items():
            for index in range(start, min(start + PER_ROUND, len(texts))):
                began = time.perf_counter()
                call(index)
                times[method].append(time.perf_counter() - began)
    return {
        method: {
            "model": chosen[method]["run"],
            "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p95_ms": round(percentile(values, 95) * 1000, 2),
        }
        for method, values in times.items()
    }


def caller(model: str, overrides: list[str], texts: list[str]):
    """``index -> logits`` for one model: the text encoded beforehand as ``llmkit predict`` encodes it (the
    zero-shot prompt included), the model loaded as predict loads it."""
    import datasets
    import torch

    from llmkit.inference.predict import task_for_model
    from llmkit.models.resolve import check_weights, load_for_inference, load_tokenizer

    folder = resolved(model)
    task = task_for_model(folder, overrides)
    tokenizer = load_tokenizer(folder)
    loaded = load_for_inference(task, folder, **check_weights(folder))
    column = task.data["text"]
    datasets.disable_progress_bars()
    encoded = task.encode(datasets.Dataset.from_dict({column: texts}), tokenizer)
    inputs = [
        {key: torch.tensor([row[key]]) for key in ("input_ids", "attention_mask") if key in row}
        for row in encoded
    ]

    def call(index: int):
        with torch.inference_mode():
            return loaded(**inputs[index]).logits

    return call


def resolved(model: str) -> Path:
    from llmkit.models.resolve import resolve_model

    path = REPO / model
    return path if path.is_dir() else Path(resolve_model(model))


# -- the report ---------------------------------------------------------------------------------------------
LABELS = {
    "zero-shot": "zero-shot SmolLM2-135M (prompt)",
    "setfit": "SetFit (MiniLM-L6)",
    "finetune-same-steps": "fine-tune MiniLM-L6, SetFit's steps",
    "finetune-one-epoch": "fine-tune MiniLM-L6, one epoch (recipe)",
    "smollm2-lora": "SmolLM2-135M + LoRA, SetFit's steps",
    "finetune-all-rows": "fine-tune MiniLM-L6 on all 67,349 rows (recipe)",
}


def markdown(result: dict) -> str:
    latency = result["latency"]
    lines = [
        "| rung | shots per class | sample (shots_seed) | steps | accuracy [95 % CI] | training | size | "
        "batch-1 p50 / p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rung in result["rungs"]:
        low, high = rung["interval"]
        speed = latency.get(rung["method"], {})
        timed = f"{speed['p50_ms']:.1f} / {speed['p95_ms']:.1f} ms" if speed else "—"
        trained = f"{rung['train_seconds']:.0f} s" if rung["train_seconds"] else "—"
        lines.append(
            f"| {LABELS[rung['method']]} | {rung['shots'] if rung['shots'] is not None else 'all'} | "
            f"{rung['shots_seed'] if rung['shots_seed'] is not None else '—'} | {rung['steps']} | "
            f"{rung['accuracy']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{trained} | "
            f"{rung['bytes'] / 1e6:.0f} MB | {timed} |"
        )
    lines += [
        "",
        "SetFit minus fine-tuning on the same rows (paired bootstrap over the validation rows):",
        "",
    ]
    lines += ["| shots | sample | against | difference [95 % CI] | p |", "|---|---|---|---|---|"]
    for item in result["comparisons"]:
        low, high = item["interval"]
        lines.append(
            f"| {item['shots']} | {item['shots_seed']} | {LABELS[item['against']]} | "
            f"{item['difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {item['p_value']:.3f} |"
        )
    lines += ["", *target_lines(result["target"]), ""]
    if "--full-run" in result["command"]:
        lines += [
            "The all-rows run was trained before this one (`--full-run`): its seconds are its own run's.",
            "",
        ]
    lines += [
        f"SST-2 validation, {result['rows']} sentences; {result['resamples']} bootstrap resamples. Latency: "
        f"{result['calls']} batch-1 calls per model, {result['threads']} thread(s), one run of each method "
        f"(the others share its architecture). Training with OMP_NUM_THREADS={result['omp_num_threads']}; "
        f"{result['cpu']} ({result['cpu_count']} cores, shared with other jobs: load average "
        f"{result['load_average_before'][0]} before, {result['load_average_after'][0]} after, so the "
        f"seconds are slower than on an idle machine); torch {result['torch']}, sentence-transformers "
        f"{result['sentence_transformers']}; {result['seconds']} s in all.",
        "",
        f"Command: `{result['command'].strip()}`",
        "",
    ]
    return "\n".join(lines)


def target_lines(target: dict) -> list[str]:
    if not target:
        return ["Issue 34's target (16 shots) not measured in this run."]
    lines = [
        f"Issue 34's target: SetFit with {target['shots']} rows per class >= {target['accuracy']:.2f} "
        f"accuracy and >= {target['points_above_finetuning']:.0f} points above fine-tuning on the same "
        f"rows (here: the same-steps fine-tuning, the stronger baseline):",
        "",
    ]
    for sample in target["samples"]:
        verdict = "met" if sample["met"] else "missed"
        lines.append(
            f"- sample {sample['shots_seed']}: {sample['accuracy']:.3f}, "
            f"{sample['points_above_finetuning']:+.1f} points: {verdict}"
        )
    verdict = "met" if target["met_on_mean"] else "missed"
    lines.append(
        f"- mean of the samples: {target['mean_accuracy']:.3f}, "
        f"{target['mean_points_above_finetuning']:+.1f} points: {verdict}"
    )
    return lines


def plot(result: dict, path: Path) -> None:
    """Accuracy (with its interval) against shots per class, a line per method through the samples' means;
    the zero-shot and all-rows rungs as horizontal references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 5.6))
    colours = {"setfit": "tab:green", "finetune-same-steps": "tab:orange", "finetune-one-epoch": "tab:red"}
    colours |= {"smollm2-lora": "tab:purple"}
    references = {"zero-shot": "tab:blue", "finetune-all-rows": "tab:gray"}
    rungs = result["rungs"]
    for method, colour in colours.items():
        points = [r for r in rungs if r["method"] == method]
        if not points:
            continue
        offset = {"finetune-same-steps": 0.97, "finetune-one-epoch": 1.03, "smollm2-lora": 1.06}.get(
            method, 1.0
        )
        for r in points:
            low, high = r["interval"]
            axis.errorbar(
                r["shots"] * offset,
                r["accuracy"],
                yerr=[[r["accuracy"] - low], [high - r["accuracy"]]],
                fmt="o",
                color=colour,
                markersize=5,
                capsize=2,
                alpha=0.7,
            )
        shots = sorted({r["shots"] for r in points})
        means = [np.mean([r["accuracy"] for r in points if r["shots"] == n]) for n in shots]
        axis.plot([n * offset for n in shots], means, color=colour, label=LABELS[method])
    for method, colour in references.items():
        for r in (r for r in rungs if r["method"] == method):
            axis.axhline(r["accuracy"], color=colour, linestyle="--", linewidth=1, label=LABELS[method])
    axis.axhline(
        TARGET["accuracy"], color="black", linestyle=":", linewidth=1, label="target (16 shots): 0.80"
    )
    axis.set_xscale("log", base=2)
    axis.set_xticks(sorted({r["shots"] for r in rungs if r["shots"]}))
    axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.set_xlabel("labelled sentences per class (log)")
    axis.set_ylabel("SST-2 validation accuracy")
    axis.set_title("The few-shot ladder on SST-2 (95 % intervals; lines: mean over shot samples)")
    axis.grid(alpha=0.3)
    figure.legend(*axis.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
