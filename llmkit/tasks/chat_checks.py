"""Pre-flight chat checks for `llmkit validate`: the three ways a chat fine-tune goes wrong unseen.

* the text trained on is not the text inference renders: the training prompt must equal, token for token,
  ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)`` (what ``llmkit generate --chat`` and
  ``pipeline("text-generation")`` feed the model);
* the end-of-turn/EOS token that stops generation carries no loss: the model never learns to stop;
* no token carries loss at all ("assistant-only" masking that masks everything).

Tasks give their rows as trained through ``Task.chat_examples``; this module only judges them. A failed
check is an error (``--no-strict``: a warning line) that says what differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Rendered examples shown with their loss tokens marked.
SHOWN_EXAMPLES = 2
LOSS_OPEN, LOSS_CLOSE = "«", "»"


@dataclass
class ChatExample:
    """One training sequence: the prompt messages inference would render, the ids and which carry loss.

    ``prompt_length`` is where the reply the prompt asks for starts (default: at the first loss token);
    ``messages`` is None when the trained prompt is not a rendering of whole messages (a document cut to fit).
    """

    messages: list[dict[str, str]] | None
    input_ids: list[int]
    loss_mask: list[bool]
    truncated: bool = False
    dropped: bool = False
    prompt_length: int | None = None

    def reply_start(self) -> int:
        if self.prompt_length is not None:
            return self.prompt_length
        return next((index for index, loss in enumerate(self.loss_mask) if loss), len(self.input_ids))


@dataclass
class ChatReport:
    lines: list[str]
    failures: list[str]


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model_path: Path | None) -> set[int]:
    """The ids that end generation: the tokenizer's EOS and the model's generation_config eos_token_id(s)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = Path(model_path) / "generation_config.json" if model_path else None
    if config is not None and config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
        ids.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
    return ids


def inference_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """What inference tokenizes for these messages: the saved template with the generation prompt."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(encoded, "keys"):  # transformers 5 returns a BatchEncoding
        encoded = encoded["input_ids"]
    return list(encoded)


def marked_text(tokenizer: PreTrainedTokenizerBase, ids: list[int], mask: list[bool]) -> str:
    """The sequence decoded, each run of loss tokens between « and », newlines shown as \\n."""
    pieces, start = [], 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or mask[index] != mask[start]:
            text = tokenizer.decode(ids[start:index])
            pieces.append(f"{LOSS_OPEN}{text}{LOSS_CLOSE}" if mask[start] else text)
            start = index
    return "".join(pieces).replace("\n", "\\n")


def first_difference(trained: list[int], expected: list[int]) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(trained, expected, strict=False)) if a != b),
        min(len(trained), len(expected)),
    )


def prompt_mismatch(tokenizer: PreTrainedTokenizerBase, number: int, example: ChatExample) -> str | None:
    """Why example ``number``'s training prompt is not the inference prompt (None: identical)."""
    trained = example.input_ids[: example.reply_start()]
    expected = inference_prompt(tokenizer, example.messages)
    if trained == expected:
        return None
    at = first_difference(trained, expected)
    return (
        f"example {number}: the training prompt ({len(trained)} tokens) differs from "
        f"apply_chat_template(..., add_generation_prompt=True) ({len(expected)} tokens) at token {at}: "
        f"trained {tokenizer.decode(trained[at : at + 8])!r}, "
        f"inference {tokenizer.decode(expected[at : at + 8])!r}"
    )


def check_chat_examples(
    examples: list[ChatExample], tokenizer: PreTrainedTokenizerBase, stop_ids: set[int]
) -> ChatReport:
    """Run every check over ``examples``; the report's lines show the results, failures say what differs."""
    lines, failures = [], []
    kept = [e for e in examples if not e.dropped]
    for number, example in enumerate(kept[:SHOWN_EXAMPLES], start=1):
        lines.append(f"rendered example {number} (loss on {LOSS_OPEN}...{LOSS_CLOSE}):")
        lines.append(f"  {marked_text(tokenizer, example.input_ids, example.loss_mask)}")
    comparable = [
        (number, e)
        for number, e in enumerate(kept, 1)
        if e.messages is not None and e.reply_start() < len(e.input_ids)
    ]
    mismatches = [m for number, e in comparable if (m := prompt_mismatch(tokenizer, number, e))]
    if mismatches:
        failures.append(f"{mismatches[0]} ({len(mismatches)} of {len(comparable)} examples differ)")
    else:
        lines.append(
            f"training prompt = apply_chat_template(add_generation_prompt=True) token for token: "
            f"{len(comparable)} of {len(comparable)} examples"
        )
    tokens = sum(len(e.input_ids) for e in kept)
    loss_tokens = sum(sum(e.loss_mask) for e in kept)
    share = loss_tokens / tokens if tokens else 0.0
    lines.append(
        f"tokens carrying loss: {loss_tokens} of {tokens} ({share:.1%}); "
        f"truncated {sum(e.truncated for e in kept)}, dropped {len(examples) - len(kept)} "
        f"of {len(examples)} sequences"
    )
    if kept and not loss_tokens:
        failures.append(
            "no token carries loss: the masking hides every reply, so training would learn nothing"
        )
    names = ", ".join(repr(tokenizer.decode([i])) for i in sorted(stop_ids)) or "none"
    whole = [e for e in kept if not e.truncated]
    unstopped = [
        n
        for n, e in enumerate(whole, 1)
        if not any(m and i in stop_ids for i, m in zip(e.input_ids, e.loss_mask, strict=True))
    ]
    if not stop_ids:
        failures.append(
            "the tokenizer has no EOS token and the model no generation eos_token_id: "
            "nothing stops generation"
        )
    elif unstopped:
        failures.append(
            f"the token that stops generation ({names}) carries no loss in {len(unstopped)} of {len(whole)} "
            f"untruncated examples (the first: example {unstopped[0]}): the model never learns to stop; "
            f"the chat template's assistant turn must end with it"
        )
    else:
        lines.append(f"stop token {names} inside the loss: {len(whole)} of {len(whole)} untruncated examples")
    return ChatReport(lines, failures)


def packing_fill(encoded: Any, max_length: int) -> str | None:
    """With packing: how full the packed rows are (real tokens / rows x max_length)."""
    if "position_ids" not in getattr(encoded, "column_names", ()):
        return None
    tokens = sum(len(ids) for ids in encoded["input_ids"])
    rows = len(encoded)
    return f"packing: {rows} rows of up to {max_length} tokens, {tokens / (rows * max_length):.1%} full"
