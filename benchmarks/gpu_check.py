"""GPU check: every bundled recipe for a few steps with ``precision: auto``, then SST-2 to the end, on CUDA.

One command (from the repo root, ../shared/data beside it, on a machine with a CUDA GPU):

    python benchmarks/gpu_check.py                       # every recipe for 20 steps, then SST-2 in full
    python benchmarks/gpu_check.py --steps 5 --skip-full
    python benchmarks/gpu_check.py --recipes classification --steps 2 --allow-cpu   # smoke test, no GPU

On a GPU machine that cannot download weights, ``--stand-in ALIAS=FOLDER`` replaces a model alias with
randomly initialised weights of the same architecture (FOLDER holds the config and tokenizer files; seed 0),
and ``--data-root DIR`` reads the recipes' ``../shared/data`` files from DIR (a subset, say):
throughput, precision and memory are then the real model's; losses and scores are not.

One line per recipe: the precision ``auto`` chose, samples/s and real tokens/s (the Trainer's clock), peak
GPU memory and the final training loss. Then ``recipes/sst2-minilm.yaml`` runs as written (300 steps): dev
accuracy and throughput. The instruction recipe also runs with a LoRA adapter and, where bitsandbytes is
installed, as QLoRA (``peft.quantize: 4bit``, then ``8bit``): the only place llmkit's QLoRA path runs
(it needs CUDA). Then FSDP: the default recipe on tiny-bert and its shipped sample, fp32, once in one
process and once sharded over every GPU (``training.fsdp=true``: FSDP2 through Accelerate), same rows and
global batch: the training losses must agree (``--fsdp-only`` runs just this step). Writes
benchmarks/results/gpu_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "gpu-check"
#: Keep each short run short: a few batches of data, a small evaluation.
SHORT_RUN_DATA = ["data.max_eval_samples=64"]
SHARED_DATA_LINE = "# shared data: "
SHARED_DATA_DIR = "../shared/data"
#: Adapter variants of one recipe: name suffix -> overrides (QLoRA needs CUDA and bitsandbytes).
ADAPTER_RECIPE = "instruct-alpaca"
ADAPTER_VARIANTS = {
    "lora": ["peft.r=16"],
    "qlora-4bit": ["peft.r=16", "peft.quantize=4bit", "training.gradient_checkpointing=true"],
    "qlora-8bit": ["peft.r=16", "peft.quantize=8bit", "training.gradient_checkpointing=true"],
}

#: The FSDP step: tiny-bert on the shipped sentiment sample, in fp32 (TF32 off) so that sharding is the only
#: difference; the batch per GPU stays 4, the one-process run takes the whole global batch.
FSDP_RUN = [
    "model=tiny-bert",
    "training.learning_rate=1e-3",
    "training.train_sampling_strategy=sequential",
    "training.logging_steps=1",
    "training.precision=fp32",
    "training.tf32=false",
]
FSDP_BATCH_PER_GPU = 4
#: Sharding changes only the order of the gradient sums: fp32 losses agree to about 1e-6.
FSDP_LOSS_TOLERANCE = 1e-4


def shared_data_overrides() -> dict[str, list[str]]:
    """Each bundled recipe's documented ``# shared data:`` overrides: ../shared/data instead of the Hub."""
    from llmkit.recipe.loader import bundled_recipes

    found = {}
    for name, path in bundled_recipes().items():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(SHARED_DATA_LINE):
                found[name] = line[len(SHARED_DATA_LINE) :].split()
    return found


def model_alias(recipe: Path) -> str:
    """The recipe's ``model:`` line (bundled recipes name an alias or a folder there)."""
    import yaml

    model = yaml.safe_load(recipe.read_text(encoding="utf-8")).get("model")
    return model if isinstance(model, str) else ""


def build_stand_in(source: Path, target: Path, seed: int = 0) -> Path:
    """Random weights in SOURCE's architecture, tokenizer and chat files kept: no download."""
    import shutil

    import torch
    import transformers

    if (target / "config.json").is_file():
        return target
    config = transformers.AutoConfig.from_pretrained(source)
    torch.manual_seed(seed)
    model = getattr(transformers, config.architectures[0])(config)
    model.save_pretrained(target)
    for extra in source.iterdir():  # tokenizer, chat template, generation config
        if extra.is_file() and extra.name != "config.json":
            shutil.copy2(extra, target / extra.name)
    return target


