"""Cloze benchmark for fill-mask: MiniLM adapted on Brown, a BERT pre-trained from scratch on Brown (both
masked LMs) and SmolLM2 zero-shot (causal LM).

One command (from the repo root, ../shared/data beside it):

    python benchmarks/fill_mask_cloze.py            # trains both recipes, then scores all
    python benchmarks/fill_mask_cloze.py --model runs/bench-fill-mask   # score an adapted folder only
    python benchmarks/fill_mask_cloze.py --causal-only --causal-sentences 150   # the SmolLM2 row only
    python benchmarks/fill_mask_cloze.py --scratch-only                 # the from-scratch BERT row only
    python benchmarks/fill_mask_cloze.py --scratch-only --scratch-override training.max_steps=300  # shorter

1. Brown's documents are split: every 10th document is held out, the rest is written to a training file.
2. The fill-mask-brown recipe trains MiniLM on the training documents only; recipes/pretrain-bert-brown.yaml
   pre-trains bert-mini from scratch on the same documents (its tokenizer too), the held-out documents as
   its validation split (``--scratch-override KEY=VALUE`` changes its recipe, e.g. the step budget).
3. The cloze set: sentences of the held-out documents, each with one frequent content word (among the 300
   most frequent non-stopwords of the training part that are one MiniLM token) replaced by [MASK]. The
   from-scratch BERT has its own vocabulary: a target that is not one of its tokens counts as a miss (the
   share that is one token is reported).
4. Top-1 / top-5 hit rates (case-insensitive) of the adapted model, of MiniLM with a freshly initialised
   MLM head, of the from-scratch BERT, and of a causal LM (``--causal``, default smollm2-135m) through
   `llmkit fill-mask`'s causal path. The causal LM is slower, so ``--causal-sentences N`` scores it on the
   first N cloze sentences (a random sample: the set is shuffled); its seconds per sentence are wall-clock on
   ``--threads`` threads, with the machine's load average beside them, and its process CPU seconds.

Writes benchmarks/results/fill_mask_cloze.json and .md; ``--causal-only`` keeps the masked-LM rows of the
existing results and replaces the causal row, ``--scratch-only`` keeps the others and replaces the
from-scratch row. Each training run's wall time, steps and torch threads are recorded beside its row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWN = REPO.parent / "shared" / "data" / "brown" / "brown.txt"
RESULTS = REPO / "benchmarks" / "results"
WORD = re.compile(r"[a-z]+")
# Function words: they are easy to guess and say little about domain knowledge.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just may
    me might more most must my myself no nor not now of off on once only or other ought our ours
    ourselves out over own same shall she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up upon very was we were
    what when where which while who whom why will with would you your yours yourself yourselves one
    two three said mr mrs us many much even back well still
    """.split()  # noqa: SIM905
)


def brown_documents(path: Path) -> list[list[str]]:
    """brown.txt: one sentence a line, a blank line between documents."""
    documents, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.strip())
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def build_cloze(
    held_out: list[str], train: list[str], tokenizer, size: int, seed: int
) -> list[dict[str, str]]:
    counts = Counter(w for sentence in train for w in WORD.findall(sentence.lower()) if w not in STOPWORDS)
    frequent = [
        word for word, _ in counts.most_common(2000) if len(word) >= 3 and tokenizer.tokenize(word) == [word]
    ][:300]
    frequent_set = set(frequent)
    rng = random.Random(seed)
    items = []
    for sentence in held_out:
        words = sentence.split()
        if not 6 <= len(words) <= 40:
            continue
        positions = [i for i, w in enumerate(words) if w.lower() in frequent_set]
        if not positions:
            continue
        position = rng.choice(positions)
        target = words[position].lower()
        masked = " ".join([*words[:position], "[MASK]", *words[position + 1 :]])
        items.append({"text": masked, "target": target})
    rng.shuffle(items)
    return items[:size]


def hit_rates(model, tokenizer, items: list[dict[str, str]]) -> dict[str, float]:
    from llmkit.tasks.fill_mask import fill_masks

    return score(fill_masks(model, tokenizer, [item["text"] for item in items], top_k=5), items)


