"""Cloze benchmark for fill-mask: does adapting MiniLM on Brown make it guess held-out words?

One command (from the repo root, ../shared/data beside it):

    python benchmarks/fill_mask_cloze.py            # trains recipes/fill-mask-brown.yaml, then scores
    python benchmarks/fill_mask_cloze.py --model runs/bench-fill-mask   # score an adapted folder only

1. Brown's documents are split: every 10th document is held out, the rest is written to a training file.
2. The fill-mask-brown recipe trains MiniLM on the training documents only.
3. The cloze set: sentences of the held-out documents, each with one frequent content word (among the 300
   most frequent non-stopwords of the training part that are one MiniLM token) replaced by [MASK].
4. Top-1 / top-5 hit rates of the adapted model and of MiniLM with a freshly initialised MLM head.

Writes benchmarks/results/fill_mask_cloze.json and .md.
"""

from __future__ import annotations

import argparse
import json
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

    predictions = fill_masks(model, tokenizer, [item["text"] for item in items], top_k=5)
    top1 = top5 = 0
    for item, masks in zip(items, predictions, strict=True):
        guesses = [candidate["token"].lower() for candidate in masks[0]]
        top1 += guesses[0] == item["target"]
        top5 += item["target"] in guesses
    return {"top1": top1 / len(items), "top5": top5 / len(items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an adapted fill-mask folder to score (skip training)")
    parser.add_argument(
        "--output-dir", default="runs/bench-fill-mask", help="where training writes the model"
    )
    parser.add_argument("--size", type=int, default=500, help="cloze sentences (at most)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "overrides", nargs="*", help="recipe overrides for training, e.g. training.max_steps=300"
    )
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    import llmkit
    from llmkit.models import resolve_model
    from llmkit.predict import task_with_defaults
    from llmkit.tasks.fill_mask import FillMaskTask
    from llmkit.train import load_model

    documents = brown_documents(BROWN)
    held_out = [s for i, doc in enumerate(documents) if i % 10 == 9 for s in doc]
    train = [s for i, doc in enumerate(documents) if i % 10 != 9 for s in doc]
    work = REPO / "runs" / "bench-data"
    work.mkdir(parents=True, exist_ok=True)
    train_file = work / "brown-train-docs.txt"
    train_file.write_text("\n".join(train) + "\n", encoding="utf-8")

    report: dict = {
        "documents": {"train": len(documents) - len(documents) // 10, "held_out": len(documents) // 10}
    }
    adapted = Path(args.model) if args.model else None
    if adapted is None:
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

    minilm = resolve_model("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    items = build_cloze(held_out, train, tokenizer, args.size, args.seed)
    if len(items) < 300:
        sys.exit(f"only {len(items)} cloze sentences; expected at least 300")
    task = task_with_defaults(FillMaskTask)
    torch.manual_seed(args.seed)
    fresh = load_model(task, minilm)
    report["cloze_sentences"] = len(items)
    report["examples"] = items[:5]
    report["minilm_fresh_head"] = hit_rates(fresh, tokenizer, items)
    report["adapted"] = hit_rates(load_model(task, adapted), AutoTokenizer.from_pretrained(adapted), items)
    report["adapted_model"] = str(adapted)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fill_mask_cloze.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = [
        f"Cloze on {len(items)} sentences from {report['documents']['held_out']} held-out Brown documents",
        "",
        "| model | top-1 | top-5 |",
        "|---|---|---|",
        *(
            f"| {name} | {report[key]['top1']:.1%} | {report[key]['top5']:.1%} |"
            for name, key in (
                ("MiniLM, fresh MLM head", "minilm_fresh_head"),
                ("MiniLM adapted on Brown", "adapted"),
            )
        ),
    ]
    if "training" in report:
        settings = " ".join(args.overrides) or "recipe defaults"
        table += ["", f"Training: {report['training']['wall_seconds']:.0f} s wall ({settings})"]
    (RESULTS / "fill_mask_cloze.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))


if __name__ == "__main__":
    main()
