"""Every bundled recipe x every command, on tiny stand-ins of its model and a few rows in its own data format.

Per recipe (tests/recipe_matrix.py builds the run from the YAML): `llmkit validate`, `finetune` (2 steps), the
task's inference command, `export` (ONNX int8, then the inference command on it; refused in one line for a
task it does not support), `report`, `evaluate`, `sweep` (one trial), a run interrupted after its first
checkpoint and resumed, then in the same folder `--overwrite` to a LoRA run (its inference command, `merge`)
and `--overwrite` back to a full run. After each `--overwrite` every loader (transformers' AutoModel and
pipeline, the llmkit command) must give what the new run's own files give: no file of the older run may be
left to serve. The terminal summary prints the matrix (tests/recipe_matrix_plugin.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.recipe_matrix import (
    AUTO_CLASSES,
    CONTEXT,
    PROBE,
    QUESTION,
    RecipeCase,
    comparable_output,
    inference_command,
    inference_verb,
    recipe_cases,
    stand_in_overrides,
    write_data,
)
from tests.recipe_matrix_plugin import FAILED, NOT_APPLICABLE, NOT_RUN, PASSED, Matrix

CASES = recipe_cases()
#: Metrics that measure the machine, not the model: a resumed run need not repeat them.
TIMING_WORDS = ("runtime", "per_second", "seconds")


class Cells:
    """Runs a recipe's cells in order, records each in the matrix, and collects the failures."""

    def __init__(self, matrix: Matrix, recipe: str) -> None:
        self.matrix, self.recipe = matrix, recipe
        self.failures: list[str] = []
        self.passed: set[str] = set()

    def check(self, column: str, step: Callable[[], Any], needs: tuple[str, ...] = ()) -> Any:
        missing = [name for name in needs if name not in self.passed]
        if missing:
            self.matrix.record(self.recipe, column, NOT_RUN, f"not run: needs {', '.join(missing)}")
            return None
        began = time.perf_counter()
        try:
            value = step()
        except Exception as exc:  # a cell fails, the next ones still run
            # the message's first line: pytest appends its introspection of the assert below it
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:600]
            self.matrix.record(self.recipe, column, FAILED, reason, time.perf_counter() - began)
            self.failures.append(f"{column}: {reason}")
            return None
        self.matrix.record(self.recipe, column, PASSED, seconds=time.perf_counter() - began)
        self.passed.add(column)
        return value

    def not_applicable(self, column: str, why: str) -> None:
        self.matrix.record(self.recipe, column, NOT_APPLICABLE, why)


