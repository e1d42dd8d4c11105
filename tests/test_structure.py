"""The code's shape: packages in layers that only import downwards, no import circles, and every task's hooks
run in the order tasks/base.py documents, on a cold and on a warm tokenization cache alike."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

import llmkit
from llmkit.tasks import get_task_class, task_names
from tests.conftest import REPO, write_csv
from tests.lookalikes import write_caption_pairs, write_dialogues

PACKAGE = REPO / "llmkit"
#: The packages, lowest first: a module may import its own package or a lower one (llmkit/<name>/__init__.py
#: says what it owns). The top-level modules (the CLI, `llmkit env`, the lazy public API) sit above them all.
LAYERS = ("core", "metrics", "data", "models", "tasks", "recipe", "runs", "training", "inference")
TOP_LEVEL = {"llmkit", "llmkit.__main__", "llmkit.cli", "llmkit.env"}


def module_paths() -> dict[str, Path]:
    """llmkit module name -> its file (metric modules are loaded by path, not imported: left out)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent.parent.name == "metrics":  # metrics/<name>/<name>.py: an `evaluate` module
            continue
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return modules


def imports(kind: str) -> dict[str, set[str]]:
    """llmkit module -> the llmkit modules it imports: ``runtime`` (function-level imports included, ``if
    TYPE_CHECKING:`` blocks not: they never execute) or ``typing`` (only those blocks)."""
    modules = module_paths()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if (id(node) in typing_only) != (kind == "typing"):
                continue
            targets = []
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: relative import (write `from llmkit.x import ...`)"
                if node.module and node.module.startswith("llmkit"):
                    targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            edges[name] |= {t for t in targets if t in modules and t not in (name, "llmkit")}
    return edges


def runtime_imports() -> dict[str, set[str]]:
    return imports("runtime")


def all_imports() -> dict[str, set[str]]:
    runtime, typing = imports("runtime"), imports("typing")
    return {module: runtime[module] | typing[module] for module in runtime}


def layer(module: str) -> int:
    if module in TOP_LEVEL:
        return len(LAYERS)
    package = module.split(".")[1]
    assert package in LAYERS, f"{module}: not in a layer package (LAYERS in tests/test_structure.py)"
    return LAYERS.index(package)


def circles(edges: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}  # visiting | done
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "visiting"
        for target in sorted(edges[module]):
            if state.get(target) == "visiting":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return [" -> ".join(circle) for circle in found]


def test_no_module_imports_itself_back_even_for_type_hints() -> None:
    assert "llmkit.training.spine" not in runtime_imports()["llmkit.runs.report"]  # once a circle
    assert not circles(runtime_imports()), f"import circles: {circles(runtime_imports())}"
    assert not circles(all_imports()), f"import circles through type hints: {circles(all_imports())}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in all_imports().items()
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, f"imports of a higher layer (order: {' < '.join(LAYERS)} < the CLI): {upward}"


def test_only_the_app_is_top_level_and_each_package_says_what_it_owns_and_may_import() -> None:
    assert {path.stem for path in PACKAGE.glob("*.py")} == {"__init__", "__main__", "cli", "env"}
    assert {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()} == set(LAYERS)
    for index, name in enumerate(LAYERS):
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8")))
        where = f"llmkit/{name}/__init__.py"
        assert doc and len(doc.split("May import:")[0].strip()) > 40, f"{where}: say what the package owns"
        allowed = re.search(r"^May import: (.*)$", doc, re.M)
        assert allowed, f"{where}: a 'May import: ...' line"
        listed = [part.strip() for part in allowed.group(1).split(",") if part.strip() != "nothing"]
        expected = ", ".join(LAYERS[:index]) or "nothing"
        assert listed == list(LAYERS[:index]), f"{where}: May import: {expected}"


def test_the_public_api_is_the_documented_names_each_one_importable() -> None:
    assert set(llmkit.__all__) == {"LlmkitError", "__version__", *llmkit.PUBLIC}
    for name in llmkit.PUBLIC:
        assert callable(getattr(llmkit, name)), name
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        _ = llmkit.train


