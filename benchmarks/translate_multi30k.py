"""Multi30k English -> German benchmark for translation: SmolLM2-135M-Instruct zero-shot, then fine-tuned.

One command (from the repo root, ../shared/data beside it):

    python benchmarks/translate_multi30k.py               # the full run: 1,000 test captions, 1,200 steps
    python benchmarks/translate_multi30k.py --test-size 32 --steps 30 --batch 8   # short (docs/results.md)
    python benchmarks/translate_multi30k.py --skip-plain  # llmkit only

1. Zero-shot: SmolLM2-135M-Instruct translates the first ``--test-size`` captions of test_2016_flickr with the
   recipe's prompt in its chat template ("Translate this English text to German:"), greedy, at most
   ``--max-new-tokens`` tokens, stopping at the end of its turn.
2. llmkit: ``recipes/translate-multi30k.yaml`` fine-tunes it on Multi30k train (``--steps`` x ``--batch``,
   ``--lr``; no evaluation during training).
3. Plain Trainer: the same model, steps, batch, learning rate, schedule, seed and precision (what llmkit's
   ``precision: auto`` picks here), written from the transformers docs: the chat template rendered with
   ``apply_chat_template``, the prompt's labels -100, ``DataCollatorForSeq2Seq`` padding, random batches.
4. Every model translates the same captions through the same code (llmkit's decoding: prompt, template,
   batching, stop tokens), and is scored with sacreBLEU's corpus BLEU and chrF (llmkit's metric module).

Writes benchmarks/results/translate_multi30k.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MULTI30K = REPO.parent / "shared" / "data" / "multi30k_en_de"
RESULTS = REPO / "benchmarks" / "results"
RECIPE = REPO / "recipes" / "translate-multi30k.yaml"
WORK = REPO / "runs" / "bench-translate"
#: The recipe reads bentrevett/multi30k from the Hub; the benchmark reads the same captions from here.
TRAIN_FILE = f"data.train={MULTI30K / 'train.jsonl'}"


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:limit]]


def recipe_data(max_new_tokens: int) -> dict:
    """The recipe's data settings (prompt, languages, lengths) as the base model is used with them."""
    from llmkit.recipe.loader import load_recipe

    return load_recipe(str(RECIPE), [TRAIN_FILE, f"data.max_new_tokens={max_new_tokens}"]).data


def score(model_dir: Path, data: dict, captions: list[dict], name: str) -> dict:
    """One model's translations of the captions, their BLEU/chrF against the references, and the wall time."""
    from llmkit.inference.predict import task_with_defaults
    from llmkit.metrics import load_metrics
    from llmkit.models.resolve import check_weights, load_model, load_tokenizer
    from llmkit.tasks.translation import TranslationTask

    started = time.perf_counter()
    task = task_with_defaults(TranslationTask, dict(data))
    task.check_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(task, model_dir, **check_weights(model_dir))
    translations = task.translate(model, tokenizer, [row["en"] for row in captions])
    seconds = time.perf_counter() - started
    scores = load_metrics("translation").compute(
        predictions=translations, references=[row["de"] for row in captions]
    )
    print(f"{name}: BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f} ({seconds:.0f} s)", flush=True)
    return {
        "model": name,
        "bleu": round(scores["bleu"], 2),
        "chrf": round(scores["chrf"], 2),
        "mean_words": round(sum(len(t.split()) for t in translations) / len(translations), 1),
        "generation_wall_s": round(seconds, 1),
        "translations": translations,
    }


def short_run(args: argparse.Namespace) -> list[str]:
    """The training settings both contestants share (recipe overrides), and the same pool of pairs."""
    return [
        f"data.max_train_samples={pool_size(args)}",
        f"training.max_steps={args.steps}",
        f"training.per_device_train_batch_size={args.batch}",
        f"training.learning_rate={args.lr}",
        "training.logging_steps=10",
        f"data.max_new_tokens={args.max_new_tokens}",  # the run report's samples too
    ]


def pool_size(args: argparse.Namespace) -> int:
    """The first training pairs both contestants draw their batches from: twice what the steps see."""
    return args.steps * args.batch * 2


def llmkit_run(args: argparse.Namespace) -> tuple[Path, float, dict]:
    import llmkit

    overrides = [
        TRAIN_FILE,
        *short_run(args),
        "data.validation=null",  # scored below, like the other models
        "data.validation_split=0",
        f"output_dir={WORK / 'llmkit'}",
    ]
    started = time.perf_counter()
    result = llmkit.finetune(str(RECIPE), overrides, overwrite=True)
    return result.output_dir, time.perf_counter() - started, result.metrics


