"""`llmkit audit`: the data audit of a recipe's splits, read exactly as training reads them.

The recipe is loaded and its data read and checked as `llmkit validate` does (``load_recipe``,
``load_splits``, the task's ``check_data``); the task names the columns to compare (``Task.audit_columns``)
and ``llmkit.data.audit`` does the counting. Label-noise suspects come from confident learning (cleanlab's
``find_label_issues``) on out-of-fold probabilities of two logistic regressions, one on sentence embeddings
(the recipe's model, mean-pooled, or ``--noise-model``) and one on TF-IDF n-grams of the same texts,
averaged; with ``--noise-finetune``, a third from a short k-fold fine-tune of that model
(``llmkit.training.out_of_fold``) joins the average. On a run folder, the counterfactual bias probe
(``llmkit.inference.bias``) runs its model on the evaluation rows. Writes ``audit.json`` and ``audit.md``
and returns the terminal summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.data import audit as checks
from llmkit.data.counterfactual import load_terms
from llmkit.data.files import Split, column_values, keep_first_rows, load_splits
from llmkit.inference.bias import BIAS_ROWS, bias_probe
from llmkit.recipe.loader import load_recipe
from llmkit.runs.folder import RECIPE_FILE
from llmkit.tasks import build_task
from llmkit.tasks.base import AuditColumns, Task

AUDIT_FILES = ("audit.json", "audit.md")
#: Training rows the label-noise step embeds at most (the first ones): embedding is its slow part.
NOISE_ROWS = 10_000
NOISE_FOLDS = 5
#: Folds of ``--noise-finetune`` (each a fine-tune of the model: the step's slow part).
FINETUNE_FOLDS = 3
#: Which rows cleanlab flags: "confident_learning" (off the confident joint's diagonal) flags fewer rows than
#: its default "prune_by_noise_rate" and more of them are really mislabelled (benchmarks/audit_noise.py).
NOISE_FILTER = "confident_learning"
#: Inverse regularisation of the two logistic regressions, chosen on the planted-noise benchmark.
EMBEDDING_C = 0.3
NGRAM_C = 3.0
#: Label-noise suspects listed (all are counted).
SUSPECTS = 20
TOKENIZE_BATCH = 1000
INSTALL_AUDIT = "pip install 'llmkit[audit]'"


@dataclass
class AuditResult:
    """What `llmkit audit` found (the content of audit.json), where it wrote it, and its summary lines."""

    report: dict[str, Any]
    folder: Path
    summary: list[str]


def audit(
    recipe: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    output: str | Path | None = None,
    max_rows: int | None = None,
    near: bool = True,
    label_noise: bool = True,
    noise_rows: int = NOISE_ROWS,
    noise_model: str | None = None,
    noise_finetune: bool = False,
    bias_terms: str | Path | None = None,
    bias_rows: int = BIAS_ROWS,
) -> AuditResult:
    """Audit the recipe's splits and write audit.json and audit.md into ``output`` (default: a new folder
    under runs/). ``recipe`` may be a run folder: its saved recipe's data is audited, and the counterfactual
    bias probe runs its model on the evaluation rows (default output: RUN/audit). Raises LlmkitError for bad
    input, as training would."""
    if max_rows is not None and max_rows < 1:
        raise LlmkitError(f"--max-rows {max_rows}: give a positive number of rows per split")
    run = run_folder(recipe)
    if run is not None:
        recipe, output = run / RECIPE_FILE, output if output is not None else run / "audit"
        load_terms(bias_terms)  # a bad term file fails before any check runs
    resolved = load_recipe(recipe, overrides)
    folder = output_folder(output, resolved.output_dir)
    task = build_task(resolved.task, resolved.data, resolved.options)
    splits = load_splits(resolved.data, seed=resolved.training["seed"])
    if max_rows is not None:
        keep_first_rows(splits, dict.fromkeys(splits, max_rows))
    task.check_data(splits)
    columns = task.audit_columns()
    if columns is None:
        raise LlmkitError(
            f"llmkit audit: task {resolved.task} has no texts or labels it can audit yet; the audited tasks "
            f"are classification, token-classification, fill-mask, question-answering and embedding"
        )
    removed = checks.drop_training_rows(splits, resolved.data, columns.texts, resolved.task)
    task.select_training_rows(splits)  # the rows the recipe trains on (data.shots), as finetune keeps them
    started = time.perf_counter()
    tokenizer, unit_note = recipe_tokenizer(resolved, task, splits)
    rows = [audit_rows(split, columns, task, tokenizer) for split in splits.values()]
    unit = "tokens" if tokenizer is not None else "words"
    report = data_checks(rows, columns, resolved.data.get("max_length"), near, unit)
    report["recipe"] = {"source": resolved.source, "task": resolved.task, "model": resolved.model}
    report["splits"] = {
        split.role: {"rows": len(split.dataset), "from": split.location, "streamed": split.stream is not None}
        for split in splits.values()
    }
    report["lengths_note"] = unit_note
    if removed:  # the recipe's data.deduplicate / data.drop_leaks: the audit sees the rows after them
        report["removed_by_recipe"] = removed
    if max_rows is not None:
        report["max_rows"] = max_rows
    report["label_noise"] = label_noise_step(
        rows,
        columns,
        label_noise,
        noise_rows,
        noise_model or resolved.model,
        resolved.training["seed"],
        noise_finetune,
    )
    if run is not None:
        report["bias"] = bias_step(run, splits, bias_terms, bias_rows, resolved.training["seed"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(folder, report)
    return AuditResult(report, folder, summary_lines(report, folder))


def run_folder(recipe: str | Path | dict[str, Any] | None) -> Path | None:
    """``recipe`` as a run folder (one holding a saved recipe.yaml), else None."""
    if isinstance(recipe, str | Path) and Path(recipe).is_dir() and (Path(recipe) / RECIPE_FILE).is_file():
        return Path(recipe)
    return None


def bias_step(
    run: Path, splits: dict[str, Split], terms: str | Path | None, limit: int, seed: int
) -> dict[str, Any]:
    """The counterfactual bias probe on the evaluation rows (validation, else test)."""
    split = splits.get("validation") or splits.get("test")
    if split is None:
        return {"checked": False, "why": "the run's recipe has no validation or test rows"}
    shown = min(limit, len(split.dataset))
    log(f"audit: bias probe ({run}, counterfactuals of the first {shown} {split.role} rows)")
    return bias_probe(run, split, terms, limit, seed)


# -- reading ----------------------------------------------------------------------------------------------
def output_folder(output: str | Path | None, output_dir: str) -> Path:
    """``--output``, or the first free ``runs/<recipe output name>-audit[-N]``; a folder holding files other
    than an earlier audit's is never written into."""
    if output is not None:
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise LlmkitError(f"--output {folder}: is a file; give a folder for audit.json and audit.md")
        foreign = _foreign_files(folder)
        if foreign:
            raise LlmkitError(
                f"--output {folder} holds {foreign[0].name}, not written by llmkit audit; give a new folder"
            )
        return folder
    base = Path("runs") / f"{Path(output_dir).name}-audit"
    folder, number = base, 1
    while _foreign_files(folder) or (folder.exists() and not folder.is_dir()):
        number += 1
        folder = base.with_name(f"{base.name}-{number}")
    return folder


