"""GRPO with LoRA on the shipped arithmetic problems, SmolLM2-135M-Instruct, within a training-time budget.

One command (from the repo root):

    OMP_NUM_THREADS=2 python benchmarks/grpo_arithmetic.py --budget-minutes 20 --eval-prompts 60

runs ``recipes/grpo-arithmetic.yaml`` (4 completions per prompt, 2 prompts a step, LoRA r=16, learning rate
2e-4 constant, completions up to 48 tokens) until ``--budget-minutes`` of training steps have passed
(evaluations not counted), with the held-out exact match (one greedy completion per problem, the first
``--eval-prompts`` of ``sample:arithmetic/test.jsonl``) before training, ``--evaluations`` times through the
budget (the last at the end), and the mean reward of every step; ``--set KEY=VALUE`` adds a recipe override.
Writes benchmarks/results/grpo_arithmetic.{json,md} (the run folder, with its report and plots, stays in
runs/bench-grpo); ``--tag=-X`` writes grpo_arithmetic-X.{json,md} and runs/bench-grpo-X instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
RUN = REPO / "runs" / "bench-grpo"


def budget_callback(budget: float, evaluations: int) -> object:
    """Stops training after ``budget`` seconds of training steps and asks for an evaluation each
    ``budget / evaluations`` seconds (the last one is the run's own, at the end)."""
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        def __init__(self) -> None:
            self.spent, self.began = 0.0, 0.0
            self.marks = [budget * k / evaluations for k in range(1, evaluations)]
            self.loads: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.spent += time.perf_counter() - self.began
            self.loads.append(os.getloadavg()[0])
            if self.marks and self.spent >= self.marks[0]:
                control.should_evaluate = True
                self.marks = [mark for mark in self.marks if mark > self.spent]
            if self.spent >= budget:
                control.should_training_stop = True
            return control

    return Budget()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    parser.add_argument("--eval-prompts", type=int, default=60)
    parser.add_argument("--max-steps", type=int, default=400, help="an upper bound; the budget stops first")
    parser.add_argument("--evaluations", type=int, default=2, help="held-out evaluations during training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override")
    parser.add_argument("--tag", default="", help="suffix of the run folder and the results files (-60min)")
    args = parser.parse_args()
    run = RUN.with_name(RUN.name + args.tag)

    import llmkit

    callback = budget_callback(args.budget_minutes * 60, args.evaluations)
    began = time.perf_counter()
    result = llmkit.finetune(
        str(REPO / "recipes" / "grpo-arithmetic.yaml"),
        [
            f"output_dir={run}",
            f"data.max_eval_samples={args.eval_prompts}",
            "grpo.max_completion_length=48",
            f"training.max_steps={args.max_steps}",
            "training.per_device_train_batch_size=8",
            "training.per_device_eval_batch_size=30",
            "training.learning_rate=2e-4",
            "training.lr_scheduler_type=constant",
            "training.warmup_steps=0",
            "training.eval_strategy=no",
            "training.logging_steps=1",
            *args.set,
        ],
        overwrite=True,
        callbacks=[callback],
    )
    history = json.loads((run / "log_history.json").read_text())
    timing = {"training_seconds": callback.spent, "wall_seconds": time.perf_counter() - began}
    record = results(history, result.metrics, timing, callback.loads, args.budget_minutes, args.eval_prompts)
    record["overrides"] = args.set
    write_results(record, args.tag)


def results(
    history: list[dict],
    metrics: dict[str, float],
    timing: dict[str, float],
    loads: list[float],
    budget_minutes: float,
    eval_prompts: int,
) -> dict:
    """The run's curves (held-out exact match at each evaluation, mean rewards at each step) and settings."""

    def curve(key: str) -> list[list[float]]:
        return [[entry["step"], entry[key]] for entry in history if key in entry and "loss" in entry]

    return {
        "budget_minutes": budget_minutes,
        "training_seconds": round(timing["training_seconds"], 1),
        "wall_seconds": round(timing["wall_seconds"], 1),
        "load_average_1min": {"min": min(loads), "max": max(loads)} if loads else {},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "steps": max(entry.get("step", 0) for entry in history),
        "held_out_prompts": eval_prompts,
        # one point a step: the spine's last evaluation repeats the last step's (greedy: the same score)
        "exact_match": [
            list(p)
            for p in {e["step"]: e["eval_exact_match"] for e in history if "eval_exact_match" in e}.items()
        ],
        "reward": curve("reward"),
        "answer_reward": curve("rewards/answer/mean"),
        "format_reward": curve("rewards/format/mean"),
        "completion_length": curve("completions/mean_length"),
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("eval_", "train_"))},
    }


def write_results(record: dict, tag: str = "") -> None:
    """benchmarks/results/grpo_arithmetic{tag}.{json,md}."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"grpo_arithmetic{tag}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    lines = [
        "# GRPO on the arithmetic problems (SmolLM2-135M-Instruct + LoRA)",
        "",
        f"Budget {record['budget_minutes']:g} min of training steps ({record['training_seconds']:.0f} s "
        f"used, {record['steps']} steps, OMP_NUM_THREADS={record['omp_num_threads']}, 1-min load average "
        f"{record['load_average_1min']}); held-out exact match on {record['held_out_prompts']} problems.",
        f"Overrides after the benchmark's own: {' '.join(record.get('overrides') or []) or 'none'}.",
        "",
        "| step | held-out exact match |",
        "|---|---|",
        *[f"| {step} | {value:.3f} |" for step, value in record["exact_match"]],
        "",
        "| step | mean reward | answer | format | completion tokens |",
        "|---|---|---|---|---|",
        *[
            f"| {step} | {value:.3f} | {answer:.3f} | {fmt:.3f} | {length:.1f} |"
            for (step, value), (_, answer), (_, fmt), (_, length) in zip(
                record["reward"],
                record["answer_reward"],
                record["format_reward"],
                record["completion_length"],
                strict=False,
            )
        ],
        "",
    ]
    (RESULTS / f"grpo_arithmetic{tag}.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
