"""The `llmkit` command: a thin Typer layer over the Python API.

Only typer is imported at start-up; torch/transformers/datasets load inside the commands, so
`llmkit --help` answers at once. Errors the user can fix print one line and exit with code 2
(set LLMKIT_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmkit.core.errors import LlmkitError

app = typer.Typer(
    name="llmkit",
    help="Fine-tune Hugging Face models from YAML recipes, offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: importing rich costs ~0.2 s on every `--help`
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C (128 + SIGINT)


def recipe_and_overrides(recipe: str | None, overrides: list[str] | None) -> tuple[str | None, list[str]]:
    """`llmkit finetune training.max_steps=5` has no recipe, only overrides: the first one is not a file."""
    overrides = list(overrides or [])
    if recipe is not None and "=" in recipe and not Path(recipe).exists():
        return None, [recipe, *overrides]
    return recipe, overrides


@app.command()
def finetune(
    recipe: Annotated[
        str | None,
        typer.Argument(
            help="Recipe YAML file or bundled recipe name (default: MiniLM on the shipped sentiment sample)."
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Dotted KEY=VALUE overrides, e.g. training.max_steps=50 data.train=train.csv",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output_dir.")] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue from this checkpoint folder (default: the last one, if any)."
        ),
    ] = None,
    num_processes: Annotated[
        int, typer.Option("--num-processes", min=1, help="Processes per machine (GPUs, or CPU processes).")
    ] = 1,
    num_machines: Annotated[int, typer.Option("--num-machines", min=1, help="Machines (multi-node).")] = 1,
    machine_rank: Annotated[int, typer.Option("--machine-rank", min=0, help="This machine's rank.")] = 0,
    main_process_ip: Annotated[
        str | None, typer.Option("--main-process-ip", help="Address of rank 0.")
    ] = None,
    main_process_port: Annotated[
        int | None, typer.Option("--main-process-port", help="Port on rank 0.")
    ] = None,
) -> None:
    """Fine-tune a model from a recipe and save it (model, tokenizer, metrics.json, recipe.yaml)."""
    recipe, overrides = recipe_and_overrides(recipe, overrides)
    if resume is not None:
        overrides.append(f"training.resume={resume}")
    if num_processes * num_machines > 1 and "RANK" not in os.environ:
        from llmkit.core.devices import check_sharding, launch
        from llmkit.recipe.loader import load_recipe

        resolved = load_recipe(recipe, overrides)  # a bad recipe fails here once, not in every process
        check_sharding(resolved.training, f"recipe {resolved.source}")
        argv = [
            "finetune",
            *([recipe] if recipe else []),
            *overrides,
            *(["--overwrite"] if overwrite else []),
        ]
        code = launch(
            argv,
            num_processes,
            num_machines=num_machines,
            machine_rank=machine_rank,
            main_process_ip=main_process_ip,
            main_process_port=main_process_port,
        )
        raise typer.Exit(code)
    from llmkit.core.devices import is_main_process
    from llmkit.training.spine import finetune as run_finetune

    try:
        result = run_finetune(recipe, overrides, overwrite=overwrite or None)
    except KeyboardInterrupt as interrupt:  # here: typer turns one escaping a command into a silent 130
        if is_main_process():
            typer.echo(str(interrupt) or "interrupted before training started; nothing was saved", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from interrupt
    if not is_main_process():
        return
    for key, value in result.quality_metrics().items():
        typer.echo(f"{key} = {value}" if isinstance(value, int) else f"{key} = {value:.4f}")
    typer.echo(f"model saved to {result.output_dir}")


@app.command()
def sweep(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or bundled recipe name.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted KEY=VALUE overrides for every trial.", show_default=False),
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", min=1, help="Trials in all; a rerun resumes up to this many.")
    ] = ...,
    space: Annotated[
        Path | None,
        typer.Option("--space", help="YAML: recipe key -> {low, high[, log]} or {choices: [...]}."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Validation metric to optimize, e.g. eval_f1 (default: the task's)."),
    ] = None,
    direction: Annotated[
        str | None,
        typer.Option("--direction", help="maximize or minimize (default: minimize loss-like metrics)."),
    ] = None,
    budget_minutes: Annotated[
        float | None, typer.Option("--budget-minutes", min=0, help="Start no trial after this many minutes.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Sweep folder (default: runs/sweeps/RECIPE).")
    ] = None,
) -> None:
    """Search hyperparameters with Optuna: each trial an llmkit run scored on validation; the same command
    again resumes (DIR/study.db). Writes trials.md, trials.json, trials.png and best_recipe.yaml."""
    from llmkit.training.sweep import sweep as run_sweep

    try:
        result = run_sweep(
            recipe,
            overrides or [],
            trials=trials,
            space=space,
            metric=metric,
            direction=direction,
            budget_minutes=budget_minutes,
            output=output,
        )
    except KeyboardInterrupt as interrupt:
        typer.echo("sweep interrupted; run the same command again to resume it", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from interrupt
    for line in result.table_lines():
        typer.echo(line)
    typer.echo(result.best_line())


@app.command()
def predict(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Folder written by `llmkit finetune` (or an HF folder).")
    ],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV/TSV/JSON/JSONL/Parquet/TXT with the text column(s).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write .jsonl/.csv/.tsv here (default: JSONL on stdout)."),
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="An adapter's base model, when it is not where it was.")
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Classification and NER: add each row's word attributions (integrated gradients; "
            "needs captum).",
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="data.KEY=VALUE: the input's columns when they differ from the training data's, "
            "e.g. data.text=review data.text_pair=response; task=NAME: use the model for another task "
            "(a causal LM zero-shot: task=classification data.verbalizer=... data.prompt=...)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Predict every row of a file: the row as it is plus predictions (predicted_label, predicted_score)."""
    from llmkit.inference.predict import predict_file

    rows = predict_file(model, input, output, base=base, overrides=overrides or [], explain=explain)
    if output is not None:
        typer.echo(f"{len(rows)} predictions written to {output}", err=True)


