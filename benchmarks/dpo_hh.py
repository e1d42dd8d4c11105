"""DPO with LoRA on HH-RLHF (harmless-base) beside LoRA-SFT on the same rows, SmolLM2-135M-Instruct.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/dpo_hh.py                   # the full budget (about an hour on 2 cores)
    python benchmarks/dpo_hh.py --steps 10 --train-pairs 40 --eval-pairs 24 --eval-every 5 \
        --eos-prompts 6 --eos-tokens 48                # the short budget docs/results.md reports

* **LoRA-DPO** (``recipes/dpo-hh.yaml``: r=16, beta 0.1, reference log-probs precomputed): test-pair reward
  accuracy (chosen scored above rejected by the DPO reward, i.e. the policy's log-ratio against the base) and
  mean margin, before and after training, with the learning curve (an evaluation every ``--eval-every``
  steps); training tokens/s, peak memory, wall time.
* **LoRA-SFT** on the same rows (prompt + chosen reply as chat, ``task: generation``, same batch, lengths and
  LoRA settings): tokens/s and peak memory, the baseline for DPO's memory (target ≤ 1.3×).
* **Stopping**: the share of ``--eos-prompts`` test prompts whose greedy generation ends with the end-of-turn
  token within ``--eos-tokens`` new tokens, for the base model and the DPO-tuned one (target ≥ 95 %).

Each run is its own child process, so its peak memory (RSS on a CPU, ``torch.cuda.max_memory_allocated`` on a
GPU) is its own. Before training the DPO reward of every pair is exactly 0 (the policy is the reference), so
the reward accuracy before training is 0 by TRL's definition (a tie is not "chosen above rejected"): chance.
Writes benchmarks/results/dpo_hh.{json,md}.
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
WORK = REPO / "runs" / "bench-dpo"
HH = REPO.parent / "shared" / "data" / "hh_rlhf"
COMMON = [
    "data.max_length=384",
    "data.max_prompt_length=256",
    "training.per_device_train_batch_size=4",
    "training.per_device_eval_batch_size=4",
    "training.logging_steps=5",
    "peft.r=16",
    "peft.alpha=32",
    "peft.dropout=0.0",
]


def peak_memory_mb() -> float:
    """The process's peak memory so far (RSS on a CPU, allocated tensors on a GPU)."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


TRAINING_PEAK: dict[str, float] = {}


