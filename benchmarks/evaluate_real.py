"""`llmkit evaluate` on the shared real data: issue 30's tables, each with 95 % bootstrap intervals.

    python benchmarks/evaluate_real.py ner            # CoNLL-2003 recipe; test in two CoNLL dialects
    python benchmarks/evaluate_real.py qa             # SQuAD v1.1 dev + held-out SQuADShifts articles
    python benchmarks/evaluate_real.py summarization  # DialogSum recipe vs zero-shot SmolLM2, test
    python benchmarks/evaluate_real.py dpo            # SmolLM2 before / after DPO, held-out HH pairs
    python benchmarks/evaluate_real.py kto            # ... KTO, and orpo: ORPO, at DPO's budget
    python benchmarks/evaluate_real.py goemotions     # a recipe as written, on its test data (recipe rows)
    python benchmarks/evaluate_real.py stsb           # ... STS-B dev; sst2: SST-2 dev
    python benchmarks/evaluate_real.py embedding-sts  # STS-B bi-encoder vs the untrained MiniLM, test
    python benchmarks/evaluate_real.py embedding-retrieval   # SQuAD question -> context, vs untrained
    python benchmarks/evaluate_real.py ner --steps 300 --rows 500   # shorter, for a quick look
    python benchmarks/evaluate_real.py goemotions --set training.learning_rate=2e-4   # any recipe override
    python benchmarks/evaluate_real.py instruct-alpaca --steps 100   # any recipe with shared data: trained on
                                                    # it, scored on its test (else validation) file

Each part trains with ``llmkit finetune RECIPE`` and the recipe's ``# shared data:`` files (plus the
shortening overrides it prints), then runs ``llmkit evaluate`` exactly as a user would, from the command
line. The run folders and evaluations go to runs/evaluate-real/; the tables (evaluate's own evaluation.md,
under the commands that made them) to benchmarks/results/evaluate_real-PART.md and .json.
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WORK = REPO / "runs" / "evaluate-real"
RESULTS = REPO / "benchmarks" / "results"
#: Trained without a validation pass: the models are scored by `llmkit evaluate` afterwards.
NO_VALIDATION = ["data.validation=null", "data.validation_split=0"]
#: --reuse-run: a part's finished run is scored again, not trained again.
REUSE = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recipes = sorted(path.stem for path in (REPO / "recipes").glob("*.yaml") if shared_line(path))
    parser.add_argument(
        "part",
        choices=[*sorted(PARTS), *recipes],
        help="a part (its own files and comparisons) or any recipe with shared data (its own files)",
    )
    parser.add_argument("--steps", type=int, help="training steps (default: the part's own)")
    parser.add_argument("--rows", type=int, help="rows scored per file (default: the part's own)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--no-predictions", action="store_true", help="evaluate --no-predictions: scores only (faster)"
    )
    parser.add_argument("--tag", default="", help="suffix of the results files and recipe rows' run folders")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override (recipe rows)"
    )
    parser.add_argument(
        "--reuse-run", action="store_true", help="score the part's finished run again instead of training"
    )
    options = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"no shared data at {SHARED}: this benchmark scores the real data sets")
    WORK.mkdir(parents=True, exist_ok=True)
    global REUSE
    REUSE = options.reuse_run
    log: list[dict] = []
    started = time.perf_counter()
    PARTS.get(options.part, any_recipe)(options, log)
    write_results(options.part + options.tag, log, time.perf_counter() - started)


# -- the parts ------------------------------------------------------------------------------------
def ner(options: argparse.Namespace, log: list[dict]) -> None:
    """The recipe as written (1,300 steps unless --steps); CoNLL-2003 test as shipped (word POS chunk NER,
    space-separated, -DOCSTART- lines) and rewritten in the two-column tab-separated dialect of WNUT-style
    files (word<TAB>tag, no document lines): the reader must give the same rows, so the same scores."""
    run = WORK / "ner"
    steps = [f"training.max_steps={options.steps}"] if options.steps else []
    finetune("recipes/ner-conll2003.yaml", run, steps, log)
    test = SHARED / "conll2003" / "test.txt"
    two_column = WORK / "conll2003-test-2col.conll"
    write_two_column(test, two_column)
    rows = options.rows or 3453
    evaluate([run], test, rows, options, log)
    evaluate([run], two_column, rows, options, log)


def qa(options: argparse.Namespace, log: list[dict]) -> None:
    """Trained on SQuADShifts new_wiki minus 20 of its articles (held out whole: no article is in both);
    scored on the first N SQuAD v1.1 dev questions and N questions of the held-out articles."""
    train, held_out = split_by_article(SHARED / "squad" / "train.jsonl", held_out_articles=20, seed=0)
    run = WORK / "qa"
    finetune(
        "recipes/qa-squad.yaml",
        run,
        [f"data.train={train}", f"training.max_steps={options.steps or 300}"],
        log,
    )
    rows = options.rows or 1000
    evaluate([run], SHARED / "squad" / "validation.jsonl", rows, options, log)
    evaluate([run], held_out, rows, options, log)


def summarization(options: argparse.Namespace, log: list[dict]) -> None:
    """The DialogSum recipe shortened (default 40 steps of 8 dialogues) against zero-shot
    SmolLM2-135M-Instruct with the recipe's own prompt, both on the first N DialogSum test dialogues
    (scored against the first of their three reference summaries)."""
    overrides = [f"training.max_steps={options.steps or 40}", "training.learning_rate=1e-4"]
    test = SHARED / "dialogsum" / "test.jsonl"
    run_beside_base("summarize-dialogsum", overrides, test, ["data.summary=summary1"], options, log)


def dpo(options: argparse.Namespace, log: list[dict]) -> None:
    """The DPO recipe shortened (default 40 steps of 4 pairs) on HH-RLHF harmless-base train; SmolLM2 before
    (the base model: its own reference, so rewards are 0 by construction; its log-probabilities still say
    which reply it prefers) and after, on the first N held-out test pairs."""
    preference_beside_base("dpo-hh", options, log)


def kto(options: argparse.Namespace, log: list[dict]) -> None:
    """KTO (``recipes/kto-hh.yaml``: each pair unpaired into a desirable and an undesirable row) at DPO's
    budget: the same steps over the same training pairs, scored beside its base on the same test pairs."""
    preference_beside_base("kto-hh", options, log)


def orpo(options: argparse.Namespace, log: list[dict]) -> None:
    """ORPO (``recipes/orpo-hh.yaml``: no reference model) at DPO's budget, beside its base."""
    preference_beside_base("orpo-hh", options, log)


