"""Where a MiniLM-L6 training step goes: forward, backward and optimizer time at several sequence lengths.

    python benchmarks/step_profile.py

A batch of 32 random token ids per length: 13 (SST-2's mean, what length-grouped batches approach), 40 (a
random batch of 32 SST-2 sentences padded to its longest) and 128 (padding to max_length). Prints
milliseconds per phase and samples/s; the optimizer is timed as the Trainer's default (fused AdamW) and
as the for-loop AdamW, and with the word-embedding table frozen (its 11.7 M of the 22.7 M weights are
most of the optimizer's work). Writes benchmarks/results/step_profile.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, REPEATS = 32, 10


def profile(
    model, length: int, optimizer_name: str, freeze_word_embeddings: bool, repeats: int = REPEATS
) -> dict[str, float]:
    import torch

    words = model.get_input_embeddings().weight
    words.requires_grad_(not freeze_word_embeddings)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = optimizer_name == "fused AdamW"
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused, foreach=False if not fused else None)
    ids = torch.randint(1000, 20000, (BATCH, length))
    labels = torch.randint(0, 2, (BATCH,))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    totals = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for repeat in range(repeats + 2):
        start = time.perf_counter()
        loss = model(**batch).loss
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        done = time.perf_counter()
        if repeat >= 2:  # the first steps allocate
            totals["forward"] += forward - start
            totals["backward"] += backward - forward
            totals["optimizer"] += done - backward
    words.requires_grad_(True)
    ms = {phase: 1000 * seconds / repeats for phase, seconds in totals.items()}
    ms["samples_per_second"] = BATCH / (sum(ms.values()) / 1000)
    return ms


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options first, so `--help` answers without loading torch or timing anything."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed steps per setting (default 10)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForSequenceClassification

    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import resolve_model

    torch.manual_seed(0)
    with quiet_library_progress():
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm-l6"), num_labels=2)
    model.train()
    rows = [
        "| tokens per row | optimizer | forward ms | backward ms | optimizer ms | samples/s |",
        "|---|---|---|---|---|---|",
    ]
    settings = [
        (13, "fused AdamW", False),
        (13, "for-loop AdamW", False),
        (13, "fused AdamW", True),
        (40, "fused AdamW", False),
        (128, "fused AdamW", False),
    ]
    for length, optimizer_name, frozen in settings:
        ms = profile(model, length, optimizer_name, frozen, args.repeats)
        label = optimizer_name + (", word embeddings frozen" if frozen else "")
        rows.append(
            f"| {length} | {label} | {ms['forward']:.0f} | {ms['backward']:.0f} | {ms['optimizer']:.0f} "
            f"| {ms['samples_per_second']:.0f} |"
        )
        print(rows[-1], flush=True)
    title = f"MiniLM-L6 classifier, batch {BATCH}, {torch.get_num_threads()} threads"
    table = title + "\n\n" + "\n".join(rows) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "step_profile.md").write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
