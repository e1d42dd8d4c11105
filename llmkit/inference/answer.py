"""``llmkit answer``: extractive question answering with a trained model, in the spirit of ``fill-mask``.

The model is ``--model`` when given, else the newest ``question-answering`` run under ./runs. The context
is a text or a file; a long one is read in overlapping windows as in training. The answer is a span of the
context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log

HOW_TO_TRAIN = "llmkit finetune recipes/qa-squad.yaml"


def read_context(context: str | None, context_file: Path | None) -> str:
    """The context from --context TEXT or --context-file FILE (exactly one of them, not empty)."""
    if (context is None) == (context_file is None):
        raise LlmkitError("give the context as --context TEXT or --context-file FILE (one of them)")
    if context_file is not None:
        try:
            context = context_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LlmkitError(
                f"--context-file {context_file}: cannot be read ({exc}); give a UTF-8 text file"
            ) from None
        source = f"--context-file {context_file}"
    else:
        source = "--context"
    if not context.strip():
        raise LlmkitError(f"{source} is empty; give the text that holds the answer")
    return context


def answer(question: str, context: str, model: str | None = None) -> dict[str, Any]:
    """{question, answer, start, end, score}: the best span of ``context`` for ``question``."""
    from llmkit.core.progress import quiet_library_progress
    from llmkit.inference.predict import architectures, folder_for_task, task_for_model
    from llmkit.models.resolve import check_weights, load_for_inference, load_tokenizer

    if not question.strip():
        raise LlmkitError("the question is empty; ask something the context answers")
    task, folder = folder_for_task(model, "question-answering", HOW_TO_TRAIN)
    if not any(name.endswith("ForQuestionAnswering") for name in architectures(folder)):
        raise LlmkitError(
            f"model folder {folder} has no trained question-answering head (a new one would answer at "
            f"random); train one with `{HOW_TO_TRAIN}` and pass --model runs/qa-squad"
        )
    if (folder / "recipe.yaml").exists():
        task = task_for_model(folder)  # the run's window length and answer search settings
    log(f"{folder} answers" + (" (the newest question-answering run under ./runs)" if model is None else ""))
    tokenizer = load_tokenizer(folder)
    task.prepare_tokenizer(tokenizer)
    with quiet_library_progress(errors_only=True):
        loaded = load_for_inference(task, folder, **check_weights(folder))
    row = {task.data["question"]: question, task.data["context"]: context}
    prediction = task.predict(loaded, tokenizer, [row])[0]
    return {
        "question": question,
        "answer": prediction["predicted_answer"],
        "start": prediction["predicted_start"],
        "end": prediction["predicted_end"],
        "score": prediction["predicted_score"],
    }