def failure(exc: Exception) -> str:
    """One line for the table; the traceback of anything but llmkit's own errors goes to stderr."""
    from llmkit.core.errors import LlmkitError

    if isinstance(exc, LlmkitError):
        return str(exc)
    traceback.print_exc()
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def peak_memory_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def run_recipe(name: str, overrides: list[str], work: Path, variant: str = "") -> dict:
    """Fine-tune one bundled recipe; the figures for its line."""
    import torch

    import llmkit

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    folder = work / (f"{name}-{variant}" if variant else name)
    result = llmkit.finetune(name, [f"output_dir={folder}", *overrides], overwrite=True)
    manifest = json.loads((result.output_dir / "manifest.json").read_text(encoding="utf-8"))
    metrics = result.metrics
    return {
        "precision": manifest["precision"],
        "device": manifest["device"],
        "samples_per_second": round(metrics.get("train_samples_per_second", 0.0), 1),
        "tokens_per_second": metrics.get("train_tokens_per_second"),
        "peak_gpu_memory_gib": peak_memory_gib(),
        "final_train_loss": round(metrics.get("train_loss", float("nan")), 4),
        "quality": result.quality_metrics(),
    }


def fsdp_command(processes: int, overrides: list[str]) -> list[str]:
    """llmkit's own launcher on several GPUs; on one, torchrun (FSDP needs a distributed launch)."""
    if processes > 1:
        return [sys.executable, "-m", "llmkit", "finetune", "--num-processes", str(processes), *overrides]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    return [*torchrun, "-m", "llmkit", "finetune", *overrides]


def run_fsdp_check(work: Path, steps: int) -> dict:
    """The same rows and global batch in one process and sharded over every GPU: losses, and the verdict.

    The sharded run goes first, through the command line (it needs its own processes); a run whose FSDP
    setting Accelerate dropped fails there (llmkit checks the Trainer), so a finished run was sharded.
    """
    import subprocess

    import torch

    import llmkit

    gpus = torch.cuda.device_count()
    processes = max(gpus, 1)  # one on a CPU (--allow-cpu): llmkit then refuses FSDP, as it should
    common = [*FSDP_RUN, f"training.max_steps={steps}"]
    sharded_dir = work / "fsdp-sharded"
    command = fsdp_command(
        processes,
        [*common, f"training.per_device_train_batch_size={FSDP_BATCH_PER_GPU}", "training.fsdp=true",
         f"output_dir={sharded_dir}", "--overwrite"],
    )  # fmt: skip
    launched = subprocess.run(command, capture_output=True, text=True, check=False)
    if launched.returncode != 0:
        sys.stderr.write(launched.stderr[-5000:])
        lines = launched.stderr.strip().splitlines() or [""]
        reason = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1])
        return {"gpus": gpus, "error": f"exit {launched.returncode}: {reason}"}
    plain = llmkit.finetune(
        None,
        [*common, f"training.per_device_train_batch_size={FSDP_BATCH_PER_GPU * processes}",
         f"output_dir={work / 'fsdp-plain'}"],
        overwrite=True,
    )  # fmt: skip
    sharded = json.loads((sharded_dir / "metrics.json").read_text(encoding="utf-8"))
    figures = {"gpus": gpus, "steps": steps, "global_batch": FSDP_BATCH_PER_GPU * processes}
    for key in ("train_loss", "eval_loss"):
        figures[f"{key}_one_process"] = plain.metrics[key]
        figures[f"{key}_fsdp"] = sharded[key]
    difference = abs(sharded["train_loss"] - plain.metrics["train_loss"]) / abs(plain.metrics["train_loss"])
    figures["train_loss_relative_difference"] = difference
    figures["losses_agree"] = difference <= FSDP_LOSS_TOLERANCE
    figures["saved_model_loads"] = saved_model_loads(sharded_dir)
    return figures


def saved_model_loads(folder: Path) -> bool:
    """The sharded run's saved weights are a whole model again (FSDP saves a full state dict)."""
    from transformers import AutoModelForSequenceClassification

    try:
        AutoModelForSequenceClassification.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError):
        traceback.print_exc()
        return False
    return True