def _foreign_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.name not in AUDIT_FILES)


def recipe_tokenizer(resolved: Any, task: Task, splits: dict[str, Split]) -> tuple[Any, str]:
    """The recipe's tokenizer, so lengths are the tokens training sees; words when it cannot be loaded."""
    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import load_tokenizer
    from llmkit.training.spine import model_folder

    if resolved.scratch is not None:
        return None, "words (model.from_scratch: the tokenizer is trained with the model)"
    try:
        with quiet_library_progress(errors_only=True):
            path = model_folder(resolved, task, splits)
            tokenizer = load_tokenizer(path, trust_remote_code=resolved.model_options["trust_remote_code"])
    except (LlmkitError, OSError, ValueError) as error:
        return None, f"words (the recipe's tokenizer did not load: {str(error).splitlines()[0]})"
    return tokenizer, f"tokens of the recipe's tokenizer ({resolved.model}), special tokens included"


def audit_rows(split: Split, columns: AuditColumns, task: Task, tokenizer: Any) -> checks.AuditRows:
    """One split's keys, texts, labels and lengths, read from the columns the task names."""
    dataset = split.dataset
    present = [column for column in columns.texts if column in dataset.column_names]
    cells = [column_values(dataset, column) for column in present]
    texts = [" | ".join(checks.as_text(cell[i]) for cell in cells) for i in range(len(dataset))]
    keys = checks.row_keys(cells)
    labels = classes = None
    if columns.label and columns.label in dataset.column_names:
        names = _label_names(task)
        raw = column_values(dataset, columns.label)
        if columns.kind == "classes":
            classes = [sorted({names.get(v, v) for v in (value or [])}, key=str) for value in raw]
            labels = [tuple(values) for values in classes]
        else:
            labels = [checks.label_key(names.get(v, v) if columns.kind == "class" else v) for v in raw]
            classes = [[label] for label in labels] if columns.kind == "class" else None
    lengths = text_lengths(cells, tokenizer)
    return checks.AuditRows(split.role, keys, texts, labels, lengths, split.where, classes)