def score(predictions: list, items: list[dict[str, str]]) -> dict[str, float]:
    """Top-1 / top-5 hit rates of the first mask's guesses, compared case-insensitively."""
    top1 = top5 = 0
    for item, masks in zip(items, predictions, strict=True):
        guesses = [candidate["token"].lower() for candidate in masks[0]]
        top1 += guesses[0] == item["target"]
        top5 += item["target"] in guesses
    return {"top1": top1 / len(items), "top5": top5 / len(items)}


def causal_row(name: str, items: list[dict[str, str]], threads: int) -> dict:
    """Zero-shot cloze with a causal LM, timed: wall and CPU seconds per sentence, and the machine's load."""
    import torch

    from llmkit.inference.fill_mask import (
        DEFAULT_CANDIDATES,
        RIGHT_CONTEXT_TOKENS,
        fill_masks_causal,
        load_causal_filler,
    )
    from llmkit.models.resolve import check_weights, load_tokenizer, resolve_model

    torch.set_num_threads(threads)
    folder = resolve_model(name)
    model = load_causal_filler(folder, name, **check_weights(folder))
    tokenizer = load_tokenizer(folder)
    texts = [item["text"] for item in items]
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    predictions = fill_masks_causal(model, tokenizer, texts, top_k=5, name=name)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "model": name,
        "command": " ".join(["python", "benchmarks/fill_mask_cloze.py", *sys.argv[1:]]),
        **score(predictions, items),
        "sentences": len(items),
        "candidates": DEFAULT_CANDIDATES,
        "right_context_tokens": RIGHT_CONTEXT_TOKENS,
        "threads": threads,
        "wall_seconds_per_sentence": round(wall / len(items), 2),
        "cpu_seconds_per_sentence": round(cpu / len(items), 2),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "guesses": [
            {**item, "top5": [c["token"] for c in masks[0]]}
            for item, masks in zip(items[:8], predictions, strict=False)
        ],
    }


def write_documents(path: Path, documents: list[list[str]]) -> Path:
    """One sentence a line, a blank line between documents (what ``data.txt_unit: paragraph`` reads)."""
    path.write_text("\n\n".join("\n".join(doc) for doc in documents) + "\n", encoding="utf-8")
    return path


def scratch_row(documents: list[list[str]], items: list[dict[str, str]], args) -> dict:
    """Pre-train the from-scratch BERT on the training documents (or score ``--scratch-model``); cloze it."""
    import torch

    import llmkit
    from llmkit.inference.predict import task_with_defaults
    from llmkit.models.resolve import load_model
    from llmkit.tasks.fill_mask import FillMaskTask, fill_masks

    row: dict = {"recipe": "recipes/pretrain-bert-brown.yaml", "overrides": args.scratch_override}
    folder = Path(args.scratch_model) if args.scratch_model else None
    if folder is None:
        work = REPO / "runs" / "bench-data"
        work.mkdir(parents=True, exist_ok=True)
        train = write_documents(
            work / "brown-train-documents.txt", [d for i, d in enumerate(documents) if i % 10 != 9]
        )
        held = write_documents(
            work / "brown-held-out-documents.txt", [d for i, d in enumerate(documents) if i % 10 == 9]
        )
        started = time.perf_counter()
        result = llmkit.finetune(
            row["recipe"],
            [
                f"data.train={train}",
                f"data.validation={held}",
                f"output_dir={args.scratch_output_dir}",
                *args.scratch_override,
            ],
            overwrite=True,
        )
        stats = json.loads((result.output_dir / "run_stats.json").read_text(encoding="utf-8"))
        log = json.loads((result.output_dir / "log_history.json").read_text(encoding="utf-8"))
        row["training"] = {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "steps": max(int(entry.get("step", 0)) for entry in log),
            "torch_threads": torch.get_num_threads(),
            "load_average_after": round(os.getloadavg()[0], 1),
            "metrics": result.metrics,
            "pretraining": stats["pretraining"],
        }
        folder = result.output_dir
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = load_model(task_with_defaults(FillMaskTask), folder)
    row["model"] = str(folder)
    row.update(hit_rates(model, tokenizer, items))
    row["targets_one_token"] = sum(
        tokenizer.tokenize(item["target"]) == [item["target"]] for item in items
    ) / len(items)
    cat = fill_masks(model, tokenizer, ["The cat sat on the [MASK]."], top_k=5)[0][0]
    row["the_cat_sat_on_the"] = [{"token": c["token"], "score": round(c["score"], 3)} for c in cat]
    predictions = fill_masks(model, tokenizer, [item["text"] for item in items[:8]], top_k=5)
    row["guesses"] = [
        {**item, "top5": [c["token"] for c in masks[0]]}
        for item, masks in zip(items, predictions, strict=False)
    ]
    return row