def markdown(report: dict) -> str:
    lines = [
        f"# GPU check on {report['device']}",
        "",
        f"Short runs: {report['steps']} steps each, `precision: auto`.",
        "",
    ]
    if report.get("stand_ins"):
        lines += [
            f"Stand-ins (random weights, real architecture: speed and memory are real, losses are not): "
            f"{', '.join(report['stand_ins'])}.",
            "",
        ]
    lines += [
        "| recipe | precision | samples/s | tokens/s | peak GPU memory (GiB) | final loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in report["recipes"].items():
        if "error" in figures:
            lines.append(f"| {name} | failed: {figures['error']} | | | | |")
            continue
        lines.append(
            f"| {name} | {figures['precision']} | {figures['samples_per_second']} "
            f"| {figures['tokens_per_second']} | {figures['peak_gpu_memory_gib']} "
            f"| {figures['final_train_loss']} |"
        )
    if "fsdp" in report:
        lines += ["", fsdp_markdown(report["fsdp"])]
    if "sst2_full" in report:
        full = report["sst2_full"]
        lines += [
            "",
            f"SST-2 recipe in full: dev accuracy {full['quality'].get('eval_accuracy')}, "
            f"{full['samples_per_second']} samples/s, precision {full['precision']}, "
            f"peak {full['peak_gpu_memory_gib']} GiB.",
        ]
    return "\n".join(lines) + "\n"


def fsdp_markdown(fsdp: dict) -> str:
    if "error" in fsdp:
        return f"FSDP on {fsdp['gpus']} GPU(s): failed: {fsdp['error']}"
    verdict = "agree" if fsdp["losses_agree"] else "DISAGREE"
    return (
        f"FSDP on {fsdp['gpus']} GPU(s), {fsdp['steps']} steps, global batch {fsdp['global_batch']}, fp32: "
        f"training loss {fsdp['train_loss_fsdp']:.6f} sharded, {fsdp['train_loss_one_process']:.6f} in one "
        f"process ({verdict}: relative difference {fsdp['train_loss_relative_difference']:.1e}); eval loss "
        f"{fsdp['eval_loss_fsdp']:.6f} / {fsdp['eval_loss_one_process']:.6f}; saved model loads: "
        f"{fsdp['saved_model_loads']}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps of each short run")
    parser.add_argument("--recipes", nargs="*", help="bundled recipe names (default: all)")
    parser.add_argument("--skip-full", action="store_true", help="no full SST-2 run")
    parser.add_argument("--skip-adapters", action="store_true", help="no LoRA/QLoRA runs")
    parser.add_argument("--skip-fsdp", action="store_true", help="no FSDP run")
    parser.add_argument("--fsdp-only", action="store_true", help="only the FSDP run")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a smoke test)")
    parser.add_argument("--tag", default="", help="write gpu_check-TAG.* instead of gpu_check.*")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for gpu_check.{json,md}")
    parser.add_argument("--work", type=Path, default=WORK, help="folder for the runs' output folders")
    parser.add_argument("--data-root", help="folder to read instead of ../shared/data (e.g. a subset)")
    parser.add_argument(
        "--stand-in",
        action="append",
        default=[],
        metavar="ALIAS=FOLDER",
        help="random weights of FOLDER's config (and its tokenizer) wherever a recipe names ALIAS",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(REPO)

    import torch

    from llmkit.recipe.loader import bundled_recipes

    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit(
            "gpu_check: no CUDA GPU is visible; run it on a GPU machine (or pass --allow-cpu to smoke-test)"
        )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke test)"
    names = args.recipes or list(bundled_recipes())
    shared = shared_data_overrides()
    if args.data_root:
        shared = {k: [o.replace(SHARED_DATA_DIR, args.data_root) for o in v] for k, v in shared.items()}
    stand_ins = {}
    for pair in args.stand_in:
        alias, folder = pair.split("=", 1)
        stand_ins[alias] = build_stand_in(Path(folder), args.work / "stand-ins" / alias)
    recipes = bundled_recipes()
    for name in recipes:
        alias = model_alias(recipes[name])
        if alias in stand_ins:
            shared[name] = [*shared.get(name, []), f"model={stand_ins[alias]}"]
    report: dict = {"device": device, "steps": args.steps, "recipes": {}}
    if stand_ins:
        report["stand_ins"] = {alias: "random weights, same architecture" for alias in stand_ins}
    if args.fsdp_only:
        names, args.skip_adapters, args.skip_full = [], True, True
    for name in names:
        overrides = [*shared.get(name, []), f"training.max_steps={args.steps}", *SHORT_RUN_DATA]
        try:
            report["recipes"][name] = figures = run_recipe(name, overrides, args.work)
        except Exception as exc:  # a recipe that cannot run here is a finding, not the end of the check
            report["recipes"][name] = figures = {"error": failure(exc)}
        print(f"{name}: {json.dumps(figures)}", flush=True)
    if not args.skip_adapters:
        base = [*shared.get(ADAPTER_RECIPE, []), f"training.max_steps={args.steps}", *SHORT_RUN_DATA]
        for suffix, extra in ADAPTER_VARIANTS.items():
            name = f"{ADAPTER_RECIPE} +{suffix}"
            try:
                report["recipes"][name] = figures = run_recipe(
                    ADAPTER_RECIPE, [*base, *extra], args.work, suffix
                )
            except Exception as exc:  # e.g. no bitsandbytes: recorded, the check goes on
                report["recipes"][name] = figures = {"error": failure(exc)}
            print(f"{name}: {json.dumps(figures)}", flush=True)
    if not args.skip_fsdp:
        try:
            report["fsdp"] = run_fsdp_check(args.work, args.steps)
        except Exception as exc:  # recorded like a recipe's failure
            report["fsdp"] = {"gpus": torch.cuda.device_count(), "error": failure(exc)}
        print(f"fsdp: {json.dumps(report['fsdp'])}", flush=True)
    if not args.skip_full:
        report["sst2_full"] = run_recipe("sst2-minilm", shared.get("sst2-minilm", []), args.work)
        print(f"sst2-minilm (full): {json.dumps(report['sst2_full'])}", flush=True)
    stem = f"gpu_check-{args.tag}" if args.tag else "gpu_check"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.results / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