def _label_names(task: Task) -> dict[Any, str]:
    """Class id -> name when the labels are ids that a recipe or dataset names (SST-2's 0/1)."""
    values, names = getattr(task, "labels", []), getattr(task, "label_names", [])
    if len(values) == len(names) and all(isinstance(v, int) for v in values):
        return dict(zip(values, names, strict=True))
    return {}


def text_lengths(cells: list[list[Any]], tokenizer: Any) -> list[int]:
    """Tokens per row (a pair encoded together, as the model receives it), or words without a tokenizer."""
    count = len(cells[0]) if cells else 0
    if tokenizer is None:
        return [sum(len(checks.as_text(cell[i]).split()) for cell in cells) for i in range(count)]
    lengths: list[int] = []
    for start in range(0, count, TOKENIZE_BATCH):
        batch = [[checks.as_text(v) for v in cell[start : start + TOKENIZE_BATCH]] for cell in cells]
        encoded = tokenizer(*batch[:2], truncation=False, verbose=False)["input_ids"]
        lengths += [len(ids) for ids in encoded]
    return lengths


# -- the checks -------------------------------------------------------------------------------------------
def data_checks(
    rows: list[checks.AuditRows], columns: AuditColumns, max_length: int | None, near: bool, unit: str
) -> dict[str, Any]:
    """Every data check, per split and across splits (lengths in ``unit``); the result is JSON-ready."""
    report: dict[str, Any] = {
        "columns": {"texts": list(columns.texts), "label": columns.label, "label_kind": columns.kind},
        "normalisation": "Unicode NFKC, case-folded, whitespace collapsed; a pair's texts joined by a tab",
        "exact_duplicates": {r.role: checks.exact_duplicates(r) for r in rows},
        "contradictions": checks.contradictions(rows),
        "labels": {r.role: checks.label_distribution(r) for r in rows if r.classes is not None},
        "lengths": {r.role: checks.length_report(r, unit, max_length) for r in rows},
        "broken_encodings": {r.role: checks.broken_encodings(r) for r in rows},
    }
    train = next((r for r in rows if r.role == "train"), None)
    if train is not None:
        report["cross_split_copies"] = {
            r.role: checks.cross_split_copies(train, r) for r in rows if r.role != "train"
        }
    if near:
        log("audit: near duplicates (MinHash LSH)")
        report["near_duplicates"] = checks.near_duplicate_report(rows, checks.near_duplicates(rows))
    return report


# -- label noise ------------------------------------------------------------------------------------------
def label_noise_step(
    rows: list[checks.AuditRows],
    columns: AuditColumns,
    enabled: bool,
    limit: int,
    model: str,
    seed: int,
    finetune: bool = False,
) -> dict[str, Any]:
    """Confident learning on the training split, or why it was not run."""
    if columns.kind != "class":
        return {"checked": False, "why": "not checked for this task (single-label classification only)"}
    if not enabled:
        return {"checked": False, "why": "turned off (--no-label-noise)"}
    train = next((r for r in rows if r.role == "train" and r.labels is not None), None)
    if train is None:
        return {"checked": False, "why": "no labelled training split"}
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        return {"checked": False, "why": f"cleanlab is not installed: {INSTALL_AUDIT}"}
    shown = min(limit, len(train.keys))
    log(f"audit: label noise (embeddings of {shown} training rows by {model}, out-of-fold probabilities)")
    texts = train.texts[:limit]
    labels = [str(label) for label in train.labels[:limit]]  # type: ignore[index]
    embedder = load_embedder(model)
    if finetune:
        finetune_encoder(embedder)  # a model it cannot fine-tune fails before the embedding, not after
    vectors = embedder.vectors(texts)
    found = label_suspects(vectors, labels, texts, seed=seed, finetune=embedder if finetune else None)
    found["model"] = model
    found["rows"] = len(texts)
    found["suspects"] = [
        {**train.example(item.pop("index")), **item} for item in found["suspects"][:SUSPECTS]
    ]
    return found