def cli(run_cli, *args: str, expect: int = 0):
    """The CLI in-process: a traceback or an unexpected exit code is the cell's failure."""
    try:
        with log_handlers_on_current_stderr():
            result = run_cli(*args)
    except BaseException as exc:  # what main() let through: a traceback for the user
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        raise AssertionError(f"`llmkit {args[0]}` raised {type(exc).__name__}: {exc} (at {where})") from exc
    if "Traceback (most recent call last)" in result.stderr:
        tail = " ".join(result.stderr[-400:].split())
        raise AssertionError(f"`llmkit {args[0]}` printed a traceback: {tail}")
    if result.exit_code != expect:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AssertionError(f"`llmkit {args[0]}` exited {result.exit_code}, expected {expect}: {last}")
    return result


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_recipe_x_command(
    case: RecipeCase, run_cli, recipe_matrix: Matrix, tmp_path: Path, monkeypatch
) -> None:
    cells = Cells(recipe_matrix, case.name)
    data = write_data(case, tmp_path / "data")
    base = [str(case.path), *data, *stand_in_overrides(case)]
    full = [*base, *(["peft=null"] if case.has_peft else [])]
    lora = [*base, "peft.method=lora"]
    run = tmp_path / "run"
    recipe_matrix.labels[case.name] = inference_verb(case)

    cells.check("validate", lambda: cli(run_cli, "validate", *full))
    cells.check("finetune", lambda: finetune(run_cli, full, run))
    cells.check("infer", lambda: infer(run_cli, inference_command(case, run, tmp_path)), needs=("finetune",))
    cells.check("export", lambda: export(case, run_cli, run, tmp_path / "export"), needs=("finetune",))
    cells.check("report", lambda: report(run_cli, run), needs=("finetune",))
    files = dict(item.removeprefix("data.").split("=", 1) for item in data if item.startswith("data."))
    cells.check("evaluate", lambda: evaluate(case, run_cli, run, files, tmp_path / "evaluation"),
                needs=("finetune",))  # fmt: skip
    cells.check("sweep", lambda: sweep(run_cli, full, tmp_path / "sweep"), needs=("finetune",))
    resumed = tmp_path / "resumed"
    if case.has_setfit:  # two stages outside the run's training loop: checkpoints are refused in one line
        checkpoints = ("training.save_strategy=steps", "training.save_steps=1", f"output_dir={resumed}")
        cells.check("resume", lambda: cli(run_cli, "finetune", *full, *checkpoints, expect=2))
    else:
        cells.check("resume", lambda: interrupt_and_resume(run_cli, full, run, resumed, monkeypatch),
                    needs=("finetune",))  # fmt: skip

    # a model that knows nothing yet has nothing to adapt, and some tasks train no adapter: LoRA is refused,
    # cleanly (Task.peft_refusal); SetFit is a way of training of its own, which a peft section does not join
    no_lora = "from_scratch" if case.from_scratch else case.task.peft_refusal and f"task {case.task.name}"
    no_lora = no_lora or (case.has_setfit and "setfit")
    if no_lora:
        cells.check("lora", lambda: cli(run_cli, "finetune", *lora, f"output_dir={tmp_path / 'x'}", expect=2))
        for column in ("overwrite->lora", "infer lora", "export lora", "merge", "overwrite->full"):
            cells.not_applicable(column, f"{no_lora}: no LoRA run")
    else:
        began = cells.check("lora", lambda: overwrite(run_cli, lora, run), needs=("finetune",))
        own = tmp_path / "own-files"  # a copy of what the newest run wrote: the reference for every loader
        cells.check("overwrite->lora", lambda: check_loaders(case, run_cli, run, began, own / "lora"),
                    needs=("lora",))  # fmt: skip
        cells.check(
            "infer lora", lambda: infer(run_cli, inference_command(case, run, tmp_path)), needs=("lora",)
        )
        lora_export = tmp_path / "export-lora"
        cells.check("export lora", lambda: export(case, run_cli, run, lora_export), needs=("lora",))
        cells.check("merge", lambda: merge(case, run_cli, run), needs=("lora",))
        back = lambda: check_loaders(case, run_cli, run, overwrite(run_cli, full, run), own / "full")  # noqa: E731
        cells.check("overwrite->full", back, needs=("lora",))

    assert not cells.failures, f"{case.name}:\n" + "\n".join(cells.failures)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.costly_model else [])
        for case in CASES
    ],
)
def test_bundled_recipe_validates_as_written(
    case: RecipeCase, run_cli, recipe_matrix: Matrix, tmp_path
) -> None:
    """`llmkit validate` on the recipe as it ships (its real model), only its data files swapped for ours."""
    recipe_matrix.labels[case.name] = inference_verb(case)
    cells = Cells(recipe_matrix, case.name)
    data = write_data(case, tmp_path / "data")
    cells.check("validate as written", lambda: cli(run_cli, "validate", str(case.path), *data))
    assert not cells.failures, f"{case.name}:\n" + "\n".join(cells.failures)


@contextmanager
def log_handlers_on_current_stderr() -> Iterator[None]:
    """Library log handlers (transformers, datasets) hold the sys.stderr of the test that configured them,
    which pytest closes after that test: a later warning then prints a logging traceback no user would see.
    Point them at this test's stderr while the command runs."""
    loggers = [logging.root, *logging.Logger.manager.loggerDict.values()]
    handlers = [handler for logger in loggers for handler in getattr(logger, "handlers", [])
                if type(handler) is logging.StreamHandler]  # fmt: skip
    saved = [(handler.stream, vars(handler).get("flush")) for handler in handlers]
    for handler in handlers:
        handler.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
        if "flush" in vars(handler):  # transformers pins the flush of the stderr it was configured with
            handler.flush = sys.stderr.flush
    try:
        yield
    finally:
        for handler, (stream, flush) in zip(handlers, saved, strict=True):
            handler.stream = stream
            if flush is not None:
                handler.flush = flush


def finetune(run_cli, args: list[str], run: Path) -> None:
    cli(run_cli, "finetune", *args, f"output_dir={run}")
    assert (run / "metrics.json").exists(), "finetune exited 0 but wrote no metrics.json"


def infer(run_cli, command: list[str]) -> None:
    result = cli(run_cli, *command)
    assert comparable_output(result.stdout), f"`llmkit {command[0]}` printed nothing on stdout"


def export(case: RecipeCase, run_cli, run: Path, out: Path) -> None:
    """`llmkit export` to ONNX int8, then the task's inference command on the exported folder; a task export
    does not support is refused in one line (exit 2) and nothing is written."""
    from llmkit.inference.export import EXPORTED_TASKS

    args = ["export", str(run), "--output", str(out), "--quantize", "int8"]
    if case.task.name not in EXPORTED_TASKS or case.has_setfit:
        cli(run_cli, *args, expect=2)
        assert not out.exists(), f"a refused export wrote {out}"
        return
    cli(run_cli, *args)
    assert (out / "model.onnx").is_file(), "export exited 0 but wrote no model.onnx"
    infer(run_cli, inference_command(case, out, out.parent))