def preference_beside_base(name: str, options: argparse.Namespace, log: list[dict]) -> None:
    """A preference recipe shortened to ``--steps`` (default 40) on the HH-RLHF pairs its steps see (4 pairs a
    step in the DPO, KTO and ORPO recipes: 2 pairs x 2 accumulated; KTO's 4 rows x 2 are both replies of 4
    pairs, data.max_train_samples cutting the file's pairs before they are unpaired), then the base and the
    run scored on the first N test pairs by the same command."""
    steps = options.steps or 40
    # keep only the pairs the steps see, or DPO/KTO precompute the reference log-probs of all 1,801 training
    # pairs before training (hours on 2 cores)
    overrides = [
        f"training.max_steps={steps}",
        f"data.max_train_samples={steps * 4}",
        "training.eval_on_start=false",
        *options.set,
    ]
    run_beside_base(name, overrides, SHARED / "hh_rlhf" / "test.jsonl", [], options, log)


def run_beside_base(
    name: str, overrides: list[str], test: Path, settings: list[str], options: argparse.Namespace, log: list
) -> None:
    """Train the recipe (no validation pass), then score its base model and the run side by side on
    ``test``, both asked as the recipe asks (its task and data settings, then ``settings``)."""
    recipe = f"recipes/{name}.yaml"
    run = WORK / name
    finetune(recipe, run, [*overrides, *NO_VALIDATION], log)
    written = yaml.safe_load((REPO / recipe).read_text(encoding="utf-8"))
    # batched as the run is: preference scores are batch means, resampled by batch, paired across models
    batch = (written.get("training") or {}).get("per_device_eval_batch_size")
    batching = [f"training.per_device_eval_batch_size={batch}"] if batch else []
    # the base scored by the recipe's preference method too: ORPO's reward is the policy's own log-odds, not 0
    method = (written.get("preference") or {}).get("method")
    methods = [f"preference.method={method}"] if method else []
    same = [f"task={written['task']}", *recipe_data(recipe), *batching, *methods, *settings]
    evaluate(["smollm2-135m", run], test, options.rows or 100, options, log, same)


def goemotions(options: argparse.Namespace, log: list[dict]) -> None:
    """The recipe as written (one epoch; each label's threshold chosen on validation), on the 5,427 test
    comments."""
    recipe_row("goemotions-minilm", SHARED / "goemotions" / "test.jsonl", options, log)


def stsb(options: argparse.Namespace, log: list[dict]) -> None:
    """The recipe as written (3 epochs), on STS-B dev (the anchors' split) and test."""
    recipe_row("stsb-minilm", SHARED / "stsb" / "validation.jsonl", options, log)
    evaluate(
        [WORK / f"stsb-minilm{options.tag}"],
        SHARED / "stsb" / "test.jsonl",
        options.rows or 100_000,
        options,
        log,
    )