def test_the_checks_see_an_upward_import_and_a_typing_circle(tmp_path, monkeypatch) -> None:
    """The graph the tests above read: a planted upward import and a TYPE_CHECKING circle are found."""
    package = tmp_path / "llmkit"
    for name in ("core", "data"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "core" / "a.py").write_text("from llmkit.data.b import x\n")
    (package / "data" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from llmkit.core.a import y\nx = 1\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", package)
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert imports("runtime")["llmkit.core.a"] == {"llmkit.data.b"}
    assert imports("typing")["llmkit.data.b"] == {"llmkit.core.a"}
    assert circles(all_imports()) == ["llmkit.core.a -> llmkit.data.b -> llmkit.core.a"]
    assert not circles(runtime_imports())
    assert layer("llmkit.data.b") > layer("llmkit.core.a")


# -- hooks, cold and warm ----------------------------------------------------------------------------
def task_recipe(task: str, tmp_path: Path) -> dict:
    """A seconds-long recipe of each task on a tiny model."""
    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"the {w} sat on the mat ." for w in ("cat", "dog", "bird") * 12) + "\n")
    paragraphs = tmp_path / "paragraphs.txt"  # generation reads a .txt by paragraphs (documents)
    paragraphs.write_text(text.read_text().replace("\n", "\n\n"))
    dialogues = write_dialogues(tmp_path / "dialogues.jsonl", 10)
    sentiment = write_csv(
        tmp_path / "sentiment.csv",
        ["text", "label"],
        [[f"good {i}", "positive"] for i in range(8)] + [[f"bad {i}", "negative"] for i in range(8)],
    )
    from tests.test_ner import rows as ner_rows
    from tests.test_qa import row as qa_row

    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text("".join(json.dumps(r) + "\n" for r in ner_rows(12)), encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(qa_row(i, long=i % 2 == 0)) + "\n" for i in range(12)))
    recipes = {
        "token-classification": {"model": "tiny-bert", "data": {"train": str(tagged)}},
        "question-answering": {
            "model": "tiny-bert",
            "data": {"train": str(questions), "max_length": 64, "doc_stride": 16},
        },
        "classification": {"model": "tiny-bert", "data": {"train": str(sentiment)}},
        "fill-mask": {"model": "tiny-bert", "data": {"train": str(text), "max_length": 32}},
        "generation": {"model": "tiny-gpt2", "data": {"train": str(paragraphs), "max_length": 32}},
        "summarization": {
            "model": "tiny-t5",
            "data": {
                "train": str(dialogues),
                "document": "dialogue",
                "summary": "summary",
                "max_new_tokens": 8,
            },
        },
    }
    captions = write_caption_pairs(tmp_path / "captions.jsonl", 12)
    recipes["translation"] = {
        "model": "tiny-t5",
        "data": {"train": str(captions), "source_lang": "en", "target_lang": "de", "max_new_tokens": 8},
    }
    preference = tmp_path / "pairs.jsonl"
    preference.write_text(
        "".join(
            json.dumps({"prompt": f"say {w}", "chosen": w, "rejected": f"not {w}"}) + "\n"
            for w in ("cat", "dog", "bird", "fish") * 3
        )
    )
    recipes["preference"] = {
        "model": "tiny-gpt2",
        "data": {
            "train": str(preference),
            "use_chat_template": False,
            "max_length": 128,
            "max_prompt_length": 64,
        },
    }
    recipes["reward-model"] = {
        "model": "tiny-bert",
        "data": {"train": str(preference), "max_length": 64, "max_prompt_length": 32},
    }
    similar = tmp_path / "similar.jsonl"
    similar.write_text(
        "".join(
            json.dumps({"anchor": f"the {w} sat", "positive": f"a {w} was sitting"}) + "\n"
            for w in ("cat", "dog", "bird", "fish") * 3
        )
    )
    recipes["embedding"] = {"model": "tiny-bert", "data": {"train": str(similar)}}
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"prompt": f"{i} + 2 = ?", "answer": i + 2}) + "\n" for i in range(12))
    )
    recipes["grpo"] = {
        "model": "tiny-gpt2",
        "data": {"train": str(problems), "use_chat_template": False, "max_prompt_length": 64},
        "grpo": {"num_generations": 2, "max_completion_length": 4},
    }
    assert set(recipes) == set(task_names()), "give every registered task a recipe here"
    recipe = recipes[task]
    recipe["data"]["validation_split"] = 0.25
    return {"task": task, "training": {"max_steps": 1, "per_device_train_batch_size": 4}, **recipe}


HOOKS = (
    "check_data",
    "check_model",
    "prepare_tokenizer",
    "encode",
    "collator",
    "encoding_metrics",
    "prepare_evaluation",
    "load_model",
)


@pytest.mark.parametrize("task", task_names())
def test_each_task_runs_its_hooks_in_order_cold_and_warm(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit.models.resolve import resolve_model

    for alias in ("tiny-bert", "tiny-gpt2", "tiny-t5"):
        resolve_model(alias)  # built where the session keeps them; this test's own tokenization cache below
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(Path(os.environ["LLMKIT_CACHE"]) / "models")
    monkeypatch.setenv("LLMKIT_CACHE", str(cache))
    calls: list[str] = []
    task_cls = get_task_class(task)
    for hook in HOOKS:
        original = getattr(task_cls, hook)

        def recorded(self, *args, _original=original, _hook=hook, **kwargs):
            calls.append(_hook)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(task_cls, hook, recorded)

    recipe = task_recipe(task, tmp_path)
    cold = llmkit.finetune({**recipe, "output_dir": str(tmp_path / "cold")})
    cold_calls, calls[:] = list(calls), []
    warm = llmkit.finetune({**recipe, "output_dir": str(tmp_path / "warm")})

    def first(calls: list[str], hook: str) -> int:
        return calls.index(hook)

    for order in (cold_calls, calls):
        assert first(order, "check_data") < first(order, "check_model") < first(order, "prepare_tokenizer")
        assert first(order, "prepare_tokenizer") < first(order, "encoding_metrics")
        assert order.count("encoding_metrics") == order.count("prepare_evaluation") == 2  # train, validation
        assert first(order, "prepare_evaluation") < first(order, "load_model")
    assert cold_calls.count("encode") == 2 and "encode" not in calls  # the warm run encoded nothing
    assert first(cold_calls, "encode") < first(cold_calls, "encoding_metrics")
    same = {
        key: value for key, value in cold.metrics.items() if not key.endswith(("_runtime", "_per_second"))
    }
    again = {
        key: value for key, value in warm.metrics.items() if not key.endswith(("_runtime", "_per_second"))
    }
    assert json.dumps(same, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_step_profile_help_answers_without_profiling(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step_profile.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: step_profile.py"), result.stderr
    assert "| tokens per row |" not in result.stdout  # no profile row: nothing was timed
