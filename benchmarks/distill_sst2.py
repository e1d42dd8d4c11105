"""Knowledge distillation on SST-2: a MiniLM-L6 teacher, and a student of its layers 0, 2 and 4 trained with
and without the teacher, the same steps and seed; SST-2 validation accuracy of all three with 95 % intervals.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/distill_sst2.py                              # trains the teacher too (the recipe)
    python benchmarks/distill_sst2.py --teacher runs/sst2-minilm   # a teacher trained earlier (an llmkit run)
    python benchmarks/distill_sst2.py --steps 20 --teacher-steps 20 --rows 200   # a smoke run

* **Teacher**: ``--teacher RUN``, or ``recipes/sst2-minilm.yaml`` on the shared SST-2 files (one epoch, 2,105
  steps of 32, unless ``--teacher-steps``), into runs/distill-sst2/teacher.
* **Students**: ``model: {init_from: TEACHER, layers: [0, 2, 4]}`` (``--layers``): the teacher's embeddings,
  three of its six layers and its classifier head, trained by the same recipe (its learning rate, batch,
  seed and schedule; one epoch unless ``--steps``): (a) with ``distill: {teacher: TEACHER, alpha,
  temperature}`` (``--alpha``, ``--temperature``), (b) on the labels alone.
* **Scores**: ``llmkit evaluate TEACHER DISTILLED BASELINE --data dev.tsv`` (872 sentences, or the first
  ``--rows``): accuracy with its 95 % bootstrap interval for each, then, from the rows' predictions, a paired
  bootstrap (the same resampled rows for every model) of each student's accuracy as a share of the teacher's
  and of the distilled student's difference to the baseline, with its p-value.

Each run is a plain ``llmkit finetune``/``llmkit evaluate`` command in a child process, printed as it runs.
Writes benchmarks/results/distill_sst2{--tag}.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from evaluate_real import llmkit, relative  # this folder is first on sys.path

from llmkit.inference.evaluate import paired_p_value

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WORK = REPO / "runs" / "distill-sst2"
RESULTS = REPO / "benchmarks" / "results"
RECIPE = "recipes/sst2-minilm.yaml"
#: The students are scored by `llmkit evaluate` afterwards: no validation pass during training.
NO_VALIDATION = ["data.validation=null", "data.validation_split=0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="a trained SST-2 run (default: train one with the recipe)")
    parser.add_argument("--steps", type=int, help="each student's training steps (default: one epoch)")
    parser.add_argument("--teacher-steps", type=int, help="the teacher's steps when trained here")
    parser.add_argument("--layers", default="0,2,4", help="the teacher's encoder layers the students keep")
    parser.add_argument("--alpha", type=float, default=0.5, help="distill.alpha: the teacher's share")
    parser.add_argument("--temperature", type=float, default=2.0, help="distill.temperature")
    parser.add_argument("--rows", type=int, help="validation rows scored (default: all 872)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--tag", default="", help="suffix of the results files and of the work folder")
    parser.add_argument(
        "--reuse-runs", action="store_true", help="keep the students an earlier run of this script trained"
    )
    options = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"no shared data at {SHARED}: this benchmark trains and scores on SST-2")
    work = WORK.with_name(WORK.name + options.tag)
    work.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    started = time.perf_counter()

    teacher = Path(options.teacher).resolve() if options.teacher else work / "teacher"
    if not options.teacher:
        steps = [f"training.max_steps={options.teacher_steps}"] if options.teacher_steps else []
        finetune(teacher, [*steps, *NO_VALIDATION], log)
    layers = [int(n) for n in options.layers.split(",")]
    student = [f"model.init_from={teacher}", f"model.layers={json.dumps(layers)}", *NO_VALIDATION]
    student += [f"training.max_steps={options.steps}"] if options.steps else []
    distilled, baseline = work / "student-distilled", work / "student-labels-only"
    teaching = [f"distill.teacher={teacher}", f"distill.alpha={options.alpha}"]
    reuse = options.reuse_runs
    finetune(distilled, [*student, *teaching, f"distill.temperature={options.temperature}"], log, reuse)
    finetune(baseline, student, log, reuse)

    scored = work / "evaluation"
    evaluation = evaluate([teacher, distilled, baseline], scored, options, log)
    summary = summarise(evaluation, scored, [teacher, distilled, baseline], options.resamples)
    summary["parameters"] = {
        "teacher": json.loads((distilled / "run_stats.json").read_text())["student"]["source_parameters"],
        "student": json.loads((distilled / "run_stats.json").read_text())["student"]["parameters"],
    }
    write_results(options, log, summary, time.perf_counter() - started)


# -- running llmkit -----------------------------------------------------------------------------------------
def finetune(run: Path, overrides: list[str], log: list[dict], reuse: bool = False) -> None:
    """``llmkit finetune`` of the SST-2 recipe on the shared files, into ``run`` (``reuse``: a finished run
    there is kept, and logged with the command that made it)."""
    command = ["finetune", RECIPE, *shared_data(), *overrides, f"output_dir={run}", "--overwrite"]
    if reuse and (run / "metrics.json").exists():
        shown = "llmkit " + " ".join(shlex.quote(relative(a)) for a in command)
        log.append({"command": shown, "seconds": "reused"})
    else:
        llmkit(command, log)
    log[-1]["train_runtime"] = json.loads((run / "metrics.json").read_text())["train_runtime"]


def evaluate(models: list[Path], output: Path, options: argparse.Namespace, log: list[dict]) -> dict:
    if output.exists():
        import shutil

        shutil.rmtree(output)  # this benchmark's own earlier output
    command = ["evaluate", *map(str, models), "--data", str(SHARED / "sst2" / "dev.tsv")]
    command += ["--resamples", str(options.resamples), "--output", str(output)]
    command += ["--max-samples", str(options.rows)] if options.rows else []
    llmkit(command, log)
    return json.loads((output / "evaluation.json").read_text(encoding="utf-8"))


def shared_data() -> list[str]:
    """The recipe's ``# shared data:`` overrides: its files in ../shared/data."""
    line = next(
        line
        for line in (REPO / RECIPE).read_text(encoding="utf-8").splitlines()
        if line.startswith("# shared")
    )
    return [item.replace("../shared/data", str(SHARED)) for item in line.split()[3:]]


