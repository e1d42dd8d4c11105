"""A GPT pre-trained from scratch on TinyShakespeare: held-out perplexity beside the tiny-gpt2 smoke model's,
and samples.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/pretrain_gpt_shakespeare.py                         # the recipe as it is (~15 min)
    python benchmarks/pretrain_gpt_shakespeare.py training.max_steps=100  # a shorter budget

1. recipes/pretrain-gpt-shakespeare.yaml pre-trains gpt2-mini from scratch, its byte-level BPE too, on the
   speeches of input.txt; 5 % of the speeches (seeded) are held out.
2. The smoke model: tiny-gpt2 (2 layers, width 64, a 512-token BPE trained on llmkit's samples) trained with
   recipes/generation-shakespeare.yaml on the same file and split (``--smoke-steps``, default its own 200
   steps), and tiny-gpt2 as built (random weights).
3. Every model is scored on the same held-out speeches: the tokens of each speech after its first, and the
   end-of-text after it. The models have different tokenizers, so besides each one's perplexity per token
   the table gives bits per character (the same text for all: comparable).
4. Samples: the from-scratch GPT continues three speaker names (sampled, temperature 0.8, top-p 0.95, seeds
   0-2). The recipe joins speeches with end-of-text, so the model has learned what follows one; sampling goes
   on past end-of-text (which `llmkit generate` stops at) and shows it as the blank line it stands for in
   input.txt. Lines that look like a speaker's name (``NAME:`` alone on a line) are counted.

Writes benchmarks/results/pretrain_gpt_shakespeare.json and .md, with each run's wall time, steps, torch
threads and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
RESULTS = REPO / "benchmarks" / "results"
RECIPE = "recipes/pretrain-gpt-shakespeare.yaml"
SMOKE_RECIPE = "recipes/generation-shakespeare.yaml"
PROMPTS = ("ROMEO:\n", "First Citizen:\n", "KING RICHARD III:\n")
SPEAKER_LINE = re.compile(r"^[A-Z][A-Za-z' ]*:$", re.MULTILINE)


def train(recipe: str, overrides: list[str]) -> dict:
    """Run a recipe on input.txt; its folder, wall time, steps and final metrics."""
    import torch

    import llmkit

    started = time.perf_counter()
    result = llmkit.finetune(recipe, [f"data.train={SHAKESPEARE}", *overrides], overwrite=True)
    log = json.loads((result.output_dir / "log_history.json").read_text(encoding="utf-8"))
    stats = json.loads((result.output_dir / "run_stats.json").read_text(encoding="utf-8"))
    return {
        "recipe": recipe,
        "overrides": overrides,
        "folder": str(result.output_dir),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "steps": max(int(entry.get("step", 0)) for entry in log),
        "torch_threads": torch.get_num_threads(),
        "load_average_after": round(os.getloadavg()[0], 1),
        "metrics": result.metrics,
        "pretraining": stats.get("pretraining"),
    }


def held_out_speeches(overrides: list[str]) -> list[str]:
    """The validation speeches of the from-scratch recipe (the smoke recipe carves the same ones)."""
    from llmkit.data.files import load_splits
    from llmkit.recipe.loader import load_recipe

    recipe = load_recipe(RECIPE, [f"data.train={SHAKESPEARE}", *overrides, "data.max_eval_samples=null"])
    return load_splits(recipe.data, seed=recipe.training["seed"])["validation"].dataset["text"]


def held_out_scores(folder: str, speeches: list[str]) -> dict:
    """Negative log-likelihood of each speech's tokens after the first (and the end-of-text after it)."""
    import torch

    from llmkit.models.resolve import load_tokenizer
    from llmkit.tasks.causal_lm import load_causal_lm

    tokenizer = load_tokenizer(Path(folder))
    model = load_causal_lm(Path(folder)).eval()
    context = model.config.max_position_embeddings
    total = tokens = characters = 0.0
    with torch.no_grad():
        for speech in speeches:
            ids = [*tokenizer(speech, add_special_tokens=False).input_ids, tokenizer.eos_token_id][:context]
            first = tokenizer.decode(ids[:1])
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
            tokens += len(ids) - 1
            characters += len(tokenizer.decode(ids, skip_special_tokens=True)) - len(first) + 1  # + the end
    return {
        "speeches": len(speeches),
        "tokens": int(tokens),
        "perplexity_per_token": round(math.exp(total / tokens), 2),
        "bits_per_character": round(total / characters / math.log(2), 3),
    }