def embedding_sts(options: argparse.Namespace, log: list[dict]) -> None:
    """The STS-B bi-encoder recipe as written (4 epochs of CoSENT), beside the untrained MiniLM (a
    sentence-transformers model already trained for similarity), on the 1,379 scored STS-B test pairs."""
    beside_untrained("stsb-embedding", SHARED / "stsb" / "test.jsonl", 100_000, options, log)


def embedding_retrieval(options: argparse.Namespace, log: list[dict]) -> None:
    """The SQuAD question -> context recipe (600 steps unless --steps) beside the untrained MiniLM, on the
    first 2,000 SQuAD v1.1 dev questions (unless --rows), each searching those questions' contexts."""
    options.set = ["data.max_eval_samples=2000", *options.set]  # validation: 2,000 questions, their contexts
    beside_untrained("squad-retrieval", SHARED / "squad" / "validation.jsonl", 2_000, options, log)


def beside_untrained(
    name: str, scored: Path, rows: int, options: argparse.Namespace, log: list[dict]
) -> None:
    """Train an embedding recipe on its shared files, then score the recipe's base model and the run side by
    side (paired: the same rows), both reading the file's columns as the recipe does."""
    recipe = f"recipes/{name}.yaml"
    run = WORK / (name + options.tag)
    steps = [f"training.max_steps={options.steps}"] if options.steps else []
    finetune(recipe, run, [*steps, *options.set], log)  # eval_on_start: its validation before and after
    base = yaml.safe_load((REPO / recipe).read_text(encoding="utf-8"))["model"]
    columns = [item for item in shared_data(REPO / recipe) if not item.startswith(FILE_KEYS)]
    evaluate([base, run], scored, options.rows or rows, options, log, [*recipe_data(recipe), *columns])


#: The ``# shared data:`` overrides that name files (the others name columns).
FILE_KEYS = ("data.train=", "data.validation=", "data.test=")


def sst2(options: argparse.Namespace, log: list[dict]) -> None:
    """The recipe as written, on SST-2 dev (872 sentences)."""
    recipe_row("sst2-minilm", SHARED / "sst2" / "dev.tsv", options, log)


def any_recipe(options: argparse.Namespace, log: list[dict]) -> None:
    """A recipe without a part of its own: trained on its shared data, then scored by ``llmkit evaluate`` on
    its shared test file, else its validation file (a recipe with neither keeps its run's own scores)."""
    files = dict(item.split("=", 1) for item in shared_data(REPO / "recipes" / f"{options.part}.yaml"))
    scored = files.get("data.test") or files.get("data.validation")
    if scored is None:
        run = WORK / (options.part + options.tag)
        steps = [f"training.max_steps={options.steps}"] if options.steps else []
        finetune(f"recipes/{options.part}.yaml", run, [*steps, *options.set], log)
        log[-1]["metrics"] = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        return
    recipe_row(options.part, Path(scored), options, log)


def recipe_row(name: str, scored: Path, options: argparse.Namespace, log: list[dict]) -> None:
    """A row of the recipe table in docs/results.md: the recipe on its shared data (``--steps``/``--set``
    change it), then ``llmkit evaluate`` on ``scored``."""
    run = WORK / (name + options.tag)
    steps = [f"training.max_steps={options.steps}"] if options.steps else []
    finetune(f"recipes/{name}.yaml", run, [*steps, *options.set], log)
    evaluate([run], scored, options.rows or 100_000, options, log)


PARTS = {
    "ner": ner,
    "qa": qa,
    "summarization": summarization,
    "dpo": dpo,
    "kto": kto,
    "orpo": orpo,
    "goemotions": goemotions,
    "stsb": stsb,
    "sst2": sst2,
    "embedding-sts": embedding_sts,
    "embedding-retrieval": embedding_retrieval,
}


# -- steps ----------------------------------------------------------------------------------------
def finetune(recipe: str, run: Path, overrides: list[str], log: list[dict]) -> None:
    """``llmkit finetune RECIPE`` with the recipe's documented shared-data files, into ``run``."""
    command = [
        "finetune",
        recipe,
        *shared_data(REPO / recipe),
        *overrides,
        f"output_dir={run}",
        "--overwrite",
    ]
    if REUSE and (run / "metrics.json").exists():
        seconds = json.loads((run / "metrics.json").read_text(encoding="utf-8")).get("train_runtime", 0)
        shown = "llmkit " + " ".join(shlex.quote(relative(a)) for a in command)
        log.append({"command": shown, "seconds": round(seconds, 1), "reused": True})
        print(f"reusing {run} (trained by: {shown})", flush=True)
        return
    llmkit(command, log)