# -- the numbers --------------------------------------------------------------------------------------------
def summarise(evaluation: dict, folder: Path, models: list[Path], resamples: int) -> dict:
    """Each model's accuracy and interval (evaluate's), and paired bootstraps over the same rows: each
    student's share of the teacher's accuracy, and the distilled student's difference to the baseline."""
    names = ["teacher", "distilled", "labels_only"]
    records = evaluation["models"]
    correct = {
        name: correctness(folder / record["predictions"]) for name, record in zip(names, records, strict=True)
    }
    rows = len(correct["teacher"])
    draws = np.random.default_rng(0).integers(0, rows, size=(resamples, rows))
    accuracy = {name: values[draws].mean(axis=1) for name, values in correct.items()}

    def interval(samples: np.ndarray) -> list[float]:
        return [round(float(v), 4) for v in np.percentile(samples, [2.5, 97.5])]

    summary: dict = {"rows": rows, "resamples": resamples, "models": {}}
    for name, record, model in zip(names, records, models, strict=True):
        summary["models"][name] = {
            "run": relative(str(model)),
            "accuracy": round(record["metrics"]["eval_accuracy"], 4),
            "interval": [round(v, 4) for v in record["intervals"]["eval_accuracy"]],
        }
    for name in ("distilled", "labels_only"):
        share = accuracy[name] / accuracy["teacher"]
        point = correct[name].mean() / correct["teacher"].mean()
        summary["models"][name]["share_of_teacher"] = round(float(point), 4)
        summary["models"][name]["share_interval"] = interval(share)
    difference = accuracy["distilled"] - accuracy["labels_only"]
    point = correct["distilled"].mean() - correct["labels_only"].mean()
    p_value = paired_p_value(difference)  # two-sided, as `llmkit evaluate` reports its differences
    summary["distilled_minus_labels_only"] = {
        "difference": round(float(point), 4),
        "interval": interval(difference),
        "p_value": round(p_value, 4),
    }
    return summary


def correctness(predictions: Path) -> np.ndarray:
    """1 where a row's predicted label is its gold label, in the file's order."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    names = ["negative", "positive"]
    gold = [names[int(row["label"])] if str(row["label"]).isdigit() else row["label"] for row in rows]
    return np.array([row["predicted_label"] == label for row, label in zip(rows, gold, strict=True)], float)


def write_results(options: argparse.Namespace, log: list[dict], summary: dict, seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"distill_sst2{options.tag}"
    settings = {
        "layers": options.layers,
        "alpha": options.alpha,
        "temperature": options.temperature,
        "student_steps": options.steps or "one epoch",
        "teacher": options.teacher or f"trained here ({options.teacher_steps or 'one epoch'} steps)",
    }
    payload = {"settings": settings, "seconds": round(seconds, 1), "summary": summary, "steps": log}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    machine = f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end"
    models = summary["models"]
    parameters = summary["parameters"]
    lines = [
        "# Distillation on SST-2 (benchmarks/distill_sst2.py)",
        "",
        "    python benchmarks/distill_sst2.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        "",
        f"Teacher MiniLM-L6 ({parameters['teacher'] / 1e6:.1f}M parameters); students: its layers "
        f"{options.layers} ({parameters['student'] / 1e6:.1f}M), the same recipe, steps and seed, with "
        f"`distill: {{alpha: {options.alpha:g}, temperature: {options.temperature:g}}}` and on the labels "
        f"alone. "
        f"SST-2 validation, {summary['rows']} sentences; 95 % intervals from {summary['resamples']} "
        f"bootstrap resamples (the students' shares and difference paired over the same rows).",
        "",
        "| model | accuracy | 95 % interval | share of the teacher's accuracy |",
        "|---|---|---|---|",
    ]
    for name_, label in (
        ("teacher", "teacher"),
        ("distilled", "student, distilled"),
        ("labels_only", "student, labels only"),
    ):
        model = models[name_]
        share = (
            f"{model['share_of_teacher']:.3f} "
            f"[{model['share_interval'][0]:.3f}, {model['share_interval'][1]:.3f}]"
            if "share_of_teacher" in model
            else "1"
        )
        interval = f"[{model['interval'][0]:.3f}, {model['interval'][1]:.3f}]"
        lines.append(f"| {label} (`{model['run']}`) | {model['accuracy']:.3f} | {interval} | {share} |")
    difference = summary["distilled_minus_labels_only"]
    lines += [
        "",
        f"Distilled minus labels only: {difference['difference']:+.4f} "
        f"[{difference['interval'][0]:+.4f}, {difference['interval'][1]:+.4f}], "
        f"p = {difference['p_value']:.3f}.",
        "",
        f"{machine}; {seconds / 60:.1f} min in all. Commands, as run (wall seconds):",
        "",
        *[f"    {entry['command']}    # {wall_time(entry)}" for entry in log],
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


def wall_time(entry: dict) -> str:
    if entry["seconds"] != "reused":
        return f"{entry['seconds']} s"
    return f"trained by an earlier run of this script (train_runtime {entry['train_runtime']:.0f} s)"


if __name__ == "__main__":
    main()