def measure_training_peak() -> None:
    """Record the peak memory of ``Trainer.train`` alone in ``TRAINING_PEAK``: the peak is reset as training
    begins (``/proc/self/clear_refs`` on Linux, the CUDA allocator counters on a GPU), so loading, tokenizing
    and the evaluations after training do not count. The issue's memory target is about training."""
    import torch
    from transformers import Trainer

    train = Trainer.train
    resettable = Path("/proc/self/clear_refs").exists()  # Linux; elsewhere only the whole run's peak is known

    def measured(self, *args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        elif resettable:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM (peak RSS) back to the current RSS
        try:
            return train(self, *args, **kwargs)
        finally:
            if torch.cuda.is_available():
                TRAINING_PEAK["mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            elif resettable:
                status = Path("/proc/self/status").read_text()
                TRAINING_PEAK["mb"] = round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)

    Trainer.train = measured


def checkpointing(args: argparse.Namespace) -> list[str]:
    """The same activation setting for both runs: memory is compared like for like."""
    return [f"training.gradient_checkpointing={'true' if args.gradient_checkpointing else 'false'}"]


def micro_batches(args: argparse.Namespace) -> list[str]:
    """DPO's 4 pairs a step as ``--dpo-accumulation`` micro-batches: the same pairs an optimizer step (the
    pairs' losses are independent, so the gradient is the same), fewer sequences in memory at once."""
    if args.dpo_accumulation == 1:
        return []
    return [
        f"training.per_device_train_batch_size={4 // args.dpo_accumulation}",
        f"training.gradient_accumulation_steps={args.dpo_accumulation}",
    ]


def dpo_run(args: argparse.Namespace) -> dict:
    """LoRA-DPO on the training pairs, evaluated on the first ``eval_pairs`` test pairs along the way."""
    import llmkit

    output = WORK / f"dpo{args.tag}"
    overrides = [
        f"data.train={HH / 'train.jsonl'}",
        f"data.validation={HH / 'test.jsonl'}",
        f"data.max_eval_samples={args.eval_pairs}",
        *([f"data.max_train_samples={args.train_pairs}"] if args.train_pairs else []),
        *COMMON,
        *micro_batches(args),
        f"training.max_steps={args.steps}",
        f"training.learning_rate={args.learning_rate}",
        f"training.eval_on_start={'false' if args.skip_eval_before else 'true'}",
        *(
            ["training.eval_strategy=steps", f"training.eval_steps={args.eval_every}"]
            if args.eval_every > 0
            else ["training.eval_strategy=no"]  # scored after training only: memory of training alone
        ),
        *checkpointing(args),
        *args.set,
        f"output_dir={output}",
    ]
    started = time.perf_counter()
    result = llmkit.finetune("recipes/dpo-hh.yaml", overrides, overwrite=True)
    wall = time.perf_counter() - started
    metrics = result.metrics
    history = json.loads((output / "log_history.json").read_text())
    curve = {}  # a step scored twice (the last in-training evaluation, then the final one) counts once
    for e in history:
        if "eval_reward_accuracy" in e:
            curve.setdefault(
                e["step"],
                {
                    "step": e["step"],
                    "reward_accuracy": e["eval_reward_accuracy"],
                    "reward_margin": e["eval_reward_margin"],
                },
            )
    return {
        "run": "dpo",
        "steps": args.steps,
        "overrides": args.set,
        "dpo_accumulation": args.dpo_accumulation,
        "gradient_checkpointing": args.gradient_checkpointing,
        "eval_pairs": args.eval_pairs,
        "learning_rate": args.learning_rate,
        "wall_seconds": round(wall, 1),
        "tokens_per_second": metrics.get("train_tokens_per_second"),
        "peak_memory_mb": peak_memory_mb(),
        "peak_training_memory_mb": TRAINING_PEAK.get("mb"),
        "reward_accuracy_before": metrics.get("eval_before_reward_accuracy"),
        "reward_accuracy_after": metrics.get("eval_reward_accuracy"),
        "reward_margin_before": metrics.get("eval_before_reward_margin"),
        "reward_margin_after": metrics.get("eval_reward_margin"),
        "truncated_pairs": metrics.get("train_truncated_pairs"),
        "dropped_pairs": metrics.get("train_dropped_pairs"),
        "curve": list(curve.values()),
    }


def sft_rows() -> Path:
    """The training pairs as chat conversations: the prompt's turns and the chosen reply."""
    from llmkit.core.errors import LlmkitError
    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.tasks.preference import PreferenceTask

    task = PreferenceTask({**COMMON_DATA_DEFAULTS, **PreferenceTask.data_defaults, "format": "hh"})
    rows = [json.loads(line) for line in (HH / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "sft.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            try:  # the DPO run leaves out the same rows (data.skip_bad_turns)
                prompt = task.prompt_messages(row["prompt"])
            except LlmkitError:
                continue
            reply = {"role": "assistant", "content": row["chosen"].strip()}
            handle.write(json.dumps({"messages": [*prompt, reply]}) + "\n")
    return path


def sft_run(args: argparse.Namespace) -> dict:
    """LoRA-SFT on the same rows and lengths: the memory and speed baseline."""
    import llmkit

    output = WORK / f"sft{args.tag}"
    overrides = [
        "model=smollm2-135m",
        f"data.train={sft_rows()}",
        "data.validation_split=0",
        *([f"data.max_train_samples={args.train_pairs}"] if args.train_pairs else []),
        "data.max_length=384",
        "training.per_device_train_batch_size=4",
        "training.logging_steps=5",
        f"training.max_steps={args.steps}",
        f"training.learning_rate={args.learning_rate}",
        "training.eval_on_start=false",
        "peft.r=16",
        "peft.alpha=32",
        "peft.dropout=0.0",
        *checkpointing(args),
        f"output_dir={output}",
    ]
    started = time.perf_counter()
    result = llmkit.finetune("recipes/instruct-alpaca.yaml", overrides, overwrite=True)
    return {
        "run": "sft",
        "steps": args.steps,
        "gradient_checkpointing": args.gradient_checkpointing,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tokens_per_second": result.metrics.get("train_tokens_per_second"),
        "peak_memory_mb": peak_memory_mb(),
        "peak_training_memory_mb": TRAINING_PEAK.get("mb"),
    }


def eos_run(args: argparse.Namespace, which: str) -> dict:
    """Share of test prompts whose greedy generation ends with a stop token within ``eos_tokens``."""
    import torch

    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks.causal_lm import generate_left_padded, load_causal_lm
    from llmkit.tasks.chat_checks import stop_token_ids
    from llmkit.tasks.preference import PreferenceTask

    base = resolve_model("smollm2-135m")
    folder = base if which == "before" else WORK / f"dpo{args.tag}"
    tokenizer = load_tokenizer(folder)
    model = load_causal_lm(folder).eval()
    task = PreferenceTask({**COMMON_DATA_DEFAULTS, **PreferenceTask.data_defaults, "format": "hh"})
    rows = [json.loads(line) for line in (HH / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    prompts = [
        tokenizer(task.prompt_text(tokenizer, row), add_special_tokens=False).input_ids[-256:]
        for row in rows[: args.eos_prompts]
    ]
    stops = stop_token_ids(tokenizer, base)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ended, lengths = 0, []
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(prompts), 10):
            batch = generate_left_padded(
                model,
                prompts[start : start + 10],
                pad,
                args.eos_tokens,
                eos_token_ids=list(stops),
                repetition_penalty=args.repetition_penalty,
            )
            for row in batch.tolist():
                stop_at = next((i for i, token in enumerate(row) if token in stops), None)
                ended += stop_at is not None
                lengths.append(stop_at + 1 if stop_at is not None else len(row))
    return {
        "run": f"eos_{which}",
        "prompts": len(prompts),
        "max_new_tokens": args.eos_tokens,
        "repetition_penalty": args.repetition_penalty,
        "ended_with_eos": ended,
        "share": round(ended / len(prompts), 3),
        "mean_new_tokens": round(sum(lengths) / len(lengths), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def child(run: str, argv: list[str]) -> dict:
    """One run in a fresh process, so its peak memory is its own."""
    command = [sys.executable, __file__, *argv, "--one", run]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{run} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(runs: dict[str, dict]) -> list[str]:
    dpo = runs["dpo"]
    before, after = runs["eos_before"], runs["eos_after"]
    accuracy_before = dpo["reward_accuracy_before"]
    margin_before = dpo["reward_margin_before"]
    lines = [
        f"SmolLM2-135M-Instruct + LoRA r=16 on HH-RLHF harmless-base: {dpo['steps']} steps of 4 pairs "
        f"(lr {dpo['learning_rate']:g}), {dpo['eval_pairs']} test pairs, max_length 384, gradient "
        f"checkpointing {'on' if dpo.get('gradient_checkpointing') else 'off'}"
        + (f", overrides {', '.join(dpo['overrides'])}" if dpo.get("overrides") else "")
        + ":",
        "",
        "| | before | after | target |",
        "|---|---|---|---|",
        "| test-pair reward accuracy | "
        + ("0 by construction (not run)" if accuracy_before is None else f"{accuracy_before:.3f}")
        + f" (all rewards 0: ties) | {dpo['reward_accuracy_after']:.3f} | ≥ 0.60 |",
        "| mean reward margin | "
        + ("0 by construction" if margin_before is None else f"{margin_before:.4f}")
        + f" | {dpo['reward_margin_after']:.4f} | |",
        f"| generations ending with EOS within {after['max_new_tokens']} tokens (greedy"
        + (
            f", repetition penalty {after['repetition_penalty']:g}"
            if after.get("repetition_penalty", 1) != 1
            else ""
        )
        + ") | "
        f"{before['ended_with_eos']}/{before['prompts']} ({before['share']:.0%}) | "
        f"{after['ended_with_eos']}/{after['prompts']} ({after['share']:.0%}) | ≥ 95 % |",
        f"| mean new tokens per generation | {before['mean_new_tokens']} | {after['mean_new_tokens']} | |",
        "",
    ]
    sft = runs.get("sft")
    if sft and sft.get("steps") == dpo["steps"]:  # a baseline of the same length: side by side
        lines += [
            *side_by_side(dpo, sft),
            f"| wall time (s) | {dpo['wall_seconds']:.0f} | {sft['wall_seconds']:.0f} | | |",
            "",
        ]
    else:
        lines += [
            f"LoRA-DPO: {dpo['tokens_per_second']} training tokens/s, peak memory "
            f"{dpo['peak_memory_mb']:.0f} MB, {dpo['wall_seconds']:.0f} s wall "
            "(no LoRA-SFT run of the same length here).",
            "",
        ]
    lines.append(
        "Learning curve (test-pair reward accuracy / margin): "
        + ", ".join(
            f"step {p['step']}: {p['reward_accuracy']:.3f} / {p['reward_margin']:.3f}" for p in dpo["curve"]
        )
    )
    return lines


def memory_table(runs: dict[str, dict]) -> list[str]:
    """DPO's peak memory over SFT's, on the same rows (the issue's target: at most 1.3×)."""
    dpo, sft = runs["dpo"], runs["sft"]
    return [
        f"{dpo['steps']} steps of 4 pairs, max_length 384, gradient checkpointing "
        f"{'on' if dpo.get('gradient_checkpointing') else 'off'} (both runs), DPO in "
        f"{dpo.get('dpo_accumulation', 1)} micro-batch(es) a step:",
        "",
        *side_by_side(dpo, sft),
    ]


def side_by_side(dpo: dict, sft: dict) -> list[str]:
    """Speed and memory rows: peak memory while training (the target) and over the whole run."""
    rows = [
        "| | LoRA-DPO | LoRA-SFT (same rows) | DPO / SFT | target |",
        "|---|---|---|---|---|",
        f"| training tokens/s | {dpo['tokens_per_second']} | {sft['tokens_per_second']} | "
        f"{dpo['tokens_per_second'] / sft['tokens_per_second']:.2f}× | |",
    ]
    for key, label, target in (
        ("peak_training_memory_mb", "peak memory while training (MB)", "≤ 1.3×"),
        ("peak_memory_mb", "peak memory of the whole run, evaluations included (MB)", ""),
    ):
        if dpo.get(key) and sft.get(key):
            rows.append(
                f"| {label} | {dpo[key]:.0f} | {sft[key]:.0f} | {dpo[key] / sft[key]:.2f}× | {target} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=450, help="training steps (450: one epoch of 1,803 pairs)"
    )
    parser.add_argument(
        "--train-pairs", type=int, help="the first N training pairs (reference log-probs: all)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="the recipe's")
    parser.add_argument("--eval-pairs", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=150, help="0: evaluate after training only")
    parser.add_argument("--eos-prompts", type=int, default=50)
    parser.add_argument("--eos-tokens", type=int, default=256)
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="greedy decoding of the stopping check with this penalty (data.repetition_penalty)",
    )
    parser.add_argument(
        "--only", help="run these (e.g. sft,eos_before,eos_after) and take the others from the last results"
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="both runs recompute activations (less memory)"
    )
    parser.add_argument(
        "--dpo-accumulation",
        type=int,
        choices=[1, 2, 4],
        default=2,
        help="DPO's 4 pairs a step in this many micro-batches (gradient accumulation; the recipe's: 2)",
    )
    parser.add_argument(
        "--skip-eval-before",
        action="store_true",
        help="no evaluation before training (with LoRA the policy is the reference: every reward is 0)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for the DPO run (repeatable), e.g. preference.dpo.sft_weight=1",
    )
    parser.add_argument("--tag", default="", help="write dpo_hh-TAG.* (and train in runs/bench-dpo/*-TAG)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # dpo | sft | eos_before | eos_after, in a child
    args = parser.parse_args()
    args.tag = f"-{args.tag}" if args.tag else ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        measure_training_peak()
        runners = {
            "dpo": lambda: dpo_run(args),
            "sft": lambda: sft_run(args),
            "eos_before": lambda: eos_run(args, "before"),
            "eos_after": lambda: eos_run(args, "after"),
        }
        print(json.dumps(runners[args.one]()))
        return
    argv = list(sys.argv[1:])
    runs, previous = {}, RESULTS / f"dpo_hh{args.tag}.json"
    if args.only and previous.exists():  # a budget split over several sessions: the earlier runs stay
        runs = json.loads(previous.read_text())["runs"]
    for run in args.only.split(",") if args.only else ("dpo", "sft", "eos_before", "eos_after"):
        print(f"{run} ...", file=sys.stderr, flush=True)
        runs[run] = child(run, argv)
        print(json.dumps(runs[run]), file=sys.stderr, flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)  # after each run: a budget may end between them
        threads = os.environ.get("OMP_NUM_THREADS", "all")
        command = "python benchmarks/dpo_hh.py " + " ".join(argv)
        previous.write_text(json.dumps({"command": command, "threads": threads, "runs": runs}, indent=2))
    if all(run in runs for run in ("dpo", "eos_before", "eos_after")):
        text = [f"`{command}` (OMP_NUM_THREADS={threads})", "", *table(runs)]
    elif all(run in runs for run in ("dpo", "sft")):
        text = [f"`{command}` (OMP_NUM_THREADS={threads})", "", *memory_table(runs)]
    else:
        return
    (RESULTS / f"dpo_hh{args.tag}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