def report(run_cli, run: Path) -> None:
    (run / "report.md").unlink()
    result = cli(run_cli, "report", str(run))
    assert (run / "report.md").exists() and "report.md" in result.stdout, result.stdout[-300:]


def evaluate(case: RecipeCase, run_cli, run: Path, files: dict[str, str], out: Path) -> None:
    """`llmkit evaluate` on the run's own validation file gives back the run's eval_* scores (a recipe whose
    validation is carved from train: the training file is scored)."""
    data = files.get("validation") or files["train"]
    cli(run_cli, "evaluate", str(run), "--data", data, "--output", str(out), "--resamples", "10")
    record = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    scored = record["models"][0]["metrics"]
    assert scored, "evaluate wrote no scores"
    if "validation" not in files:
        return
    trained = {key: value for key, value in model_metrics(run).items()
               if key.startswith("eval_") and not key.startswith("eval_before_")}  # fmt: skip
    assert trained, "the run recorded no eval_* scores"
    differ = {key: (value, scored.get(key)) for key, value in trained.items()
              if scored.get(key) != value}  # fmt: skip
    assert not differ, f"evaluate disagrees with the run's own eval scores: {differ}"


def sweep(run_cli, args: list[str], out: Path) -> None:
    """`llmkit sweep` with the task's default search space, one trial: its table, and a best recipe that
    validates as it is."""
    cli(run_cli, "sweep", *args, "--trials", "1", "--output", str(out))
    assert (out / "trials.md").is_file() and (out / "study.db").is_file(), "the sweep wrote no trials table"
    cli(run_cli, "validate", str(out / "best_recipe.yaml"))


def interrupt_and_resume(run_cli, args: list[str], finished: Path, out: Path, monkeypatch) -> None:
    """Ctrl-C during the second step, after checkpoint-1 was saved; the same command again continues it and
    ends where the run that was never stopped ended."""
    from transformers.trainer_callback import CallbackHandler

    checkpointing = [*args, f"output_dir={out}", "training.save_strategy=steps", "training.save_steps=1"]
    step_begin = CallbackHandler.on_step_begin

    def interrupt_the_second_step(self, train_args, state, control):
        if state.global_step >= 1:
            raise KeyboardInterrupt
        return step_begin(self, train_args, state, control)

    with monkeypatch.context() as patch:
        patch.setattr(CallbackHandler, "on_step_begin", interrupt_the_second_step)
        cli(run_cli, "finetune", *checkpointing, expect=130)  # 130: the exit code of Ctrl-C
    assert (out / "checkpoint-1" / "trainer_state.json").exists(), sorted(p.name for p in out.iterdir())
    assert not (out / "metrics.json").exists(), "an interrupted run looks finished"

    resumed = cli(run_cli, "finetune", *checkpointing)
    assert f"resuming from {out / 'checkpoint-1'}" in resumed.stderr, resumed.stderr[-500:]
    expected, got = model_metrics(finished), model_metrics(out)
    differ = {
        key: (expected[key], got.get(key))
        for key in expected
        if got.get(key) != pytest.approx(expected[key], rel=1e-4)
    }
    assert not differ, f"the resumed run ends elsewhere than the uninterrupted one: {differ}"


def model_metrics(run: Path) -> dict[str, float]:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    return {key: value for key, value in metrics.items()
            if key.startswith(("eval_", "test_")) and isinstance(value, (int, float))
            and not any(word in key for word in TIMING_WORDS)}  # fmt: skip


def overwrite(run_cli, args: list[str], run: Path) -> int:
    """`finetune --overwrite` into ``run``; return when it began (every file it writes is newer)."""
    began = time.time_ns()
    time.sleep(0.05)  # a coarse file-system clock still dates the new run's files after ``began``
    cli(run_cli, "finetune", *args, f"output_dir={run}", "--overwrite")
    return began


def merge(case: RecipeCase, run_cli, run: Path) -> None:
    """`llmkit merge`: a plain folder that computes what the adapter on its base computes."""
    cli(run_cli, "merge", str(run))
    merged = run / "merged"
    assert (merged / "config.json").exists() and not (merged / "adapter_config.json").exists()
    kwargs = label_kwargs(run)
    adapted = model_outputs(case, run, run, **kwargs)
    assert_close(model_outputs(case, merged, run), adapted, "merged vs adapter", atol=1e-4)


