"""The recipe x command matrix, generated from recipes/*.yaml (tests/test_recipe_matrix.py runs it).

Each bundled recipe becomes a tiny run of itself: its task, its data columns and file kinds (a few rows the
test writes, never the shared data), its model family (a tiny stand-in) and its own settings, shrunk to
seconds. A new recipe joins the matrix by being in recipes/; a new task or model needs one entry here.
"""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmkit.inference.predict import task_with_defaults
from llmkit.recipe.loader import bundled_recipes
from llmkit.tasks import Task, get_task_class
from tests.conftest import NEGATIVE, POSITIVE

#: The comment line of a recipe that names local files instead of its hub dataset (and their file kinds).
SHARED_DATA_LINE = "# shared data:"
SPLITS = ("train", "validation", "test")
ROWS = {"train": 12, "validation": 4, "test": 4}

#: The recipe's model -> the tiny model of the same family that stands in for it.
STAND_INS = {"minilm-l6": "tiny-bert", "smollm2-135m": "tiny-gpt2"}
#: Stand-ins without a chat template of their own: chat recipes use llmkit's documented template on them.
WITHOUT_CHAT_TEMPLATE = {"tiny-gpt2"}
#: Models whose real weights cost more than seconds to get (a conversion): validated as written only in the
#: slow tier.
COSTLY_MODELS = {"smollm2-135m"}
#: from_scratch sizes shrunk to one narrow layer (the family is the size's prefix), and their vocabularies.
TINY_SCRATCH = {
    "bert": (
        {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
        200,
    ),
    "gpt2": ({"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128}, 400),
}
#: data.* settings shrunk where a recipe has them (lengths, generated tokens, evaluated rows).
TINY_DATA = {
    "max_length": 96,
    "doc_stride": 16,
    "max_prompt_length": 48,
    "max_target_length": 16,
    "max_new_tokens": 4,
    "max_eval_samples": 4,
}
#: A task section's settings shrunk where a recipe has that section (GRPO: 2 completions a prompt, as the tiny
#: batch of 2 holds, and short ones).
TINY_OPTIONS = {"grpo": {"num_generations": 2, "max_completion_length": 4}}
TINY_TRAINING = {
    "max_steps": 2,
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "logging_steps": 1,
    "learning_rate": 1e-3,  # two steps that move the weights enough to tell one run's outputs from another's
}

SENTENCES = [*POSITIVE, *NEGATIVE]
GERMAN = ["ein schöner film", "ich liebe es", "das essen war kalt", "ein langweiliges buch"]


@dataclass
class RecipeCase:
    """One bundled recipe as the matrix runs it."""

    name: str
    path: Path
    raw: dict[str, Any]
    shared_overrides: list[str] = field(default_factory=list)

    @property
    def task(self) -> Task:
        """The recipe's task and data settings (defaults filled in, the shared-data overrides applied)."""
        data = dict(self.raw.get("data") or {})
        for key, value in self.setting_overrides().items():
            data[key.removeprefix("data.")] = value
        return task_with_defaults(get_task_class(self.raw.get("task", "classification")), data)

    @property
    def from_scratch(self) -> str | None:
        model = self.raw.get("model")
        return model.get("from_scratch") if isinstance(model, dict) else None

    @property
    def costly_model(self) -> bool:
        model = self.raw.get("model")
        return isinstance(model, str) and model in COSTLY_MODELS

    @property
    def has_peft(self) -> bool:
        return bool(self.raw.get("peft"))

    @property
    def has_setfit(self) -> bool:
        return self.raw.get("setfit") is not None

    def split_kinds(self) -> dict[str, str]:
        """Split -> file suffix: the shared-data line's files, else the recipe's own data files."""
        kinds = {}
        for key, value in self.file_overrides().items():
            kinds[key.removeprefix("data.")] = Path(value).suffix.lower()
        if not kinds:
            data = self.raw.get("data") or {}
            kinds = {
                split: Path(data[split]).suffix.lower()
                for split in SPLITS
                if isinstance(data.get(split), str)
            }
        if "train" not in kinds:
            raise AssertionError(
                f"recipe {self.path} names no training file (data.train or a '{SHARED_DATA_LINE}')"
            )
        return kinds

    def file_overrides(self) -> dict[str, str]:
        return {key: value for key, value in self.shared_pairs() if key in {f"data.{s}" for s in SPLITS}}

    def setting_overrides(self) -> dict[str, Any]:
        """The shared-data line's other settings (e.g. data.label=score: the files' label column)."""
        return {
            key: yaml.safe_load(value)
            for key, value in self.shared_pairs()
            if key not in self.file_overrides()
        }

    def shared_pairs(self) -> list[tuple[str, str]]:
        """The shared-data line as (key, value) pairs."""
        return [tuple(item.split("=", 1)) for item in self.shared_overrides]  # type: ignore[misc]


def recipe_cases() -> list[RecipeCase]:
    """Every bundled recipe, with its shared-data overrides read from its comment line."""
    cases = []
    for name, path in bundled_recipes().items():
        text = path.read_text(encoding="utf-8")
        shared = next((line for line in text.splitlines() if line.startswith(SHARED_DATA_LINE)), "")
        overrides = shlex.split(shared.removeprefix(SHARED_DATA_LINE))
        cases.append(RecipeCase(name, path, yaml.safe_load(text) or {}, overrides))
    return cases


# -- data in the recipe's own format --------------------------------------------------------------------
def write_data(case: RecipeCase, folder: Path) -> list[str]:
    """Write a few rows per split in the recipe's columns and file kinds; return the data.* overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    task = case.task
    make_rows = ROW_MAKERS.get(task.name)
    if make_rows is None:
        raise AssertionError(
            f"recipe {case.name}: no row maker for task {task.name} in tests/recipe_matrix.py"
        )
    overrides = []
    for split, suffix in case.split_kinds().items():
        count = ROWS[split]
        if split == "train" and task.data.get("shots"):  # data.shots rows of each of the two classes
            count = max(count, 2 * task.data["shots"])
        rows = make_rows(case, task.data, count, offset=SPLITS.index(split))
        path = folder / f"{split}{suffix}"
        write_rows(path, rows, task.name)
        overrides.append(f"data.{split}={path}")
    settings = [f"{key}={value}" for key, value in case.shared_pairs() if key not in case.file_overrides()]
    return overrides + settings  # e.g. data.label=score: the column the files name the label


def sentence(i: int) -> str:
    return SENTENCES[i % len(SENTENCES)]


def classification_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    problem, names = data.get("problem"), data.get("label_names")
    rows = []
    for i in range(count):
        positive = i % 2 == 0
        text = POSITIVE[(i + offset) % 10] if positive else NEGATIVE[(i + offset) % 10]
        if problem == "multi_label":
            pool = names or ["joy", "anger", "neutral"]
            label: Any = [pool[i % len(pool)]] + ([pool[(i + 5) % len(pool)]] if i % 3 == 0 else [])
        elif problem == "regression":
            label = round(4.5 - 4 * (i % 4) / 3, 2) if positive else round(0.5 + (i % 3) / 3, 2)
        elif names:
            label = 1 if positive else 0
        else:
            label = "positive" if positive else "negative"
        row = {data["text"]: text, data["label"]: label}
        if data.get("text_pair"):
            row[data["text_pair"]] = sentence(i + 3)
        rows.append(row)
    return rows


ENTITIES = [("paris", "LOC"), ("london", "LOC"), ("alice", "PER"), ("bob", "PER"), ("acme", "ORG")]


def token_classification_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    rows = []
    for i in range(count):
        entity, kind = ENTITIES[(i + offset) % len(ENTITIES)]
        words = sentence(i + offset).split()
        rows.append({data["tokens"]: [entity, *words], data["tags"]: [f"B-{kind}"] + ["O"] * len(words)})
    return rows


def question_answering_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    rows = []
    for i in range(count):
        entity, _ = ENTITIES[(i + offset) % len(ENTITIES)]
        context = f"{sentence(i)} . the trip went to {entity} in may . {sentence(i + 7)} ."
        rows.append(
            {
                "id": f"q{offset}-{i}",
                "title": "trip",
                data["question"]: "where did the trip go ?",
                data["context"]: context,
                data["answers"]: {"text": [entity], "answer_start": [context.index(f"to {entity}") + 3]},
            }
        )
    return rows


def document_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    """Plain text: documents of a few lines (speeches, Brown's sentences), or instruction rows."""
    if data.get("format") == "instruction" or (
        data.get("format") == "auto" and "instruction" in case.raw["data"]
    ):
        return [
            {
                data["instruction"]: f"say something about: {sentence(i + offset)}",
                data["input"]: "" if i % 2 else sentence(i + 1),
                data["output"]: sentence(i + 2),
            }
            for i in range(count)
        ]
    return [
        {data["text"]: "\n".join(sentence(i * 3 + offset + line) + " ." for line in range(3))}
        for i in range(count)
    ]


def summarization_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    return [
        {
            "id": f"d{offset}-{i}",
            data["document"]: f"#Person1#: {sentence(i)}\n#Person2#: {sentence(i + 4)}",
            data["summary"]: f"they talk about {sentence(i + offset).split()[1]} .",
            "topic": "chat",
        }
        for i in range(count)
    ]


def translation_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    source, target = data["source"] or data["source_lang"], data["target"] or data["target_lang"]
    return [{source: sentence(i + offset), target: GERMAN[i % len(GERMAN)]} for i in range(count)]


def preference_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    rows = []
    for i in range(count):
        question = f"{sentence(i + offset)}?"
        prompt = f"\n\nHuman: {question}\n\nAssistant:" if data.get("format") == "hh" else question
        rows.append(
            {
                "id": f"p{offset}-{i}",
                data["prompt"]: prompt,
                data["chosen"]: f" {POSITIVE[i % 10]}.",
                data["rejected"]: f" {NEGATIVE[i % 10]}.",
            }
        )
    return rows


def embedding_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    """Sentence pairs (a review and a paraphrase of it); scored where the recipe names a score column."""
    rows = []
    for i in range(count):
        similar = i % 2 == 0
        first = sentence(i + offset)
        second = f"so {first}" if similar else sentence(i + offset + 7)
        row = {data["anchor"]: first, data["positive"]: second}
        if (case.raw.get("data") or {}).get("score"):
            row[data["score"]] = round(4.5 - (i % 3) / 2, 2) if similar else round(0.5 + (i % 4) / 3, 2)
        rows.append(row)
    return rows


def grpo_rows(case: RecipeCase, data: dict, count: int, offset: int) -> list[dict]:
    """Questions with exact answers (the arithmetic sample's columns)."""
    rows = []
    for i in range(count):
        a, b = i % 7 + 2, (i + offset) % 5 + 1
        rows.append(
            {
                data["prompt"]: f"{a} + {b} = ?",
                data["answer"]: a + b,
            }
        )
    return rows


ROW_MAKERS = {
    "classification": classification_rows,
    "token-classification": token_classification_rows,
    "question-answering": question_answering_rows,
    "fill-mask": document_rows,
    "generation": document_rows,
    "summarization": summarization_rows,
    "translation": translation_rows,
    "preference": preference_rows,
    "reward-model": preference_rows,
    "embedding": embedding_rows,
    "grpo": grpo_rows,
}


def write_rows(path: Path, rows: list[dict], task_name: str) -> None:
    """Rows in the file kind of ``path``: CSV/TSV, JSON lines, a JSON list, or text (CoNLL for NER)."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ","
            )
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif suffix == ".txt" and task_name == "token-classification":
        sentences = [
            "\n".join(f"{word} NN O {tag}" for word, tag in zip(*row.values(), strict=True)) for row in rows
        ]
        path.write_text("-DOCSTART- -X- -X- O\n\n" + "\n\n".join(sentences) + "\n", encoding="utf-8")
    elif suffix == ".txt":
        path.write_text("\n\n".join(next(iter(row.values())) for row in rows) + "\n", encoding="utf-8")
    else:
        raise AssertionError(f"{path}: no writer for {suffix} files in tests/recipe_matrix.py")


# -- the tiny stand-in run ------------------------------------------------------------------------------
def stand_in_overrides(case: RecipeCase) -> list[str]:
    """Overrides that keep the recipe but make it tiny: a stand-in model, short texts, two steps."""
    data = case.raw.get("data") or {}
    overrides = []
    if case.from_scratch:
        family = case.from_scratch.split("-")[0]
        shape, vocabulary = TINY_SCRATCH[family]
        overrides += [f"model.from_scratch={json.dumps({'size': case.from_scratch, **shape})}",
                      f"tokenizer.vocab_size={vocabulary}"]  # fmt: skip
    else:
        model = case.raw.get("model")
        if model not in STAND_INS:
            raise AssertionError(
                f"recipe {case.name}: no tiny stand-in for model {model!r} in tests/recipe_matrix.py"
            )
        overrides.append(f"model={STAND_INS[model]}")
        if data.get("use_chat_template") and STAND_INS[model] in WITHOUT_CHAT_TEMPLATE:
            overrides.append("data.use_chat_template=false")
    overrides += [f"data.{key}={value}" for key, value in TINY_DATA.items() if key in data]
    for section, settings in TINY_OPTIONS.items():
        if section in case.raw:
            overrides += [f"{section}.{key}={value}" for key, value in settings.items()]
    overrides += [f"training.{key}={value}" for key, value in TINY_TRAINING.items()]
    return overrides


# -- the task's inference command and loaders -----------------------------------------------------------
PROBE = "the food was delicious and fresh"
QUESTION, CONTEXT = "where did the trip go ?", "the food was cold . the trip went to paris in may ."
AUTO_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
    "text-generation": "AutoModelForCausalLM",
}
#: Keys of an inference command's JSON output that name where it ran, not what it computed.
VOLATILE_KEYS = {"model"}


def is_chat(case: RecipeCase) -> bool:
    data = case.raw.get("data") or {}
    return (
        case.task.name in ("preference", "grpo")
        or data.get("format") in ("instruction", "chat")
        or "instruction" in data
    )


INFERENCE_COMMANDS = {
    "classification": "predict",
    "token-classification": "predict",
    "question-answering": "answer",
    "fill-mask": "fill-mask",
    "generation": "generate",
    "preference": "generate",
    "reward-model": "predict",
    "summarization": "summarize",
    "translation": "translate",
    "embedding": "predict",
    "grpo": "generate",
}


def inference_verb(case: RecipeCase) -> str:
    verb = INFERENCE_COMMANDS.get(case.task.name)
    if verb is None:
        raise AssertionError(f"recipe {case.name}: no inference command for task {case.task.name} here")
    return verb


def inference_command(case: RecipeCase, run: Path, workdir: Path) -> list[str]:
    """The task's inference command on ``run``, with JSON output where the command has it."""
    task = case.task
    name, verb = task.name, inference_verb(case)
    if name in ("classification", "token-classification", "embedding", "reward-model"):
        probe = workdir / "probe.jsonl"
        if name == "reward-model":
            hh = task.data["format"] == "hh"
            prompt = f"\n\nHuman: {PROBE}?\n\nAssistant:" if hh else f"{PROBE}?"
            row = {task.data["prompt"]: prompt, task.data["completion"]: f" {POSITIVE[0]}."}
        elif name == "embedding":
            row = {task.data["anchor"]: PROBE, task.data["positive"]: NEGATIVE[0]}
        elif name == "classification":
            row = {
                task.data["text"]: PROBE,
                **({task.data["text_pair"]: NEGATIVE[0]} if task.data["text_pair"] else {}),
            }
        else:
            row = {"text": "alice went to paris"}
        probe.write_text(json.dumps(row) + "\n", encoding="utf-8")
        return [verb, "-m", str(run), "-i", str(probe)]
    if name == "question-answering":
        return [verb, QUESTION, "--context", CONTEXT, "-m", str(run), "--json"]
    if name == "fill-mask":
        return [verb, f"the food was {mask_token(run)} and fresh", "-m", str(run), "--json"]
    if name in ("generation", "preference", "grpo"):
        chat = ["--chat"] if is_chat(case) else []
        greedy = ["--temperature", "0", "--max-new-tokens", "4"]
        return ["generate", PROBE, "-m", str(run), *greedy, "--json", *chat]
    return [verb, PROBE, "-m", str(run), "--max-new-tokens", "4", "--json"]  # summarize, translate


def mask_token(run: Path) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run)).mask_token


def comparable_output(stdout: str) -> list[Any]:
    """An inference command's JSON lines, without the keys that name the folder it ran on."""
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE_KEYS}
            for line in stdout.splitlines() if line.strip()]  # fmt: skip