@app.command()
def evaluate(
    arguments: Annotated[
        list[str],
        typer.Argument(
            help="Models (run folders, model folders, aliases, cached hub ids), then optional KEY=VALUE "
            "settings over their recipes, e.g. data.text=review.",
            show_default=False,
        ),
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Labelled file (or a cached hub dataset id) to score on.")
    ],
    split: Annotated[str | None, typer.Option("--split", help="The split of a hub dataset.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="New folder for the results (default: MODEL/evaluations/...)."),
    ] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Score the first N rows.")] = None,
    resamples: Annotated[
        int, typer.Option("--resamples", help="Bootstrap resamples for the intervals (0: none).")
    ] = 1000,
    slice_by: Annotated[
        list[str] | None,
        typer.Option("--slice-by", help="A column to break the scores down by (repeatable)."),
    ] = None,
    worst: Annotated[int, typer.Option("--worst", help="Worst rows to list in the error analysis.")] = 10,
    length_order: Annotated[
        bool,
        typer.Option(
            "--length-order",
            help="Classification: score rows shortest first (less padding, faster; scores agree with "
            "training's to rounding, not bit for bit: in bf16 a near-tie row can flip).",
        ),
    ] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Classification and NER: the worst rows' word attributions (integrated gradients; "
            "needs captum), in the report and explanations.html.",
        ),
    ] = False,
    predictions: Annotated[
        bool,
        typer.Option(
            "--predictions/--no-predictions",
            help="Write each model's predictions file; --no-predictions: scores only (generation and "
            "preference then skip generating a reply per row, the slow part on a CPU).",
        ),
    ] = True,
) -> None:
    """Score models on a labelled file as training scores validation, with 95% bootstrap intervals, and
    an error analysis (per class / entity type, worst rows, weakest slices)."""
    from llmkit.inference.evaluate import evaluate_models, summary_lines

    models = [a for a in arguments if "=" not in a or Path(a).exists()]
    overrides = [a for a in arguments if a not in models]
    evaluation = evaluate_models(
        models,
        data,
        overrides,
        split=split,
        max_samples=max_samples,
        resamples=resamples,
        output=output,
        slice_by=slice_by or [],
        worst=worst,
        length_order=length_order,
        explain=explain,
        write_predictions=predictions,
    )
    for line in summary_lines(evaluation):
        typer.echo(line)