def plain_run(args: argparse.Namespace) -> tuple[Path, float, dict]:
    """What one writes from the transformers docs for chat fine-tuning, with the recipe's settings."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from llmkit.core.devices import choose_precision, probe_machine
    from llmkit.models.resolve import resolve_model
    from llmkit.recipe.loader import load_recipe

    started = time.perf_counter()
    recipe = load_recipe(str(RECIPE), [TRAIN_FILE, *short_run(args)])
    training, data = recipe.training, recipe.data
    model_path = resolve_model(recipe.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompt = data["prompt"].replace("{source_lang}", "English").replace("{target_lang}", "German")

    def encode(row: dict) -> dict:
        messages = [{"role": "user", "content": prompt.replace("{source}", row["en"])}]
        asked = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": row["de"]}], tokenize=False
        )
        prompt_ids = tokenizer(asked, add_special_tokens=False).input_ids
        ids = tokenizer(whole, add_special_tokens=False).input_ids[: data["max_length"]]
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels[: len(ids)]}

    rows = read_jsonl(MULTI30K / "train.jsonl", pool_size(args))
    train = Dataset.from_list(rows).map(encode, remove_columns=["en", "de"])
    set_seed(training["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    # the precision llmkit's `auto` picks on this machine, so both contestants do the same arithmetic
    precision = choose_precision("auto", probe_machine(), "benchmark").precision
    out = WORK / "plain"
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out),
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            learning_rate=float(training["learning_rate"]),
            warmup_steps=training["warmup_steps"],
            weight_decay=training["weight_decay"],
            seed=training["seed"],
            save_strategy="no",
            report_to="none",
            logging_steps=training["logging_steps"],
            disable_tqdm=True,
            bf16=precision == "bf16",
            use_cpu=not torch.cuda.is_available(),
        ),
        train_dataset=train,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    metrics = trainer.train().metrics
    trainer.save_model(str(out))
    return out, time.perf_counter() - started, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-size", type=int, default=1000, help="test_2016 captions scored (first N)")
    parser.add_argument("--steps", type=int, default=1200, help="training steps of each contestant")
    parser.add_argument("--batch", type=int, default=16, help="training batch")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens a translation may take")
    parser.add_argument("--skip-plain", action="store_true", help="no plain-Trainer baseline")
    parser.add_argument("--skip-zero-shot", action="store_true", help="no zero-shot row")
    args = parser.parse_args()

    from llmkit.models.resolve import resolve_model

    captions = read_jsonl(MULTI30K / "test.jsonl", args.test_size)
    data = recipe_data(args.max_new_tokens)
    report: dict = {
        "captions": len(captions),
        "split": "test_2016_flickr (first rows)",
        "max_new_tokens": args.max_new_tokens,
        "training": {"steps": args.steps, "batch": args.batch, "learning_rate": args.lr},
        "rows": [],
    }
    if not args.skip_zero_shot:
        zero = score(resolve_model("smollm2-135m"), data, captions, "SmolLM2-135M-Instruct, zero-shot")
        report["rows"].append({**zero, "training_wall_s": None})
    contestants = [("llmkit (recipe)", llmkit_run)]
    if not args.skip_plain:
        contestants.append(("plain Trainer", plain_run))
    for name, run in contestants:
        folder, seconds, metrics = run(args)
        print(f"{name}: trained in {seconds:.0f} s, train loss {metrics.get('train_loss', float('nan')):.3f}")
        row = score(folder, data, captions, f"fine-tuned, {name}")
        report["rows"].append(
            {**row, "training_wall_s": round(seconds, 1), "train_loss": round(metrics["train_loss"], 4)}
        )
    report["examples"] = [
        {"en": row["en"], "de": row["de"], **{r["model"]: r["translations"][i] for r in report["rows"]}}
        for i, row in enumerate(captions[:3])
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "translate_multi30k.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "translate_multi30k.md").write_text("\n".join(markdown(report)) + "\n", encoding="utf-8")
    print("\n".join(markdown(report)))


def markdown(report: dict) -> list[str]:
    training = report["training"]
    table = [
        f"sacreBLEU on the first {report['captions']} captions of Multi30k test_2016 (greedy, at most "
        f"{report['max_new_tokens']} new tokens); fine-tuning: {training['steps']} steps x "
        f"{training['batch']} pairs, lr {training['learning_rate']}",
        "",
        "| model | BLEU | chrF | mean words | training wall time | generation wall time |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        trained = f"{row['training_wall_s']:.0f} s" if row["training_wall_s"] is not None else "-"
        table.append(
            f"| {row['model']} | {row['bleu']:.2f} | {row['chrf']:.2f} | {row['mean_words']} | {trained} | "
            f"{row['generation_wall_s']:.0f} s |"
        )
    return table


if __name__ == "__main__":
    main()