def samples(folder: str, max_new_tokens: int) -> list[dict]:
    """Sampled continuations that run past end-of-text (shown as a blank line between speeches)."""
    import torch
    from transformers import set_seed

    from llmkit.models.resolve import load_tokenizer
    from llmkit.tasks.causal_lm import load_causal_lm

    tokenizer = load_tokenizer(Path(folder))
    model = load_causal_lm(Path(folder)).eval()
    model.generation_config.eos_token_id = None  # do not stop at the end of a speech
    made = []
    for seed, prompt in enumerate(PROMPTS):
        set_seed(seed)
        ids = torch.tensor([tokenizer(prompt).input_ids])
        with torch.no_grad():
            output = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                top_k=0,
                pad_token_id=tokenizer.eos_token_id,
            )
        text = tokenizer.decode(output[0]).replace(tokenizer.eos_token, "\n\n")
        lines = len(SPEAKER_LINE.findall(text))
        made.append({"prompt": prompt, "seed": seed, "text": text, "speaker_lines": lines})
    return made


def table(report: dict) -> list[str]:
    scratch, smoke = report["scratch"], report.get("smoke")
    rows = [("scratch", f"{scratch['pretraining']['name']} from scratch", scratch)]
    if smoke:
        rows.append(("smoke", "tiny-gpt2 smoke model (generation-shakespeare recipe)", smoke))
    rows.append(("untrained", "tiny-gpt2 as built (random weights)", None))
    lines = [
        f"Held-out: {report['scores']['scratch']['speeches']} TinyShakespeare speeches (5 % of input.txt, "
        f"seed 42)",
        "",
        "| model | parameters | training | held-out tokens | perplexity / token | bits / character |",
        "|---|---|---|---|---|---|",
    ]
    for key, name, run in rows:
        scores = report["scores"][key]
        training = "none"
        if run:
            training = (
                f"{run['steps']} steps, {run['wall_seconds'] / 60:.1f} min wall on {run['torch_threads']} "
                f"thread(s)"
            )
        parameters = f"{report['parameters'][key] / 1e6:.2f}M"
        lines.append(
            f"| {name} | {parameters} | {training} | {scores['tokens']:,} | "
            f"{scores['perplexity_per_token']:.1f} | {scores['bits_per_character']:.2f} |"
        )
    built = scratch["pretraining"]
    tokenizer = built["tokenizer"]
    lines += [
        "",
        f"From scratch: `{scratch['recipe']}` ({' '.join(scratch['overrides']) or 'recipe defaults'}), seed "
        f"{built['init_seed']}; {tokenizer['type']} tokenizer of {tokenizer['vocab_size']:,} tokens trained "
        f"in {tokenizer['training_seconds']:.1f} s; load average {scratch['load_average_after']} after "
        f"training (other jobs shared the 2 cores). The run's own eval_perplexity: "
        f"{scratch['metrics'].get('eval_perplexity', float('nan')):.1f}.",
        "",
        "Samples (temperature 0.8, top-p 0.95; the prompt is the speaker's name; end-of-text shown as a "
        "blank line, sampling goes on past it):",
        "",
    ]
    for sample in report["samples"]:
        lines += [
            f"Seed {sample['seed']}, {sample['speaker_lines']} speaker line(s):",
            "",
            "```text",
            sample["text"].rstrip(),
            "```",
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/bench-pretrain-gpt")
    parser.add_argument(
        "--smoke-steps", type=int, help="steps of the tiny-gpt2 smoke run (default: its recipe's)"
    )
    parser.add_argument("--no-smoke", action="store_true", help="skip training the tiny-gpt2 smoke model")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument(
        "overrides", nargs="*", help="overrides of the from-scratch recipe, e.g. training.max_steps=100"
    )
    args = parser.parse_args()

    from llmkit.models.resolve import resolve_model

    report: dict = {"scratch": train(RECIPE, [f"output_dir={args.output_dir}", *args.overrides])}
    if not args.no_smoke:
        steps = [f"training.max_steps={args.smoke_steps}"] if args.smoke_steps else []
        report["smoke"] = train(SMOKE_RECIPE, ["model=tiny-gpt2", "output_dir=runs/bench-tiny-gpt2", *steps])
    speeches = held_out_speeches(args.overrides)
    folders = {"scratch": report["scratch"]["folder"], "untrained": str(resolve_model("tiny-gpt2"))}
    if "smoke" in report:
        folders["smoke"] = report["smoke"]["folder"]
    report["scores"] = {name: held_out_scores(folder, speeches) for name, folder in folders.items()}
    report["parameters"] = {name: parameter_count(folder) for name, folder in folders.items()}
    report["samples"] = samples(report["scratch"]["folder"], args.max_new_tokens)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pretrain_gpt_shakespeare.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )
    lines = table(report)
    (RESULTS / "pretrain_gpt_shakespeare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def parameter_count(folder: str) -> int:
    from llmkit.tasks.causal_lm import load_causal_lm

    return sum(parameter.numel() for parameter in load_causal_lm(Path(folder)).parameters())


if __name__ == "__main__":
    main()