@app.command()
def validate(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML file or bundled recipe name.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted KEY=VALUE overrides.", show_default=False)
    ] = None,
    examples: Annotated[int, typer.Option("--examples", "-n", min=0, help="Examples to show decoded.")] = 3,
    strict: Annotated[
        bool, typer.Option("--strict/--no-strict", help="A failed chat check is an error (else a warning).")
    ] = True,
) -> None:
    """Check a recipe, its data and model without training: decoded examples, lengths, labels, and for
    chat recipes the pre-flight chat checks (prompt = inference prompt, EOS in the loss, loss share)."""
    recipe, overrides = recipe_and_overrides(recipe, overrides)
    from llmkit.training.validate import validate as run_validate

    for line in run_validate(recipe, overrides, examples=examples, strict=strict):
        typer.echo(line)


@app.command()
def audit(
    recipe: Annotated[
        str | None,
        typer.Argument(help="Recipe YAML file, bundled recipe name, or a run folder (adds the bias probe)."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted KEY=VALUE overrides.", show_default=False)
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Folder for audit.json and audit.md (default: a new runs/NAME-audit)."
        ),
    ] = None,
    max_rows: Annotated[
        int | None, typer.Option("--max-rows", min=1, help="Audit only the first N rows of each split.")
    ] = None,
    near: Annotated[
        bool, typer.Option("--near/--no-near", help="Look for near duplicates (MinHash LSH).")
    ] = True,
    label_noise: Annotated[
        bool,
        typer.Option(
            "--label-noise/--no-label-noise", help="Find label-noise suspects (cleanlab; an extra)."
        ),
    ] = True,
    noise_rows: Annotated[
        int, typer.Option("--noise-rows", min=10, help="Training rows the label-noise step embeds at most.")
    ] = 10_000,
    noise_model: Annotated[
        str | None,
        typer.Option("--noise-model", help="Embedding model for label noise (default: the recipe's model)."),
    ] = None,
    noise_finetune: Annotated[
        bool,
        typer.Option(
            "--noise-finetune",
            help="Label noise: also fine-tune the noise model on 3 folds (finds more; minutes).",
        ),
    ] = False,
    bias_terms: Annotated[
        Path | None,
        typer.Option("--bias-terms", help="YAML file of identity-term groups, added to the shipped ones."),
    ] = None,
    bias_rows: Annotated[
        int, typer.Option("--bias-rows", min=1, help="Evaluation rows the bias probe swaps terms in at most.")
    ] = 1000,
) -> None:
    """Audit a recipe's data as training reads it: exact and near duplicates, train/validation/test copies,
    contradictory labels, label balance, lengths, broken encodings and label-noise suspects; on a run, also
    the counterfactual bias probe of its model."""
    recipe, overrides = recipe_and_overrides(recipe, overrides)
    from llmkit.inference.audit import audit as run_audit

    result = run_audit(
        recipe,
        overrides,
        output=output,
        max_rows=max_rows,
        near=near,
        label_noise=label_noise,
        noise_rows=noise_rows,
        noise_model=noise_model,
        noise_finetune=noise_finetune,
        bias_terms=bias_terms,
        bias_rows=bias_rows,
    )
    for line in result.summary:
        typer.echo(line)


def read_texts(text: str | None, input_file: Path | None) -> list[str]:
    """TEXT, or one text per line from --input FILE, or from stdin (TEXT '-' or piped input)."""
    if text is not None and text != "-":
        return [text]
    if input_file is not None:
        try:
            lines = input_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LlmkitError(
                f"--input {input_file}: cannot be read ({exc}); give a UTF-8 text file"
            ) from None
        source = f"--input {input_file}"
    elif text == "-" or not sys.stdin.isatty():
        lines, source = sys.stdin.read().splitlines(), "standard input"
    else:
        raise LlmkitError("give a TEXT, --input FILE, or pipe texts in on standard input (one per line)")
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise LlmkitError(f"{source} is empty; give one text per line")
    return texts