def table(report: dict) -> list[str]:
    rows = [
        ("MiniLM, fresh MLM head", report.get("minilm_fresh_head")),
        ("MiniLM adapted on Brown", report.get("adapted")),
    ]
    scratch = report.get("scratch")
    if scratch:
        rows.append((scratch_label(scratch), scratch))
    causal = report.get("causal")
    lines = [
        f"Cloze on {report['cloze_sentences']} sentences from {report['documents']['held_out']} held-out "
        f"Brown documents",
        "",
        "| model | sentences | top-1 | top-5 | s / sentence |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {report['cloze_sentences']} | {row['top1']:.1%} | {row['top5']:.1%} | — |"
            for name, row in rows
            if row
        ),
    ]
    if causal:
        lines.append(
            f"| {causal['model']}, zero-shot (causal LM, {causal['candidates']} candidates, "
            f"{causal['right_context_tokens']} tokens of right context) | "
            f"{causal['sentences']} | {causal['top1']:.1%} | {causal['top5']:.1%} | "
            f"{causal['wall_seconds_per_sentence']:.1f} wall, {causal['cpu_seconds_per_sentence']:.1f} CPU |"
        )
        lines += [
            "",
            f"{causal['model']}: `{causal['command']}`; {causal['threads']} torch "
            f"thread{'s' if causal['threads'] != 1 else ''}, load average {causal['load_average'][0]} → "
            f"{causal['load_average'][1]} while it ran (other jobs shared the cores); CPU = the process's "
            f"CPU seconds.",
        ]
    if "training" in report:
        settings = " ".join(report["training"]["overrides"]) or "recipe defaults"
        lines += ["", f"MiniLM training: {report['training']['wall_seconds']:.0f} s wall ({settings})"]
    if scratch:
        lines += scratch_lines(scratch)
    return lines


def scratch_lines(scratch: dict) -> list[str]:
    """How the from-scratch BERT was trained (budget, machine, held-out scores, tokenizer), and its cat."""
    answers = ", ".join(f"{c['token']} ({c['score']:.2f})" for c in scratch["the_cat_sat_on_the"])
    lines = ["", f"`The cat sat on the [MASK].` → {answers}"]
    training = scratch.get("training")
    if not training:
        return lines
    built, metrics = training["pretraining"], training["metrics"]
    tokenizer = built["tokenizer"]
    settings = " ".join(scratch["overrides"]) or "recipe defaults"
    scores = f"held-out masked accuracy {metrics.get('eval_masked_accuracy', float('nan')):.1%}"
    if "eval_next_sentence_accuracy" in metrics:
        scores += f", next-sentence accuracy {metrics['eval_next_sentence_accuracy']:.1%}"
    return [
        "",
        f"From-scratch BERT: `{scratch['recipe']}` ({settings}): {built['name']}, "
        f"{built['parameters'] / 1e6:.1f}M parameters, seed {built['init_seed']}; {training['steps']} steps "
        f"in {training['wall_seconds']:.0f} s wall on {training['torch_threads']} torch thread(s) (load "
        f"average {training['load_average_after']} after); {scores}; {tokenizer['type']} tokenizer of "
        f"{tokenizer['vocab_size']:,} tokens trained in {tokenizer['training_seconds']:.1f} s; "
        f"{scratch['targets_one_token']:.1%} of the cloze targets are one of its tokens.",
        *lines,
    ]


