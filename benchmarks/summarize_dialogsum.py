"""DialogSum benchmark for summarization: SmolLM2-135M-Instruct zero-shot, then after a short fine-tune.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/summarize_dialogsum.py                       # zero-shot, train, fine-tuned
    python benchmarks/summarize_dialogsum.py --model runs/bench-summarize   # score a trained folder only
    python benchmarks/summarize_dialogsum.py training.max_steps=100           # other training settings

1. Zero-shot: the first 200 DialogSum validation dialogues are summarized by SmolLM2-135M-Instruct with the
   recipe's prompt in its chat template ("Summarize this dialogue in one or two sentences:"), greedy, at most
   data.max_new_tokens tokens, stopping at the end of its turn.
2. recipes/summarize-dialogsum.yaml fine-tunes it on DialogSum train (short-run settings below; no
   evaluation during training).
3. The fine-tuned folder summarizes the same 200 dialogues through the same code path (prompt, template,
   truncation, decoding from its recipe.yaml), and both are scored with llmkit's ROUGE (F-measures, stemmed).

Writes benchmarks/results/summarize_dialogsum.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum"
RESULTS = REPO / "benchmarks" / "results"
RECIPE = REPO / "recipes" / "summarize-dialogsum.yaml"
#: The recipe reads knkarthick/dialogsum from the Hub; the benchmark reads the same dialogues from here.
TRAIN_FILE = f"data.train={DIALOGSUM / 'train.jsonl'}"
#: The short fine-tune that fits ~15 minutes on 2 CPU cores (docs/results.md).
SHORT_RUN = [
    "training.max_steps=40",
    "training.per_device_train_batch_size=8",
    "training.learning_rate=1e-4",
    "data.max_train_samples=3000",
    "training.logging_steps=5",
]
SCORES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def score(model_dir: Path, task, dialogues: list[dict], model_name: str) -> dict:
    """Summaries of the dialogues by one model, their ROUGE against the references, and the wall time."""
    from llmkit.metrics import load_metrics
    from llmkit.models.resolve import check_weights, load_model, load_tokenizer

    started = time.perf_counter()
    task.check_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(task, model_dir, **check_weights(model_dir))
    summaries = task.summarize(model, tokenizer, [row["dialogue"] for row in dialogues])
    seconds = time.perf_counter() - started
    references = [row["summary"] for row in dialogues]
    rouge = load_metrics("rouge").compute(predictions=summaries, references=references)
    return {
        "model": model_name,
        **{key: round(rouge[key], 4) for key in SCORES},
        "mean_words": round(sum(len(s.split()) for s in summaries) / len(summaries), 1),
        "wall_seconds": round(seconds, 1),
        "summaries": summaries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a fine-tuned summarization folder to score (skip training)")
    parser.add_argument("--output-dir", default="runs/bench-summarize", help="where training writes")
    parser.add_argument("--size", type=int, default=200, help="validation dialogues scored")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for training, after the short run's")
    args = parser.parse_args()

    import yaml

    import llmkit
    from llmkit.inference.predict import task_with_defaults
    from llmkit.inference.summarize import summarization_task_for
    from llmkit.models.resolve import resolve_model
    from llmkit.recipe.loader import load_recipe
    from llmkit.tasks.summarization import SummarizationTask

    lines = (DIALOGSUM / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    dialogues = [json.loads(line) for line in lines[: args.size]]
    report: dict = {"dialogues": len(dialogues), "split": "validation (first rows)"}
    # the base model gets the recipe's data settings (prompt, lengths); a fine-tuned folder its saved ones
    base_task = task_with_defaults(SummarizationTask, load_recipe(str(RECIPE), [TRAIN_FILE]).data)
    report["zero_shot"] = score(
        resolve_model("smollm2-135m"), base_task, dialogues, "SmolLM2-135M-Instruct, zero-shot"
    )

    tuned = Path(args.model) if args.model else None
    if tuned is None:
        overrides = [
            TRAIN_FILE,
            *SHORT_RUN,
            *args.overrides,
            "data.validation=null",  # scored below, like the zero-shot model
            "data.validation_split=0",
            f"output_dir={args.output_dir}",
        ]
        started = time.perf_counter()
        result = llmkit.finetune(str(RECIPE), overrides, overwrite=True)
        seconds = time.perf_counter() - started
        training = yaml.safe_load((result.output_dir / "recipe.yaml").read_text(encoding="utf-8"))["training"]
        report["training"] = {
            "wall_seconds": round(seconds, 1),
            "steps": training["max_steps"],
            "examples_seen": training["max_steps"] * training["per_device_train_batch_size"],
            "overrides": [*SHORT_RUN, *args.overrides],
            "metrics": result.metrics,
        }
        tuned = result.output_dir
    report["fine_tuned"] = score(tuned, summarization_task_for(tuned), dialogues, f"fine-tuned ({tuned})")
    report["examples"] = [
        {
            "dialogue": row["dialogue"],
            "reference": row["summary"],
            "zero_shot": report["zero_shot"]["summaries"][i],
            "fine_tuned": report["fine_tuned"]["summaries"][i],
        }
        for i, row in enumerate(dialogues[:3])
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summarize_dialogsum.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "summarize_dialogsum.md").write_text("\n".join(markdown(report)) + "\n", encoding="utf-8")
    print("\n".join(markdown(report)))


def markdown(report: dict) -> list[str]:
    table = [
        f"ROUGE (F-measure, %) on the first {report['dialogues']} DialogSum validation dialogues",
        "",
        "| model | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | mean words | generation wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ("zero_shot", "fine_tuned"):
        row = report[key]
        scores = " | ".join(f"{100 * row[name]:.1f}" for name in SCORES)
        table.append(f"| {row['model']} | {scores} | {row['mean_words']} | {row['wall_seconds']:.0f} s |")
    if "training" in report:
        training = report["training"]
        metrics = training["metrics"]
        table += [
            "",
            f"Training: {training['steps']} steps ({training['examples_seen']} dialogues), "
            f"{training['wall_seconds']:.0f} s wall, train loss {metrics['train_loss']:.3f} "
            f"({' '.join(training['overrides'])})",
        ]
    return table


if __name__ == "__main__":
    main()
