"""QA benchmark: llmkit's SQuAD recipe against a ``run_qa.py``-style plain ``Trainer``, side by side.

One command (from the repo root, ../shared/data beside it):

    OMP_NUM_THREADS=1 python benchmarks/qa_squad.py                                # recipe budget, all of dev
    OMP_NUM_THREADS=1 python benchmarks/qa_squad.py --steps 20 --eval-questions 200  # a short budget

Both contestants train MiniLM-L6 on ../shared/data/squad/train.jsonl (SQuADShifts new_wiki, 7,938
questions; the SQuAD train file could not be had) for the same steps, batch, learning rate, schedule,
weight decay and seed, with windows of 384 tokens and a stride of 128, then answer the first
``--eval-questions`` questions of the official SQuAD v1.1 dev set (a fixed subset: the file's order):

- ``plain Trainer (run_qa.py style)``: ``examples/pytorch/question-answering/run_qa.py`` with its defaults:
  every window padded to max_length (``pad_to_max_length``), ``default_data_collator``, random batches;
  its evaluation post-processing (n-best 20, max_answer_length 30) is llmkit's ``best_span``, so the two
  differ only in how they train and evaluate, not in how a span is picked;
- ``llmkit``: ``recipes/qa-squad.yaml`` with its ``shared data:`` files (dynamic padding, batches grouped by
  length).

Reported: samples/s (training windows per second) and the training loop's wall time (less the learning-curve
evaluations inside it), and dev EM/F1 (SQuAD's official normalisation) with the time the evaluation took.
``--curve 3`` scores llmkit's run at a third, two thirds and all of the steps; ``--plain-stop-at K`` stops the
slower baseline after K steps of the same schedule (its figures are then those at step K), when its full run
does not fit the time there is. Writes benchmarks/results/qa_squad.json and .md (``--tag``: qa_squad-TAG.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from learning_curve import curve_points, curve_settings, curve_text, stop_at, training_seconds

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "squad"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "runs" / "bench-qa"
RECIPE = REPO / "recipes" / "qa-squad.yaml"
# The recipe's settings, repeated for the plain baseline.
BATCH, LEARNING_RATE, WARMUP, WEIGHT_DECAY = 16, 1e-4, 0.1, 0.01
MAX_LENGTH, DOC_STRIDE, N_BEST, MAX_ANSWER_LENGTH = 384, 128, 20, 30


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def plain_trainer(
    steps: int, seed: int, eval_questions: int | None, model_path: Path, stop: int | None = None
) -> dict:
    """run_qa.py's recipe with its defaults: windows padded to max_length, default_data_collator."""
    from datasets import Dataset
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from llmkit.metrics import load_metrics
    from llmkit.tasks.question_answering import best_span

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def windows(batch: dict):
        return tokenizer(
            [question.lstrip() for question in batch["question"]],
            batch["context"],
            truncation="only_second",
            max_length=MAX_LENGTH,
            stride=DOC_STRIDE,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )

    def prepare_train_features(batch: dict) -> dict:
        encoded = windows(batch)
        sample_mapping = encoded.pop("overflow_to_sample_mapping")
        encoded["start_positions"], encoded["end_positions"] = [], []
        for i, offsets in enumerate(encoded.pop("offset_mapping")):
            sequence_ids = encoded.sequence_ids(i)
            answers = batch["answers"][sample_mapping[i]]
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            first = sequence_ids.index(1)
            last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
            if offsets[first][0] > start_char or offsets[last][1] < end_char:
                encoded["start_positions"].append(0)
                encoded["end_positions"].append(0)
                continue
            while first <= last and offsets[first][0] <= start_char:
                first += 1
            while offsets[last][1] >= end_char:
                last -= 1
            encoded["start_positions"].append(first - 1)
            encoded["end_positions"].append(last + 1)
        return encoded

    def prepare_validation_features(batch: dict) -> dict:
        encoded = windows(batch)
        sample_mapping = encoded.pop("overflow_to_sample_mapping")
        encoded["example_id"] = [batch["id"][row] for row in sample_mapping]
        encoded["offset_mapping"] = [
            [
                span if sequence == 1 else (-1, -1)
                for sequence, span in zip(encoded.sequence_ids(i), o, strict=True)
            ]
            for i, o in enumerate(encoded["offset_mapping"])
        ]
        return encoded

    train_rows = Dataset.from_list(read_jsonl(DATA / "train.jsonl"))
    dev_rows = Dataset.from_list(read_jsonl(DATA / "validation.jsonl", eval_questions))
    train = train_rows.map(prepare_train_features, batched=True, remove_columns=train_rows.column_names)
    features = dev_rows.map(prepare_validation_features, batched=True, remove_columns=dev_rows.column_names)
    set_seed(seed)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path)
    args = TrainingArguments(
        output_dir=str(WORK / "plain"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64,
        learning_rate=LEARNING_RATE,
        warmup_steps=WARMUP,
        weight_decay=WEIGHT_DECAY,
        seed=seed,
        save_strategy="no",
        report_to="none",
        logging_steps=max(steps // 4, 1),
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=[stop_at(stop)],
    )
    metrics = trainer.train().metrics
    done = trainer.state.global_step
    metrics["train_samples_per_second"] = done * BATCH / metrics["train_runtime"]
    started = time.perf_counter()
    output = trainer.predict(features.remove_columns(["example_id", "offset_mapping"]))
    start_logits, end_logits = output.predictions[:2]
    best: dict[str, tuple[float, str]] = {}
    contexts = dict(zip(dev_rows["id"], dev_rows["context"], strict=True))
    for i, (example_id, offsets) in enumerate(
        zip(features["example_id"], features["offset_mapping"], strict=True)
    ):
        span = best_span(start_logits[i], end_logits[i], offsets, N_BEST, MAX_ANSWER_LENGTH)
        if span.start is not None and span.score > best.get(example_id, (float("-inf"), ""))[0]:
            best[example_id] = (span.score, contexts[example_id][span.start : span.end])
    predictions = [best.get(example_id, (0.0, ""))[1] for example_id in dev_rows["id"]]
    references = [answers["text"] for answers in dev_rows["answers"]]
    scores = load_metrics("squad").compute(predictions=predictions, references=references)
    metrics.update({"eval_exact_match": scores["exact_match"], "eval_f1": scores["f1"]})
    metrics["eval_runtime"] = time.perf_counter() - started
    return figures(metrics, steps_done=done)


def score_saved(folder: Path, eval_questions: int | None) -> dict:
    """Dev EM/F1 of a saved question-answering folder through llmkit's own evaluation (windows, Trainer
    predictions in the rows' order, the n-best span search): to re-score a model trained earlier."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.metrics import load_metrics
    from llmkit.models.resolve import load_model, load_tokenizer
    from llmkit.tasks.question_answering import EXAMPLE_INDEX, OFFSETS, QuestionAnsweringTask

    dev = read_jsonl(DATA / "validation.jsonl", eval_questions)
    task = QuestionAnsweringTask({**COMMON_DATA_DEFAULTS, **QuestionAnsweringTask.data_defaults})
    tokenizer = load_tokenizer(folder)
    windows = task.encode(Dataset.from_list(dev), tokenizer)
    started = time.perf_counter()
    args = TrainingArguments(
        output_dir=str(WORK / "score"),
        per_device_eval_batch_size=64,
        use_cpu=True,
        report_to="none",
        bf16=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=load_model(task, folder), args=args, processing_class=tokenizer)
    inputs = windows.remove_columns([EXAMPLE_INDEX, OFFSETS, "start_positions", "end_positions"])
    start_logits, end_logits = trainer.predict(inputs).predictions[:2]
    answers, gold = task.answers_for_rows(dev, windows, start_logits, end_logits)
    scores = load_metrics("squad").compute(predictions=answers, references=gold)
    return {
        "folder": str(folder),
        "dev_exact_match": round(scores["exact_match"], 2),
        "dev_f1": round(scores["f1"], 2),
        "dev_eval_s": round(time.perf_counter() - started, 1),
    }


def stop_llmkit_at(step: int | None) -> None:
    """Make llmkit's Trainer stop after ``step`` steps of its schedule, as --plain-stop-at the baseline."""
    if step is None:
        return
    import llmkit.training.spine

    build = llmkit.training.spine.build_trainer

    def build_and_stop(run):
        trainer = build(run)
        trainer.add_callback(stop_at(step))
        return trainer

    llmkit.training.spine.build_trainer = build_and_stop


def llmkit_recipe(steps: int, seed: int, eval_questions: int | None, curve: int = 1) -> dict:
    import llmkit

    line = next(line for line in RECIPE.read_text().splitlines() if line.startswith("# shared data: "))
    files = [
        item.replace("../shared/data", str(REPO.parent / "shared" / "data")) for item in line.split()[3:]
    ]
    started = time.perf_counter()
    result = llmkit.finetune(
        str(RECIPE),
        [
            *files,
            f"data.max_eval_samples={eval_questions or 'null'}",
            f"training.max_steps={steps}",
            f"training.seed={seed}",
            "training.use_cpu=true",
            *[f"training.{key}={value}" for key, value in curve_settings(steps, curve).items()],
            f"output_dir={WORK / 'llmkit'}",
        ],
        overwrite=True,
    )
    metrics = dict(result.metrics)
    metrics["wall_s"] = time.perf_counter() - started
    history = json.loads((result.output_dir / "log_history.json").read_text(encoding="utf-8"))
    points = curve_points(history, "f1")
    done = max(entry.get("step", 0) for entry in history)
    metrics["train_runtime"] = training_seconds(metrics["train_runtime"], points)
    metrics["train_samples_per_second"] = done * BATCH / metrics["train_runtime"]
    return figures(metrics, points, done)


def figures(metrics: dict, curve: list[dict] | None = None, steps_done: int | None = None) -> dict:
    return {
        "steps_done": steps_done,
        "train_runtime_s": round(metrics["train_runtime"], 1),
        "samples_per_second": round(metrics["train_samples_per_second"], 2),
        "dev_exact_match": round(metrics["eval_exact_match"], 2),
        "dev_f1": round(metrics["eval_f1"], 2),
        "dev_eval_s": round(metrics["eval_runtime"], 1),
        "curve": curve or [],
    }


def write_results(results: dict, stem: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    rows = [
        "| contestant | steps done (of the schedule) × batch | train s | samples/s | dev EM | dev F1 | "
        "dev eval s | learning curve (step: F1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["contestants"].items():
        rows.append(
            f"| {name} | {r['steps_done']} ({results['steps']}) × {BATCH} | {r['train_runtime_s']} | "
            f"{r['samples_per_second']} | {r['dev_exact_match']} | {r['dev_f1']} | {r['dev_eval_s']} | "
            f"{curve_text(r['curve'], 'f1')} |"
        )
    questions = results["eval_questions"] or "all 10,570"
    (RESULTS / f"{stem}.md").write_text(
        f"SQuAD v1.1 dev ({questions} questions, file order), MiniLM-L6 trained on SQuADShifts new_wiki, "
        f"{results['machine']}, {results['threads']} thread(s); `{results['command']}`\n\n"
        + "\n".join(rows)
        + "\n",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps for each contestant")
    parser.add_argument(
        "--eval-questions", type=int, default=None, help="score the first N dev questions (default: all)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", choices=["plain", "llmkit"], action="append", default=[])
    parser.add_argument("--curve", type=int, default=1, help="dev scorings (3: at 1/3, 2/3, end)")
    parser.add_argument(
        "--plain-stop-at", type=int, default=None, metavar="K", help="stop the baseline after K steps"
    )
    parser.add_argument(
        "--llmkit-stop-at", type=int, default=None, metavar="K", help="stop llmkit's run after K steps"
    )
    parser.add_argument("--score", type=Path, metavar="FOLDER", help="only re-score a saved QA folder on dev")
    parser.add_argument("--tag", default="", help="write qa_squad-TAG.* instead of qa_squad.*")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()

    import torch

    from llmkit.models.resolve import resolve_model

    torch.set_num_threads(args.threads)
    if args.score:
        print(json.dumps(score_saved(args.score, args.eval_questions)))
        return
    stop_llmkit_at(args.llmkit_stop_at)
    started = time.perf_counter()
    contestants = {}
    if "llmkit" not in args.skip:
        contestants["llmkit (recipes/qa-squad.yaml)"] = llmkit_recipe(
            args.steps, args.seed, args.eval_questions, args.curve
        )
    if "plain" not in args.skip:
        contestants["plain Trainer (run_qa.py style)"] = plain_trainer(
            args.steps, args.seed, args.eval_questions, resolve_model("minilm-l6"), args.plain_stop_at
        )
    results = {
        "steps": args.steps,
        "eval_questions": args.eval_questions,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": " ".join(["OMP_NUM_THREADS=" + str(args.threads), "python", *sys.argv]),
        "wall_s": round(time.perf_counter() - started, 1),
        "contestants": contestants,
    }
    write_results(results, f"qa_squad-{args.tag}" if args.tag else "qa_squad")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
