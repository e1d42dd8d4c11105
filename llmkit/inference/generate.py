"""`llmkit generate`: text from a causal LM folder or alias, streamed.

Checks happen before the weights load: the folder must hold a decoder that can generate, the prompt must
fit the model's context (``max_new_tokens`` is shortened, and that is said, when prompt + new tokens
would not), and sampling settings must make sense (the decoding itself: ``llmkit.tasks.decoding``).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from llmkit.core.errors import LlmkitError
from llmkit.models.adaptation import saved_recipe
from llmkit.tasks.causal_lm import load_causal_lm, render_chat, require_causal_lm
from llmkit.tasks.decoding import (
    Generated,
    SamplingSettings,
    check_repetition_penalty,
    generate_from_prompt,
)


def run_repetition_penalty(folder: Path) -> float:
    """The repetition penalty a run's predictions use (its recipe's ``data.repetition_penalty``), so that
    `llmkit generate` on a run decodes as its predictions did; 1 (none) for any other model."""
    recipe = saved_recipe(folder) or {}
    data = recipe.get("data")
    value = data.get("repetition_penalty", 1.0) if isinstance(data, dict) else 1.0
    return check_repetition_penalty(value, f"{folder / 'recipe.yaml'}: data.repetition_penalty")


def generate(
    prompt: str,
    model: str = "smollm2-135m",
    *,
    sampling: SamplingSettings | None = None,
    chat: bool = False,
    stream: TextIO | None = None,
) -> Generated:
    """`llmkit generate`: resolve the model, check it can generate, format the prompt, generate."""
    from llmkit.core.devices import inference_device
    from llmkit.core.progress import quiet_library_progress
    from llmkit.models.resolve import check_weights, load_tokenizer, resolve_model

    sampling = sampling or SamplingSettings()
    sampling.check()
    if not prompt.strip():
        raise LlmkitError('the prompt is empty; give some text to continue, e.g. "Once upon a time"')
    model_path = resolve_model(model)
    require_causal_lm(model_path, model)
    if sampling.repetition_penalty is None:
        sampling = replace(sampling, repetition_penalty=run_repetition_penalty(model_path))
    tokenizer = load_tokenizer(model_path)
    text = prompt
    if chat:
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise LlmkitError(
                f"model {model} has no chat template, so --chat cannot format the prompt; drop --chat "
                f"(models llmkit fine-tunes on instruction data save one)"
            )
        text = render_chat(tokenizer, [{"role": "user", "content": prompt}], template, True)
    with quiet_library_progress():
        loaded = load_causal_lm(model_path, **check_weights(model_path)).to(inference_device())
    return generate_from_prompt(
        loaded,
        tokenizer,
        text,
        sampling=sampling,
        templated=chat,
        stream=stream,
        echo="" if chat else prompt,
        name=model,
    )


def as_json_record(generated: Generated, prompt: str, model: str) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, **asdict(generated)}