def load_embedder(model: str) -> Any:
    """``model`` as ``llmkit embed`` loads it (a sentence-transformers model, or any encoder with mean
    pooling added: ``llmkit.inference.embed``); its ``vectors`` are unit-length sentence embeddings."""
    from llmkit.inference.embed import load_embedding_model

    return load_embedding_model(model)


def label_suspects(
    vectors: Any,
    labels: list[str],
    texts: list[str] | None = None,
    seed: int = 0,
    folds: int = NOISE_FOLDS,
    filter_by: str = NOISE_FILTER,
    finetune: Any = None,
) -> dict[str, Any]:
    """cleanlab's ``find_label_issues`` on out-of-fold probabilities (``noise_probabilities``); the suspects
    ranked by self-confidence (lowest first), each with its suggested label and that label's probability.
    ``finetune``: an embedding model (``load_embedder``) whose k-fold fine-tune joins the average."""
    import numpy as np
    from cleanlab.filter import find_label_issues

    names = sorted(set(labels))
    ids = np.array([names.index(label) for label in labels])
    folds = min(folds, int(np.bincount(ids).min()))
    if len(names) < 2 or folds < 2:
        return {
            "checked": False,
            "why": "every class needs at least 2 training rows for out-of-fold predictions",
        }
    probabilities = noise_probabilities(vectors, ids, texts, seed, folds)
    if texts is None:
        heads = "a logistic regression on sentence embeddings"
    else:
        heads = "logistic regressions on sentence embeddings and on TF-IDF n-grams"
        if finetune is not None:  # the third source: (embeddings + n-grams + fine-tune) / 3
            tuned_folds = min(FINETUNE_FOLDS, folds)  # folds is already capped by the smallest class
            tuned = finetuned_probabilities(finetune, texts, ids, seed, tuned_folds)
            probabilities = (probabilities * 2 + tuned) / 3
            heads += f" and a {tuned_folds}-fold fine-tune of the model"
        heads += ", averaged"
    ranked = find_label_issues(
        ids, probabilities, filter_by=filter_by, return_indices_ranked_by="self_confidence"
    )
    suggested = probabilities.argmax(axis=1)
    return {
        "checked": True,
        "method": f"cleanlab find_label_issues (filter_by={filter_by}) on {folds}-fold out-of-fold "
        f"probabilities of {heads}",
        "out_of_fold_accuracy": round(float((suggested == ids).mean()), 4),
        "suspect_rows": len(ranked),
        "suspect_share": round(len(ranked) / len(ids), 4),
        "suspects": [
            {
                "index": int(index),
                "given": names[ids[index]],
                "suggested": names[suggested[index]],
                "confidence": round(float(probabilities[index, suggested[index]]), 3),
                "given_probability": round(float(probabilities[index, ids[index]]), 3),
            }
            for index in ranked
        ],
    }


def noise_probabilities(vectors: Any, ids: Any, texts: list[str] | None, seed: int, folds: int) -> Any:
    """Out-of-fold class probabilities: a logistic regression on the embeddings, averaged with one on TF-IDF
    word and character n-grams when the texts are given. The two err on different rows (meaning vs. the
    words themselves), so the average ranks planted noise better than either (benchmarks/audit_noise.py)."""
    probabilities = out_of_fold_probabilities(vectors, ids, EMBEDDING_C, seed, folds)
    if texts is None:
        return probabilities
    ngrams = out_of_fold_probabilities(ngram_features(texts), ids, NGRAM_C, seed, folds)
    return (probabilities + ngrams) / 2


def finetuned_probabilities(
    embedder: Any, texts: list[str], ids: Any, seed: int, folds: int = FINETUNE_FOLDS
) -> Any:
    """Out-of-fold probabilities of the embedding model's encoder fine-tuned on the other folds
    (``llmkit.training.out_of_fold``)."""
    from llmkit.training.out_of_fold import finetuned_out_of_fold_probabilities

    encoder, tokenizer = finetune_encoder(embedder), embedder.model.tokenizer
    return finetuned_out_of_fold_probabilities(encoder, tokenizer, texts, ids, seed, folds)