def evaluate(
    models: list[Path | str],
    data: Path,
    rows: int,
    options: argparse.Namespace,
    log: list[dict],
    settings: list[str] = (),
) -> None:
    output = WORK / f"evaluation-{options.part}{options.tag}-{len(log)}-{data.stem}"
    command = [
        "evaluate",
        *map(str, models),
        *settings,
        "--data",
        str(data),
        "--max-samples",
        str(rows),
        "--resamples",
        str(options.resamples),
        "--output",
        str(output),
        *(["--no-predictions"] if options.no_predictions else []),
    ]
    llmkit(command, log, fresh=output)
    log[-1]["evaluation"] = (output / "evaluation.md").read_text(encoding="utf-8")
    log[-1]["metrics"] = json.loads((output / "evaluation.json").read_text(encoding="utf-8"))


def llmkit(arguments: list[str], log: list[dict], fresh: Path | None = None) -> None:
    if fresh is not None and fresh.exists():
        import shutil

        shutil.rmtree(fresh)  # this benchmark's own earlier output
    shown = "llmkit " + " ".join(shlex.quote(relative(a)) for a in arguments)
    print(f"$ {shown}", flush=True)
    began = time.perf_counter()
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "llmkit", *arguments], check=True, cwd=REPO, env=environment)
    log.append({"command": shown, "seconds": round(time.perf_counter() - began, 1)})


def recipe_data(recipe: str) -> list[str]:
    """A recipe's data settings as overrides (columns and sources left out), so a plain model folder scored
    beside the run is asked in the same way: the same prompt, template and lengths."""
    data = yaml.safe_load((REPO / recipe).read_text(encoding="utf-8"))["data"]
    kept = {k: v for k, v in data.items() if k not in ("dataset", "splits", "train", "validation", "test")}
    return [f"data.{key}={json.dumps(value)}" for key, value in kept.items() if value is not None]


def relative(text: str) -> str:
    """Paths as a reader of the results sees them: from the repository root."""
    return text.replace(str(REPO) + "/", "").replace(str(REPO.parent), "..")


def shared_line(recipe: Path) -> str | None:
    """A recipe's ``# shared data:`` comment: its overrides for the files in ../shared/data."""
    lines = recipe.read_text(encoding="utf-8").splitlines()
    return next((line for line in lines if line.startswith("# shared data: ")), None)


def shared_data(recipe: Path) -> list[str]:
    return [item.replace("../shared/data", str(SHARED)) for item in shared_line(recipe).split()[3:]]


def write_two_column(source: Path, target: Path) -> None:
    """CoNLL-2003 (word POS chunk NER) as word<TAB>NER with no -DOCSTART- lines."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        lines.append(f"{fields[0]}\t{fields[-1]}" if fields else "")
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    target.write_text(text.strip("\n") + "\n", encoding="utf-8")


def split_by_article(source: Path, held_out_articles: int, seed: int) -> tuple[Path, Path]:
    """Rows of ``held_out_articles`` random titles to one file, the rest to another (whole articles)."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    titles = sorted({row["title"] for row in rows})
    held = set(random.Random(seed).sample(titles, held_out_articles))
    train, test = WORK / "squadshifts-train.jsonl", WORK / "squadshifts-held-out.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows if r["title"] not in held), encoding="utf-8")
    test.write_text("".join(json.dumps(r) + "\n" for r in rows if r["title"] in held), encoding="utf-8")
    return train, test


def write_results(part: str, log: list[dict], seconds: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end"
    lines = [
        f"# `llmkit evaluate` on real data: {part} (benchmarks/evaluate_real.py)",
        "",
        "    python benchmarks/evaluate_real.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        "",
        f"{machine}; {seconds / 60:.1f} min in all. Commands, as run (wall seconds):",
        "",
        *[
            f"    {entry['command']}    # {entry['seconds']} s{' (training)' * ('reused' in entry)}"
            for entry in log
        ],
    ]
    for entry in log:
        if "evaluation" in entry:
            table = relative(entry["evaluation"]).split("\n## ")[0].replace("# Evaluation", "Evaluation")
            lines += ["", f"## `{entry['command']}`", "", table.strip()]
        elif isinstance(entry.get("metrics"), dict):  # a recipe with no file to score: its run's own scores
            scores = {
                key: value
                for key, value in entry["metrics"].items()
                if key.startswith(("eval_", "test_"))
                and not key.endswith(("_runtime", "_per_second"))
                and isinstance(value, (int, float))
            }
            lines += ["", f"## The run's own scores: `{entry['command']}`", ""]
            lines += ["| metric | value |", "|---|---|", *(f"| {k} | {v:.4g} |" for k, v in scores.items())]
    (RESULTS / f"evaluate_real-{part}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = [{k: v for k, v in entry.items() if k != "evaluation"} for entry in log]
    text = json.dumps({"part": part, "seconds": round(seconds, 1), "steps": record}, indent=2, default=str)
    (RESULTS / f"evaluate_real-{part}.json").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / f'evaluate_real-{part}.md'}")


if __name__ == "__main__":
    main()