# -- after --overwrite: every loader serves the new run --------------------------------------------------
def check_loaders(case: RecipeCase, run_cli, run: Path, began: int, own: Path) -> None:
    """No file older than the run in its folder, and AutoModel, pipeline and the llmkit command give what a
    copy of the new run's own files gives."""
    stale = sorted(str(path.relative_to(run)) for path in run.rglob("*")
                   if path.is_file() and path.stat().st_mtime_ns < began)  # fmt: skip
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_mtime_ns >= began:
            (own / path.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, own / path.relative_to(run))
    problems = [f"the older run's files are left: {', '.join(stale)}"] if stale else []
    kwargs = label_kwargs(own)
    loaders = {
        "AutoModel.from_pretrained": lambda: assert_close(
            model_outputs(case, run, own, **kwargs), model_outputs(case, own, own, **kwargs), "outputs"
        ),
        "transformers.pipeline": lambda: assert_same(
            pipeline_outputs(case, run, kwargs), pipeline_outputs(case, own, kwargs)
        ),
        "llmkit inference command": lambda: assert_same(
            command_outputs(case, run_cli, run), command_outputs(case, run_cli, own)
        ),
    }
    if not has_pipeline(case):
        del loaders["transformers.pipeline"]
    for loader, compare in loaders.items():
        try:
            compare()
        except Exception as exc:
            problems.append(f"{loader} serves another run ({' '.join(str(exc).split())[:160]})")
    if problems:
        raise AssertionError("; ".join(problems))


def label_kwargs(folder: Path) -> dict[str, Any]:
    """What an adapter folder's model card tells a transformers user to pass: the head's labels."""
    from llmkit.models.adaptation import MODEL_CONFIG_FILE

    if not (folder / MODEL_CONFIG_FILE).exists() or (folder / "config.json").exists():
        return {}
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    if "id2label" not in config or not head_has_labels(config):
        return {}
    kwargs = {"id2label": {int(key): label for key, label in config["id2label"].items()}}
    return {**kwargs, **({"problem_type": config["problem_type"]} if config.get("problem_type") else {})}


def head_has_labels(config: dict) -> bool:
    """A classification head (sequence or token): its size and outputs are the labels'."""
    return any(name.endswith(("ForSequenceClassification", "ForTokenClassification"))
               for name in config.get("architectures") or [])  # fmt: skip


def model_outputs(case: RecipeCase, folder: Path, tokenizer_folder: Path, **kwargs: Any):
    """The raw outputs (logits) of ``folder`` loaded by transformers' Auto class, on a fixed probe."""
    import inspect

    import torch
    import transformers

    task = case.task
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_folder))
    auto_class = getattr(transformers, AUTO_CLASSES[task.pipeline_task])
    model = auto_class.from_pretrained(str(folder), **kwargs).eval()
    qa = task.name == "question-answering"
    encoded = tokenizer(*((QUESTION, CONTEXT) if qa else (PROBE,)), return_tensors="pt")
    accepted = inspect.signature(model.forward).parameters
    with torch.no_grad():
        output = model(**{key: value for key, value in encoded.items() if key in accepted})
    return output.start_logits if qa else output.logits


def has_pipeline(case: RecipeCase) -> bool:
    """transformers 5 removed some pipelines (question-answering): those loaders are not checked."""
    from transformers.pipelines import SUPPORTED_TASKS

    return case.task.pipeline_task in SUPPORTED_TASKS


def pipeline_outputs(case: RecipeCase, folder: Path, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer, pipeline

    task = case.task.pipeline_task
    pipe = pipeline(task, model=str(folder), model_kwargs=kwargs)
    if task == "question-answering":
        return pipe(question=QUESTION, context=CONTEXT)
    if task == "fill-mask":
        return pipe(f"the food was {AutoTokenizer.from_pretrained(str(folder)).mask_token} and fresh")
    if task == "text-generation":
        return pipe(PROBE, max_new_tokens=4, do_sample=False)
    if task == "text-classification":
        return pipe(PROBE, top_k=None)
    return pipe(PROBE)


def command_outputs(case: RecipeCase, run_cli, folder: Path) -> list[Any]:
    return comparable_output(cli(run_cli, *inference_command(case, folder, folder.parent)).stdout)


def assert_close(got, expected, what: str, atol: float = 0.0) -> None:
    """Exact by default: the same files loaded twice compute the same numbers."""
    import torch

    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}")
    if not torch.allclose(got, expected, atol=atol):
        raise AssertionError(f"{what} differ by up to {(got - expected).abs().max():.3g}")


def assert_same(got, expected) -> None:
    if got != expected:
        raise AssertionError(f"{str(got)[:70]} != {str(expected)[:70]}")
