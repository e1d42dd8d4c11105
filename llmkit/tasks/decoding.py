"""Decoding a prompt with a causal LM: sampling settings, length checks against the context, streaming.

Shared by the tasks' ``predict`` (generation, preference) and the `llmkit generate` command.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from llmkit.core.errors import LlmkitError
from llmkit.tasks.causal_lm import context_length, penalty_kwargs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Generated:
    """A completion and how it was produced (the `--json` output)."""

    text: str
    prompt_tokens: int
    new_tokens: int
    stopped_at_eos: bool
    max_new_tokens: int


@dataclass
class SamplingSettings:
    """temperature 0 means greedy decoding; top_k 0 switches top-k filtering off; a repetition_penalty
    above 1 makes every token already in the text (prompt included) less likely (HF's CTRL-style penalty);
    None: the run's own ``data.repetition_penalty`` (`llmkit generate` fills it in), else none."""

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    seed: int = 0
    repetition_penalty: float | None = 1.0

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise LlmkitError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise LlmkitError(f"--temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LlmkitError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise LlmkitError(f"--top-k must be 0 (off) or more, got {self.top_k}")
        if self.repetition_penalty is not None:
            check_repetition_penalty(self.repetition_penalty, "--repetition-penalty")

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"do_sample": self.temperature != 0}
        if kwargs["do_sample"]:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs | penalty_kwargs(self.repetition_penalty)


def check_repetition_penalty(value: Any, key: str) -> float:
    """A repetition penalty: a number above 0, 1 being none (below 1 favours repeats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LlmkitError(
            f"{key} must be a number above 0 (1: no penalty, 1.2: a common choice), got {value!r}"
        )
    return float(value)


def greedy(max_new_tokens: int, repetition_penalty: float = 1.0) -> SamplingSettings:
    """Greedy decoding, as tasks predict and evaluate (their ``data.repetition_penalty`` applied)."""
    return SamplingSettings(
        max_new_tokens=max_new_tokens, temperature=0, repetition_penalty=repetition_penalty
    )


def generate_from_prompt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    sampling: SamplingSettings | None = None,
    templated: bool = False,
    stream: TextIO | None = None,
    echo: str = "",
    name: str = "model",
) -> Generated:
    """Continue ``prompt`` (already chat-formatted when ``templated``); optionally stream the new text.

    ``echo`` is written to ``stream`` first, once the prompt is known to fit (the CLI echoes the prompt).
    """
    import torch
    from transformers import set_seed

    sampling = sampling or greedy(max_new_tokens)
    encoded = tokenizer(prompt, add_special_tokens=not templated, return_tensors="pt", verbose=False)
    input_ids = encoded.input_ids.to(model.device)
    prompt_tokens = input_ids.shape[1]
    new_tokens = sampling.max_new_tokens
    context = context_length(model)
    if context is not None:
        if prompt_tokens >= context:
            raise LlmkitError(
                f"the prompt is {prompt_tokens} tokens but {name} attends over {context} positions; "
                f"shorten the prompt to fewer than {context} tokens"
            )
        if prompt_tokens + new_tokens > context:
            new_tokens = context - prompt_tokens
            print(
                f"llmkit: prompt ({prompt_tokens} tokens) + --max-new-tokens would exceed the context of "
                f"{context}; generating at most {new_tokens} new tokens",
                file=sys.stderr,
            )
    streamer = None
    if stream is not None:
        if echo:
            stream.write(echo)
            stream.flush()
        streamer = streamer_to(stream, tokenizer)
    set_seed(sampling.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            pad_token_id=pad_id,
            streamer=streamer,
            **sampling.generate_kwargs(),
        )
    new_ids = output[0, prompt_tokens:].tolist()
    eos_ids = _eos_ids(model, tokenizer)
    stopped = bool(new_ids) and new_ids[-1] in eos_ids
    return Generated(
        text=tokenizer.decode(new_ids, skip_special_tokens=True),
        prompt_tokens=prompt_tokens,
        new_tokens=len(new_ids),
        stopped_at_eos=stopped,
        max_new_tokens=new_tokens,
    )


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def streamer_to(handle: TextIO, tokenizer: PreTrainedTokenizerBase):
    """A TextStreamer that writes new text (not the prompt, no special tokens) to ``handle`` as it comes."""
    from transformers import TextStreamer

    class HandleStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            handle.write(text + ("\n" if stream_end else ""))
            handle.flush()

    return HandleStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