def finetune_encoder(embedder: Any) -> Any:
    """The transformer encoder inside the embedding model, which ``--noise-finetune`` fine-tunes."""
    body = embedder.model
    encoder = getattr(body[0], "auto_model", None) if len(body) else None
    if encoder is None:
        raise LlmkitError(
            f"--noise-finetune: {embedder.folder} has no transformer encoder to fine-tune; leave the flag "
            f"out or pass an encoder with --noise-model (e.g. minilm-l6)"
        )
    return encoder


def out_of_fold_probabilities(features: Any, ids: Any, c: float, seed: int, folds: int) -> Any:
    """Each row's class probabilities from a logistic regression fitted on the other folds (stratified)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    model = LogisticRegression(C=c, max_iter=2000)
    return cross_val_predict(model, features, ids, cv=splitter, method="predict_proba")


def ngram_features(texts: list[str]) -> Any:
    """TF-IDF of word 1-2-grams and character 2-5-grams (within words), side by side (sparse)."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    characters = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    return hstack([words.fit_transform(texts), characters.fit_transform(texts)]).tocsr()


# -- output -----------------------------------------------------------------------------------------------
def write_outputs(folder: Path, report: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    (folder / "audit.md").write_text("\n".join(markdown_lines(report)) + "\n", encoding="utf-8")


def summary_lines(report: dict[str, Any], folder: Path) -> list[str]:
    """One screen: each split's findings, leakage, contradictions, label noise, and where the files are."""
    lines = [f"audit of {report['recipe']['source']} (task {report['recipe']['task']})"]
    if report.get("removed_by_recipe"):
        lines.append(f"  before the checks, the recipe removed {removed_text(report['removed_by_recipe'])}")
    for role, split in report["splits"].items():
        duplicates = report["exact_duplicates"][role]
        lengths = report["lengths"][role]
        parts = [
            f"{split['rows']} rows",
            f"{duplicates['duplicate_rows']} exact duplicates",
        ]
        near = report.get("near_duplicates", {}).get("within", {}).get(role)
        if near is not None:
            parts.append(f"{near['rows']} rows in {near['groups']} near-duplicate groups")
        contradicting = report["contradictions"].get(role)
        if contradicting is not None:
            parts.append(f"{contradicting['texts']} texts with different labels")
        parts.append(f"{lengths['empty']} empty")
        if "truncated" in lengths:
            parts.append(f"{lengths['truncated']} over max_length {lengths['max_length']}")
        parts.append(f"{report['broken_encodings'][role]['rows']} broken encodings")
        lines.append(f"  {role}: " + ", ".join(parts))
        labels = report["labels"].get(role)
        if labels:
            rare = (
                f", rare (< {checks.RARE_CLASS_ROWS} rows): {', '.join(labels['rare'])}"
                if labels["rare"]
                else ""
            )
            lines.append(f"    {labels['classes']} classes, imbalance {labels['imbalance_ratio']:g}{rare}")
    for role, copies in report.get("cross_split_copies", {}).items():
        near = report.get("near_duplicates", {}).get("across_splits", {}).get(role)
        near_text = f"; {near['train_rows']} more near copies" if near else ""
        lines.append(
            f"  leakage train -> {role}: {copies['train_rows']} training rows copy "
            f"{copies[f'{role}_rows']} {role} rows ({copies[f'{role}_share']:.1%} of {role}){near_text}"
        )
    across = report["contradictions"].get("across_splits")
    if across:
        lines.append(f"  contradictions across splits: {across['texts']} texts")
    noise = report["label_noise"]
    if noise.get("checked"):
        lines.append(
            f"  label noise: {noise['suspect_rows']} suspects in {noise['rows']} training rows "
            f"({noise['suspect_share']:.1%}; out-of-fold accuracy {noise['out_of_fold_accuracy']:.3f})"
        )
    else:
        lines.append(f"  label noise: {noise['why']}")
    bias = report.get("bias")
    if bias is not None and not bias.get("checked"):
        lines.append(f"  bias probe: {bias['why']}")
    elif bias is not None:
        for name, group in bias["groups"].items():
            lines.append(f"  bias probe, {name}: {_flips_text(group)}")
    lines.append(f"lengths in {report['lengths_note']}")
    lines.append(f"wrote {folder / 'audit.md'} and {folder / 'audit.json'} ({report['seconds']:g} s)")
    return lines


def removed_text(removed: dict[str, int]) -> str:
    """What data.deduplicate and data.drop_leaks removed, in words."""
    parts = []
    if "train_duplicates_removed" in removed:
        parts.append(f"{removed['train_duplicates_removed']} repeated training rows (data.deduplicate)")
    if "train_leaks_removed" in removed:
        parts.append(
            f"{removed['train_leaks_removed']} training rows copying an evaluation row (data.drop_leaks)"
        )
    return " and ".join(parts)


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """audit.md: the summary's numbers as tables, with the examples under each finding."""
    from llmkit.core.markdown import table

    lines = [f"# Data audit: {report['recipe']['source']}", ""]
    lines += [
        f"Task {report['recipe']['task']}, model {report['recipe']['model']}. Rows are compared "
        f"after {report['normalisation']}. Lengths are {report['lengths_note']}.",
        "",
    ]
    if report.get("removed_by_recipe"):
        lines += [f"Before the checks, the recipe removed {removed_text(report['removed_by_recipe'])}.", ""]
    lines += ["## Splits", ""]
    rows = []
    for role, split in report["splits"].items():
        dup, lengths, broken = (
            report["exact_duplicates"][role],
            report["lengths"][role],
            report["broken_encodings"][role],
        )
        near = report.get("near_duplicates", {}).get("within", {}).get(role, {})
        rows.append(
            [
                role,
                split["rows"],
                dup["duplicate_rows"],
                near.get("rows", "-"),
                report["contradictions"].get(role, {}).get("texts", "-"),
                lengths["empty"],
                lengths.get("truncated", "-"),
                broken["rows"],
            ]
        )
    lines += table(
        [
            "split",
            "rows",
            "exact duplicates",
            "near-dup rows",
            "contradicting texts",
            "empty",
            "truncated",
            "broken encodings",
        ],
        rows,
    )
    lines += ["", "Exact duplicates count the rows beyond the first of each text.", ""]
    lines += _example_section(
        "Exact duplicates (largest groups)",
        {role: found["examples"] for role, found in report["exact_duplicates"].items()},
    )
    if report.get("cross_split_copies"):
        lines += ["## Leakage: training rows copied in other splits", ""]
        for role, copies in report["cross_split_copies"].items():
            lines.append(
                f"- **{role}**: {copies['train_rows']} training rows copy {copies[f'{role}_rows']} {role} "
                f"rows ({copies[f'{role}_share']:.1%} of {role}; {copies['texts']} distinct texts)"
            )
            lines += [
                f"  - train {e['train']['where']} = {role} {e[role]['where']}: {e['train']['text']!r}"
                for e in copies["examples"]
            ]
        lines.append("")
    lines += _example_section(
        "Same text, different labels",
        {role: found["examples"] for role, found in report["contradictions"].items()},
    )
    near = report.get("near_duplicates")
    if near:
        lines += [
            "## Near duplicates",
            "",
            f"{near['method']}; threshold: estimated Jaccard ≥ {near['threshold']}.",
            "",
        ]
        lines += _example_section(
            "Near-duplicate groups within a split",
            {role: found["examples"] for role, found in near["within"].items()},
            level="###",
        )
        for role, found in near.get("across_splits", {}).items():
            lines.append(
                f"- train near {role}: {found['train_rows']} training rows near "
                f"{found[f'{role}_rows']} {role} rows"
            )
            lines += [
                f"  - train {e['train']['where']} {e['train']['text']!r} ~ "
                f"{role} {e[role]['where']} {e[role]['text']!r}"
                for e in found["examples"]
            ]
        lines.append("")
    if report["labels"]:
        lines += ["## Labels", ""]
        for role, labels in report["labels"].items():
            if not labels:
                continue
            lines.append(
                f"**{role}**: {labels['classes']} classes, imbalance ratio {labels['imbalance_ratio']:g}"
                + (f", rare: {', '.join(labels['rare'])}" if labels["rare"] else "")
            )
            lines += ["", *table(["label", "rows"], [[k, v] for k, v in labels["counts"].items()]), ""]
    lines += ["## Lengths", ""]
    length_rows = [
        [
            role,
            found.get("mean", "-"),
            found.get("median", "-"),
            found.get("p99", "-"),
            found.get("max", "-"),
            found.get("very_short", "-"),
            found.get("very_long", "-"),
            found.get("truncated_share", "-"),
        ]
        for role, found in report["lengths"].items()
    ]
    lines += table(
        [
            "split",
            "mean",
            "median",
            "p99",
            "max",
            f"very short (< {checks.SHORT_UNITS})",
            "very long (> p99)",
            "truncated share",
        ],
        length_rows,
    )
    lines.append("")
    lines += _example_section(
        "Broken encodings", {role: found["examples"] for role, found in report["broken_encodings"].items()}
    )
    lines += ["## Label-noise suspects", ""]
    noise = report["label_noise"]
    if not noise.get("checked"):
        lines += [f"Not checked: {noise['why']}.", ""]
    else:
        lines += [
            f"{noise['method']} ({noise['model']}, first {noise['rows']} training rows): "
            f"{noise['suspect_rows']} suspects ({noise['suspect_share']:.1%}); out-of-fold accuracy "
            f"{noise['out_of_fold_accuracy']:.3f}. "
            f"Most suspect first:",
            "",
        ]
        lines += table(
            ["row", "text", "given", "suggested", "confidence"],
            [[s["where"], s["text"], s["given"], s["suggested"], s["confidence"]] for s in noise["suspects"]],
        )
        lines.append("")
    if "bias" in report:
        lines += bias_lines(report["bias"])
    return lines


def _flips_text(group: dict[str, Any]) -> str:
    if group["flip_rate"] is None:
        return "no evaluation row holds one of its terms"
    low, high = group["interval"]
    return (
        f"{group['flips']} of {group['counterfactuals']} counterfactuals flip the prediction "
        f"({group['flip_rate']:.1%}, 95 % interval {low:.1%}–{high:.1%}; {group['rows_with_terms']} rows)"
    )


def bias_lines(bias: dict[str, Any]) -> list[str]:
    """audit.md's bias-probe section: per group the flip rate with its interval, then examples of flips."""
    from llmkit.core.markdown import table

    lines = ["## Bias probe: counterfactual invariance", ""]
    if not bias.get("checked"):
        return [*lines, f"Not checked: {bias['why']}.", ""]
    lines += [
        f"Identity terms ({bias['terms']}) swapped in column `{bias['column']}` of the first {bias['rows']} "
        f"{bias['split']} rows; a flip is a counterfactual predicted as another class than its row. "
        f"Interval: 95 % bootstrap over rows. Score shift: the mean change of the predicted class's "
        f"probability where the class stayed.",
        "",
    ]
    rows = []
    for name, group in bias["groups"].items():
        interval = group["interval"]
        rows.append(
            [
                name,
                group["rows_with_terms"],
                group["counterfactuals"],
                "–" if group["flip_rate"] is None else f"{group['flip_rate']:.1%}",
                "–" if interval is None else f"{interval[0]:.1%}–{interval[1]:.1%}",
                "–" if group["mean_score_shift"] is None else f"{group['mean_score_shift']:+.4f}",
            ]
        )
    lines += table(["group", "rows", "counterfactuals", "flip rate", "95 % interval", "score shift"], rows)
    lines.append("")
    for name, group in bias["groups"].items():
        if group["examples"]:
            lines += [f"### Flips: {name}", ""]
            lines += table(
                ["row", "text", "counterfactual", "swapped", "prediction", "after the swap"],
                [
                    [
                        e["where"],
                        e["text"],
                        e["counterfactual"],
                        e["swapped"],
                        e["prediction"],
                        e["counterfactual_prediction"],
                    ]
                    for e in group["examples"]
                ],
            )
            lines.append("")
    return lines


def _example_section(title: str, examples: dict[str, list[Any]], level: str = "##") -> list[str]:
    shown = {role: found for role, found in examples.items() if found}
    if not shown:
        return []
    lines = [f"{level} {title}", ""]
    for role, found in shown.items():
        lines.append(f"**{role}**:")
        for example in found:
            group = example if isinstance(example, list) else [example]
            lines.append("- " + "; ".join(_described(item) for item in group))
        lines.append("")
    return lines


def _described(item: dict[str, Any]) -> str:
    where = ", ".join(item["rows"]) if item.get("rows") else item["where"]
    split = f"{item['split']} " if "split" in item else ""
    label = f" [{item['label']}]" if "label" in item else ""
    copies = f"{item['copies']} copies at " if "copies" in item else ""
    return f"{split}{copies}{where}: {item['text']!r}{label}"