def scratch_label(scratch: dict) -> str:
    training = scratch.get("training")
    if not training:
        return f"BERT pre-trained from scratch ({scratch['model']})"
    return (
        f"{training['pretraining']['name']} pre-trained from scratch on Brown ({training['steps']} steps, "
        f"{training['wall_seconds'] / 60:.1f} min)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an adapted fill-mask folder to score (skip training)")
    parser.add_argument(
        "--output-dir", default="runs/bench-fill-mask", help="where training writes the model"
    )
    parser.add_argument("--size", type=int, default=500, help="cloze sentences (at most)")
    parser.add_argument(
        "--cloze-tokenizer",
        default="minilm-l6",
        help="model whose tokenizer picks the one-token cloze targets (a folder with MiniLM's tokenizer "
        "files gives the same set without its weights)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--causal", default="smollm2-135m", help="causal LM for the zero-shot row ('' skips it)"
    )
    parser.add_argument("--causal-sentences", type=int, help="score the causal LM on the first N sentences")
    parser.add_argument(
        "--causal-only", action="store_true", help="only the causal row; keep the saved masked-LM rows"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the causal row")
    parser.add_argument(
        "--scratch-only", action="store_true", help="only the from-scratch BERT row; keep the saved others"
    )
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch BERT row")
    parser.add_argument(
        "--scratch-model", help="a from-scratch fill-mask folder to score (skip its training)"
    )
    parser.add_argument(
        "--scratch-output-dir",
        default="runs/bench-pretrain-bert",
        help="where the from-scratch BERT is saved",
    )
    parser.add_argument(
        "--scratch-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override of recipes/pretrain-bert-brown.yaml (repeatable), e.g. training.max_steps=300",
    )
    parser.add_argument(
        "overrides", nargs="*", help="recipe overrides for training, e.g. training.max_steps=300"
    )
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    import llmkit
    from llmkit.inference.predict import task_with_defaults
    from llmkit.models.resolve import load_model, resolve_model
    from llmkit.tasks.fill_mask import FillMaskTask

    documents = brown_documents(BROWN)
    held_out = [s for i, doc in enumerate(documents) if i % 10 == 9 for s in doc]
    train = [s for i, doc in enumerate(documents) if i % 10 != 9 for s in doc]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.cloze_tokenizer))
    items = build_cloze(held_out, train, tokenizer, args.size, args.seed)
    if len(items) < 300:
        sys.exit(f"only {len(items)} cloze sentences; expected at least 300")

    results_file = RESULTS / "fill_mask_cloze.json"
    if args.causal_only or args.scratch_only:
        report = json.loads(results_file.read_text(encoding="utf-8"))
        if report["cloze_sentences"] != len(items) or report["examples"] != items[:5]:
            sys.exit(
                f"{results_file} was made on another cloze set; run without --causal-only/--scratch-only"
            )
        if args.scratch_only:
            report["scratch"] = scratch_row(documents, items, args)
    else:
        report = {
            "documents": {"train": len(documents) - len(documents) // 10, "held_out": len(documents) // 10}
        }
        adapted = Path(args.model) if args.model else None
        if adapted is None:
            work = REPO / "runs" / "bench-data"
            work.mkdir(parents=True, exist_ok=True)
            train_file = work / "brown-train-docs.txt"
            train_file.write_text("\n".join(train) + "\n", encoding="utf-8")
            started = time.perf_counter()
            result = llmkit.finetune(
                "recipes/fill-mask-brown.yaml",
                [f"data.train={train_file}", f"output_dir={args.output_dir}", *args.overrides],
                overwrite=True,
            )
            report["training"] = {
                "wall_seconds": round(time.perf_counter() - started, 1),
                "overrides": args.overrides,
                "metrics": result.metrics,
            }
            adapted = result.output_dir
        task = task_with_defaults(FillMaskTask)
        torch.manual_seed(args.seed)
        fresh = load_model(task, resolve_model("minilm-l6"))
        report["cloze_sentences"] = len(items)
        report["examples"] = items[:5]
        report["minilm_fresh_head"] = hit_rates(fresh, tokenizer, items)
        adapted_tokenizer = AutoTokenizer.from_pretrained(adapted)
        report["adapted"] = hit_rates(load_model(task, adapted), adapted_tokenizer, items)
        report["adapted_model"] = str(adapted)
        if not args.no_scratch:
            report["scratch"] = scratch_row(documents, items, args)
    if args.causal and not args.scratch_only:
        report["causal"] = causal_row(args.causal, items[: args.causal_sentences], args.threads)

    RESULTS.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = table(report)
    (RESULTS / "fill_mask_cloze.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