@app.command("fill-mask")
def fill_mask(
    text: Annotated[
        str | None, typer.Argument(help="Text with [MASK] or <mask> (several allowed); '-' reads stdin.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Masked-LM run/folder, or a causal LM (smollm2-135m, a generation run). "
            "Default: the newest fill-mask run under ./runs, else smollm2-135m.",
        ),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="File with one text per line.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Candidates shown per mask.")] = 5,
    candidates: Annotated[
        int, typer.Option("--candidates", min=1, help="Causal LMs: words proposed and rescored per mask.")
    ] = 50,
    right_context: Annotated[
        int,
        typer.Option(
            "--right-context", min=0, help="Causal LMs: tokens after a mask read when rescoring (0: all)."
        ),
    ] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per text (for scripts).")] = False,
) -> None:
    """Fill the masks in a text: ranked candidates with scores, from a masked LM or a causal LM."""
    import json

    from llmkit.inference.fill_mask import fill_mask as fill

    texts = read_texts(text, input_file)
    _, results = fill(texts, model, top_k=top_k, candidates=candidates, right_context=right_context)
    for source, masks in zip(texts, results, strict=True):
        if as_json:
            typer.echo(json.dumps({"text": source, "masks": masks}, ensure_ascii=False))
            continue
        typer.echo(source)
        for number, ranked in enumerate(masks, start=1):
            label = f"  mask {number}:" if len(masks) > 1 else "  "
            for rank, candidate in enumerate(ranked, start=1):
                prefix = label if rank == 1 else " " * len(label)
                typer.echo(f"{prefix} {rank}. {candidate['token']:<14} {candidate['score']:.3f}")


@app.command()
def answer(
    question: Annotated[str, typer.Argument(help="The question; its answer is a span of the context.")],
    context: Annotated[
        str | None, typer.Option("--context", "-c", help="The text that holds the answer.")
    ] = None,
    context_file: Annotated[
        Path | None, typer.Option("--context-file", "-f", help="Read the context from this UTF-8 file.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Question-answering run or folder (default: the newest one under ./runs)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (for scripts).")] = False,
) -> None:
    """Answer a question from a context: the span of the context, its character offsets and score."""
    import json

    from llmkit.inference.answer import answer as run_answer
    from llmkit.inference.answer import read_context

    result = run_answer(question, read_context(context, context_file), model)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    elif result["answer"]:
        typer.echo(
            f"{result['answer']}  (score {result['score']:.3f}, characters {result['start']}-{result['end']})"
        )
    else:
        typer.echo("(no answer in the context)")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="Text to continue (or, with --chat, a user message).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Causal LM folder or alias (smollm2-135m, tiny-gpt2).")
    ] = "smollm2-135m",
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: keep this much probability mass.")] = 0.9,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest tokens; 0 = no limit.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same text).")] = 0,
    repetition_penalty: Annotated[
        float | None,
        typer.Option(
            help="Above 1 makes tokens already in the text less likely (1.2 breaks loops); "
            "default: a run's data.repetition_penalty, else 1 (none)."
        ),
    ] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Format the prompt with the chat template.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object, no streaming.")] = False,
) -> None:
    """Generate text with a causal LM, streamed to the terminal as it is produced."""
    import json

    from llmkit.inference.generate import SamplingSettings, as_json_record
    from llmkit.inference.generate import generate as run_generate

    settings = SamplingSettings(max_new_tokens, temperature, top_p, top_k, seed, repetition_penalty)
    result = run_generate(prompt, model, sampling=settings, chat=chat, stream=None if as_json else sys.stdout)
    if as_json:
        typer.echo(json.dumps(as_json_record(result, prompt, model), ensure_ascii=False))


@app.command()
def summarize(
    text: Annotated[
        str | None, typer.Argument(help="The document to summarize; '-' (or a pipe) reads it from stdin.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Summarization run, model folder or alias "
            "(e.g. smollm2-135m; default: the newest one under ./runs).",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="CSV/JSONL/... with the document column, or .txt (blank-line separated)."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write JSONL here: each input row + its summary.")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens per summary (default: the run's data.max_new_tokens).")
    ] = None,
    num_beams: Annotated[int | None, typer.Option(help="Beam search width (default: the run's).")] = None,
    column: Annotated[
        str | None, typer.Option("--column", help="Document column of --input (default: the run's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout (row + summary).")] = False,
) -> None:
    """Summarize documents with an encoder-decoder or a decoder-only model: one summary per line."""
    from llmkit.inference.summarize import check_output
    from llmkit.inference.summarize import summarize as run_summarize

    check_output(output)
    rows = run_summarize(
        text, input_file, model, max_new_tokens=max_new_tokens, num_beams=num_beams, column=column
    )
    write_generated(rows, output, as_json, "generated_summary", "summaries")


