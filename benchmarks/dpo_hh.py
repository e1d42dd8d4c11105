"""DPO with LoRA on HH-RLHF (harmless-base) beside LoRA-SFT on the same rows, SmolLM2-135M-Instruct.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/dpo_hh.py                   # the full budget (about an hour on 2 cores)
    python benchmarks/dpo_hh.py --steps 10 --train-pairs 40 --eval-pairs 24 --eval-every 5 \
        --eos-prompts 6 --eos-tokens 48                # the short budget the README reports

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
    "training.per_device_eval_batch_size=8",
    "training.logging_steps=5",
    "peft.r=16",
    "peft.alpha=32",
    "peft.dropout=0.0",
]


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def dpo_run(args: argparse.Namespace) -> dict:
    """LoRA-DPO on the training pairs, evaluated on the first ``eval_pairs`` test pairs along the way."""
    import llmkit

    output = WORK / "dpo"
    overrides = [
        f"data.train={HH / 'train.jsonl'}",
        f"data.validation={HH / 'test.jsonl'}",
        f"data.max_eval_samples={args.eval_pairs}",
        *([f"data.max_train_samples={args.train_pairs}"] if args.train_pairs else []),
        *COMMON,
        f"training.max_steps={args.steps}",
        f"training.learning_rate={args.learning_rate}",
        "training.eval_on_start=true",
        "training.eval_strategy=steps",
        f"training.eval_steps={args.eval_every}",
        f"output_dir={output}",
    ]
    started = time.perf_counter()
    result = llmkit.finetune("recipes/dpo-hh.yaml", overrides, overwrite=True)
    wall = time.perf_counter() - started
    metrics = result.metrics
    history = json.loads((output / "log_history.json").read_text())
    curve = [
        {
            "step": e["step"],
            "reward_accuracy": e["eval_reward_accuracy"],
            "reward_margin": e["eval_reward_margin"],
        }
        for e in history
        if "eval_reward_accuracy" in e
    ]
    return {
        "run": "dpo",
        "steps": args.steps,
        "eval_pairs": args.eval_pairs,
        "learning_rate": args.learning_rate,
        "wall_seconds": round(wall, 1),
        "tokens_per_second": metrics.get("train_tokens_per_second"),
        "peak_memory_mb": peak_memory_mb(),
        "reward_accuracy_before": metrics.get("eval_before_reward_accuracy"),
        "reward_accuracy_after": metrics.get("eval_reward_accuracy"),
        "reward_margin_before": metrics.get("eval_before_reward_margin"),
        "reward_margin_after": metrics.get("eval_reward_margin"),
        "truncated_pairs": metrics.get("train_truncated_pairs"),
        "dropped_pairs": metrics.get("train_dropped_pairs"),
        "curve": curve,
    }


def sft_rows() -> Path:
    """The training pairs as chat conversations: the prompt's turns and the chosen reply."""
    from llmkit.config import COMMON_DATA_DEFAULTS
    from llmkit.errors import LlmkitError
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

    output = WORK / "sft"
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
        f"output_dir={output}",
    ]
    started = time.perf_counter()
    result = llmkit.finetune("recipes/instruct-alpaca.yaml", overrides, overwrite=True)
    return {
        "run": "sft",
        "steps": args.steps,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tokens_per_second": result.metrics.get("train_tokens_per_second"),
        "peak_memory_mb": peak_memory_mb(),
    }