@app.command()
def translate(
    text: Annotated[
        str | None,
        typer.Argument(help="The text to translate; '-' (or a pipe) reads standard input, one text a line."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Translation run, model folder or alias "
            "(e.g. smollm2-135m; default: the newest one under ./runs).",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="CSV/JSONL/... with the source column, or .txt (one text a line)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write JSONL here: each input row + its translation."),
    ] = None,
    source_lang: Annotated[
        str | None,
        typer.Option("--source-lang", "-s", help="Source language, e.g. en (default: the run's)."),
    ] = None,
    target_lang: Annotated[
        str | None,
        typer.Option("--target-lang", "-t", help="Target language, e.g. de (default: the run's)."),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens per translation (default: the run's data.max_new_tokens).")
    ] = None,
    num_beams: Annotated[int | None, typer.Option(help="Beam search width (default: the run's).")] = None,
    column: Annotated[
        str | None, typer.Option("--column", help="Source column of --input (default: the run's).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines on stdout (row + translation).")
    ] = False,
) -> None:
    """Translate texts with an encoder-decoder or a decoder-only model: one translation per line."""
    from llmkit.inference.translate import check_output
    from llmkit.inference.translate import translate as run_translate

    check_output(output)
    rows = run_translate(
        text,
        input_file,
        model,
        source_lang=source_lang,
        target_lang=target_lang,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        column=column,
    )
    write_generated(rows, output, as_json, "generated_translation", "translations")


def write_generated(rows: list[dict], output: Path | None, as_json: bool, key: str, noun: str) -> None:
    """The demos' output: JSONL to --output, else JSON lines (--json) or one generated text a line."""
    import json

    from llmkit.runs.folder import write_jsonl

    if output is not None:
        write_jsonl(output, rows)
        typer.echo(f"{len(rows)} {noun} written to {output}", err=True)
        return
    for row in rows:  # plain: one line per generated text, whatever it contains
        typer.echo(
            json.dumps(row, ensure_ascii=False, default=str) if as_json else " ".join(row[key].split())
        )


@app.command()
def embed(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="CSV/TSV/JSON/JSONL/Parquet/TXT with the text column.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Embedding run, sentence-transformers folder, alias or encoder "
            "(e.g. minilm-l6; default: the newest embedding run under ./runs).",
        ),
    ] = None,
    column: Annotated[str, typer.Option("--column", help="The column to embed.")] = "text",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write .npy (a matrix, a row per input row) or .jsonl (each row + its embedding); "
            "default: JSON lines on stdout.",
        ),
    ] = None,
) -> None:
    """Sentence embeddings of a file's column: unit-length vectors (their dot product is the cosine)."""
    from llmkit.inference.embed import embed_file

    rows, dimensions = embed_file(model, input, column, output)
    if output is not None:
        typer.echo(f"{rows} embeddings of {dimensions} dimensions written to {output}", err=True)


@app.command()
def search(
    queries: Annotated[
        list[str] | None,
        typer.Argument(help="The queries (or --queries FILE, one a line).", show_default=False),
    ] = None,
    corpus: Annotated[
        Path, typer.Option("--corpus", "-c", help="CSV/TSV/JSON/JSONL/Parquet/TXT whose column is searched.")
    ] = ...,  # type: ignore[assignment]
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Embedding run, sentence-transformers folder, alias or encoder "
            "(e.g. minilm-l6; default: the newest embedding run under ./runs).",
        ),
    ] = None,
    column: Annotated[str, typer.Option("--column", help="The corpus column to search.")] = "text",
    queries_file: Annotated[
        Path | None, typer.Option("--queries", "-q", help="A UTF-8 text file of queries, one a line.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Results per query.")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per query: its results with rank, score, line, row.")
    ] = False,
) -> None:
    """Semantic search: the corpus rows most similar to each query (cosine similarity of embeddings)."""
    import json

    from llmkit.inference.embed import search as run_search

    texts = list(queries or [])
    if queries_file is not None:
        texts += read_texts(None, queries_file)
    found = run_search(model, corpus, texts, column=column, top_k=top_k)
    for answer in found:
        if as_json:
            typer.echo(json.dumps(answer, ensure_ascii=False, default=str))
            continue
        typer.echo(answer["query"])
        for hit in answer["results"]:
            text = " ".join(str(hit["row"][column]).split())
            typer.echo(f"  {hit['rank']}. {hit['score']:.4f}  {text[:160]}")


@app.command()
def merge(
    run: Annotated[Path, typer.Argument(help="Output folder of a run trained with a peft: section.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The merged model's folder (default: RUN/merged).")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="The adapter's base model, when it is not where it was.")
    ] = None,
) -> None:
    """Merge a LoRA run's adapter into its base: a plain model folder (config, safetensors, tokenizer)."""
    from llmkit.inference.predict import merge_run
    from llmkit.models.adaptation import MERGED_DIR

    folder = merge_run(run, output or run / MERGED_DIR, base=base)
    typer.echo(f"merged model saved to {folder}")


@app.command()
def export(
    run: Annotated[
        Path, typer.Argument(help="Run folder of a classification or token-classification model.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The new folder for the exported model.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="onnx (onnxruntime), or torch (PyTorch dynamic int8).")
    ] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option("--quantize", "-q", help="int8 (dynamic: int8 weights) or fp16 (ONNX only)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a folder an earlier llmkit export wrote.")
    ] = False,
) -> None:
    """Export a run's model for serving: ONNX (fp32, int8, fp16) or PyTorch int8, with its tokenizer,
    labels, recipe and a model card; `llmkit predict` and `llmkit evaluate` read the folder back."""
    from llmkit.inference.export import export as run_export

    quantize = None if quantize == "none" else quantize
    run_export(run, output, format=format, quantize=quantize, overwrite=overwrite)
    typer.echo(f"exported model saved to {output}")


@app.command()
def data(
    generator: Annotated[
        str, typer.Argument(help="What to generate: arithmetic (word problems with exact integer answers).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl and test.jsonl.")],
    train: Annotated[int, typer.Option("--train", help="Training problems.")] = 1000,
    test: Annotated[int, typer.Option("--test", help="Held-out problems (none of them in train).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="The same seed gives the same problems.")] = 0,
    max_number: Annotated[int, typer.Option("--max-number", help="Largest number in a problem.")] = 20,
) -> None:
    """Write a generated data set shipped with llmkit: seeded train and held-out splits as JSON lines.

    `arithmetic`: one- and two-step word problems ({prompt, answer, expression}) for `task: grpo`, whose
    `answer` and `format` rewards check the final 'Answer: N' line (docs/tasks/grpo.md).
    """
    from llmkit.data.arithmetic import write_splits

    if generator != "arithmetic":
        raise LlmkitError(f"llmkit data {generator}: unknown generator; generators: arithmetic")
    for path in write_splits(out, train, test, seed, max_number):
        typer.echo(str(path))


@app.command()
def report(
    output_dir: Annotated[Path, typer.Argument(help="Output folder of a finished `llmkit finetune` run.")],
) -> None:
    """Regenerate a run's report.md, plots (plots/*.png) and model card (README.md) from its files."""
    from llmkit.runs.report import write_report

    for path in write_report(output_dir):
        typer.echo(str(path))


@app.command()
def env(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (for scripts).")] = False,
) -> None:
    """What a bug report needs: versions, CPU/GPUs, the precision `auto` picks here and why, hub state."""
    import json

    from llmkit.env import environment, report_lines

    facts = environment()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    typer.echo("Copy-and-paste the text below in your bug report:\n")
    for line in report_lines(facts):
        typer.echo(line)


@app.command()
def recipes(
    reference: Annotated[
        bool,
        typer.Option(
            "--reference", help="Print the commented reference recipe: every key with its default, no run."
        ),
    ] = False,
    task: Annotated[
        str, typer.Option("--task", help="The task whose reference --reference prints.")
    ] = "classification",
) -> None:
    """List the bundled recipes (run one with `llmkit finetune NAME`), or print the recipe reference."""
    if reference:
        from llmkit.recipe.reference import recipe_reference

        typer.echo(recipe_reference(task), nl=False)
        return
    from llmkit.recipe.loader import bundled_recipes, recipe_description

    for name, path in bundled_recipes().items():
        typer.echo(f"{name:<22} {recipe_description(path)}")
        typer.echo(f"{'':<22} {path}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2.

    Ctrl-C never reaches here: typer ends a command it interrupts with exit code 130 itself, so `finetune`
    says what was saved where it catches the interrupt.
    """
    try:
        app()
    except LlmkitError as exc:
        if os.environ.get("LLMKIT_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