def eos_run(args: argparse.Namespace, which: str) -> dict:
    """Share of test prompts whose greedy generation ends with a stop token within ``eos_tokens``."""
    import torch

    from llmkit.causal_lm import generate_left_padded, load_causal_lm
    from llmkit.chat_checks import stop_token_ids
    from llmkit.config import COMMON_DATA_DEFAULTS
    from llmkit.models import load_tokenizer, resolve_model
    from llmkit.tasks.preference import PreferenceTask

    base = resolve_model("smollm2-135m")
    folder = base if which == "before" else WORK / "dpo"
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
                model, prompts[start : start + 10], pad, args.eos_tokens, eos_token_ids=list(stops)
            )
            for row in batch.tolist():
                stop_at = next((i for i, token in enumerate(row) if token in stops), None)
                ended += stop_at is not None
                lengths.append(stop_at + 1 if stop_at is not None else len(row))
    return {
        "run": f"eos_{which}",
        "prompts": len(prompts),
        "max_new_tokens": args.eos_tokens,
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
    dpo, sft = runs["dpo"], runs["sft"]
    before, after = runs["eos_before"], runs["eos_after"]
    ratio = dpo["peak_memory_mb"] / sft["peak_memory_mb"]
    lines = [
        f"SmolLM2-135M-Instruct + LoRA r=16 on HH-RLHF harmless-base: {dpo['steps']} steps of 4 pairs "
        f"(lr {dpo['learning_rate']:g}), {dpo['eval_pairs']} test pairs, max_length 384:",
        "",
        "| | before | after | target |",
        "|---|---|---|---|",
        f"| test-pair reward accuracy | {dpo['reward_accuracy_before']:.3f} (all rewards 0: ties) "
        f"| {dpo['reward_accuracy_after']:.3f} | ≥ 0.60 |",
        f"| mean reward margin | {dpo['reward_margin_before']:.4f} | {dpo['reward_margin_after']:.4f} | |",
        f"| generations ending with EOS within {after['max_new_tokens']} tokens | "
        f"{before['ended_with_eos']}/{before['prompts']} ({before['share']:.0%}) | "
        f"{after['ended_with_eos']}/{after['prompts']} ({after['share']:.0%}) | ≥ 95 % |",
        f"| mean new tokens per generation | {before['mean_new_tokens']} | {after['mean_new_tokens']} | |",
        "",
        "| | LoRA-DPO | LoRA-SFT (same rows) | DPO / SFT | target |",
        "|---|---|---|---|---|",
        f"| training tokens/s | {dpo['tokens_per_second']} | {sft['tokens_per_second']} | "
        f"{dpo['tokens_per_second'] / sft['tokens_per_second']:.2f}× | |",
        f"| peak memory (MB) | {dpo['peak_memory_mb']:.0f} | {sft['peak_memory_mb']:.0f} | {ratio:.2f}× "
        f"| ≤ 1.3× |",
        f"| wall time (s) | {dpo['wall_seconds']:.0f} | {sft['wall_seconds']:.0f} | | |",
        "",
        "Learning curve (test-pair reward accuracy / margin): "
        + ", ".join(
            f"step {p['step']}: {p['reward_accuracy']:.3f} / {p['reward_margin']:.3f}" for p in dpo["curve"]
        ),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=450, help="training steps (450: one epoch of 1,803 pairs)"
    )
    parser.add_argument(
        "--train-pairs", type=int, help="the first N training pairs (reference log-probs: all)"
    )
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--eval-pairs", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--eos-prompts", type=int, default=50)
    parser.add_argument("--eos-tokens", type=int, default=256)
    parser.add_argument(
        "--only", help="run these (e.g. sft,eos_before,eos_after) and take the others from the last results"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # dpo | sft | eos_before | eos_after, in a child
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        runners = {
            "dpo": lambda: dpo_run(args),
            "sft": lambda: sft_run(args),
            "eos_before": lambda: eos_run(args, "before"),
            "eos_after": lambda: eos_run(args, "after"),
        }
        print(json.dumps(runners[args.one]()))
        return
    argv = list(sys.argv[1:])
    runs, previous = {}, RESULTS / "dpo_hh.json"
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
    if not all(run in runs for run in ("dpo", "sft", "eos_before", "eos_after")):
        return
    text = [f"`{command}` (OMP_NUM_THREADS={threads})", "", *table(runs)]
    (RESULTS / "dpo_hh.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
