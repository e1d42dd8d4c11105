"""Decoder-only machinery shared by the tasks that train causal LMs (generation, summarization).

* Examples: a conversation or a prompt/response pair becomes ``input_ids`` + ``labels`` where every token
  the model should not learn to write (system text, the user's turn, the template) carries -100.
* Plain text: documents are either joined with EOS and cut into equal blocks, or *packed*: several
  documents share a row, ``position_ids`` restart at 0 for each, and no ``attention_mask`` is passed, so
  transformers' mask builder sees the restarts and keeps each document from attending to the others.
* Models: loading a causal LM and refusing, with one line, folders that cannot generate.
* Training: a padding collator that understands packed rows and a Trainer that reports perplexity and
  computes vocabulary logits only where a label is predicted.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError, did_you_mean
from llmkit.data.token_blocks import cut_chunks, joined_chunks
from llmkit.models.adaptation import from_pretrained, inner_model, model_config_dict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value that the loss skips (torch's cross-entropy default)
CHAT_ROLES = ("system", "user", "assistant")

#: llmkit's template for models without a chat template of their own (Alpaca-style headings). A system
#: message is a preamble, each user turn an "### Instruction:", each assistant turn a "### Response:" that
#: ends with the EOS token, so a model trained on it learns to stop. It is saved with the fine-tuned
#: tokenizer, so `llmkit generate --chat` and pipelines use the same format afterwards.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)


# -- examples: prompt / response -> input_ids + labels --------------------------------------------------
@dataclass
class Example:
    """One training sequence; ``labels`` is ``input_ids`` with IGNORE_INDEX where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids a tokenizer puts before any text by default (Llama-style BOS), [] for GPT-2-style ones."""
    with_specials = tokenizer("a").input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    if not without or with_specials[-len(without) :] != without:
        return []
    return list(with_specials[: len(with_specials) - len(without)])


@contextlib.contextmanager
def continuing_text(tokenizer: PreTrainedTokenizerBase) -> Iterator[None]:
    """Tokenize a piece that continues a text, not one that starts it.

    SentencePiece-style tokenizers (Llama 2, Mistral, T5: a Metaspace pre-tokenizer that prepends, or a
    ``Prepend("▁")`` normalizer) mark the start of every string they see as a word start. A reply
    tokenized on its own after "...Response:\n" would then begin with a space the rendered conversation
    does not have, and the model would learn to write it. Byte-level BPE tokenizers are unaffected.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        yield
        return
    saved = backend.pre_tokenizer, backend.normalizer
    try:
        backend.pre_tokenizer = _without_word_start(backend.pre_tokenizer)
        backend.normalizer = _without_word_start(backend.normalizer)
        yield
    finally:
        backend.pre_tokenizer, backend.normalizer = saved


def _without_word_start(component: Any) -> Any:
    """A copy of a pre-tokenizer or normalizer with every start-of-text marker switched off."""
    if component is None:
        return None
    state = json.loads(component.__getstate__())

    def switch_off(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Metaspace":
                node["prepend_scheme"] = "never"
            elif node.get("type") == "Prepend":
                node["prepend"] = ""
            for value in node.values():
                switch_off(value)
        elif isinstance(node, list):
            for value in node:
                switch_off(value)

    switch_off(state)
    changed = copy.copy(component)
    changed.__setstate__(json.dumps(state).encode())
    return changed


def tokenize_segments(
    tokenizer: PreTrainedTokenizerBase,
    segments: Sequence[tuple[str, bool]],
    max_length: int,
    append_eos: bool = False,
    shrink: int | None = None,
) -> Example:
    """Tokenize ``(text, trainable)`` pieces in order; only trainable pieces keep their labels.

    Pieces are tokenized separately, so a label boundary never falls inside a token. An example longer
    than ``max_length`` loses the end of piece ``shrink`` when one is named (a document, so that the
    instructions around it and the response stay whole), and is then cut at ``max_length`` if still too
    long; ``truncated`` says whether anything was cut.
    """
    prefix = leading_special_ids(tokenizer)
    if not prefix or (segments and segments[0][0].startswith(tokenizer.decode(prefix))):
        prefix = []
    pieces = []
    for number, (text, _) in enumerate(segments):
        with continuing_text(tokenizer) if number else contextlib.nullcontext():
            pieces.append(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
    eos = [tokenizer.eos_token_id] if append_eos and tokenizer.eos_token_id is not None else []
    excess = len(prefix) + sum(len(ids) for ids in pieces) + len(eos) - max_length
    if excess > 0 and shrink is not None:
        pieces[shrink] = pieces[shrink][: max(0, len(pieces[shrink]) - excess)]
    input_ids: list[int] = list(prefix)
    labels: list[int] = [IGNORE_INDEX] * len(prefix)
    for ids, (_, trainable) in zip(pieces, segments, strict=True):
        input_ids += ids
        labels += ids if trainable else [IGNORE_INDEX] * len(ids)
    if eos:
        input_ids += eos
        labels += eos if segments and segments[-1][1] else [IGNORE_INDEX]
    return Example(input_ids[:max_length], labels[:max_length], truncated=excess > 0)


def segments_to_example(
    tokenizer: PreTrainedTokenizerBase,
    segments: Sequence[tuple[str, bool]],
    max_length: int,
    append_eos: bool = False,
    shrink: int | None = None,
) -> Example | None:
    """:func:`tokenize_segments` for training: None when nothing trainable is left after truncation."""
    example = tokenize_segments(tokenizer, segments, max_length, append_eos, shrink)
    if all(label == IGNORE_INDEX for label in example.labels[1:]):  # the first label is never predicted
        return None
    return example


def prompt_response_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_length: int
) -> Example | None:
    """A formatted prompt followed by its response + EOS; the loss covers the response and EOS only."""
    return segments_to_example(tokenizer, [(prompt, False), (response, True)], max_length, append_eos=True)


def chat_template_for(tokenizer: PreTrainedTokenizerBase, use_model_template: bool = True) -> str:
    """The model's own chat template when it has one (and it is wanted), else llmkit's default."""
    own = getattr(tokenizer, "chat_template", None)
    return own if use_model_template and isinstance(own, str) and own.strip() else DEFAULT_CHAT_TEMPLATE


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    template: str,
    add_generation_prompt: bool = False,
) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def chat_prompt_messages(value: Any, shape: str, where: str) -> list[dict[str, str]]:
    """A prompt cell as chat messages ending with the user's turn: ``text`` is one user turn, ``chat`` a list
    of ``{role, content}`` messages (preference tuning and GRPO read prompts so); ``where`` names the cell."""
    if shape == "text":
        if not isinstance(value, str) or not value.strip():
            shown = "empty" if value is None or isinstance(value, str) else f"not text ({value!r})"
            raise LlmkitError(f"{where} is {shown}; fill in or remove that row")
        return [{"role": "user", "content": value.strip()}]
    if not isinstance(value, list) or not value:
        raise LlmkitError(f"{where} is not a non-empty list of {{role, content}} messages")
    messages = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise LlmkitError(
                f"{where}: message {number} is not a {{role, content}} object with text content"
            )
        if message.get("role") not in CHAT_ROLES:
            role = message.get("role")
            raise LlmkitError(
                f"{where}: message {number} has unknown role {role!r}"
                f"{did_you_mean(str(role), CHAT_ROLES)}; roles are {', '.join(CHAT_ROLES)}"
            )
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise LlmkitError(
            f"{where}: the last message is {messages[-1]['role']!r}; a prompt ends with the user's turn"
        )
    return messages


def checked_format(data: dict[str, Any], formats: tuple[str, ...]) -> str:
    """``data.format``, one of the task's row formats (``auto`` decides per row)."""
    if data["format"] not in formats:
        raise LlmkitError(
            f"data.format must be one of {', '.join(formats)}, got {data['format']!r}"
            f"{did_you_mean(str(data['format']), formats)}"
        )
    return data["format"]


def carry_chat_template(tokenizer: PreTrainedTokenizerBase, template: str) -> None:
    """The saved model carries the template it was tuned in (`llmkit generate --chat` then uses it), and a pad
    token for batches of prompts."""
    tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def frozen_reference(model: Any) -> Any | None:
    """TRL's reference model for a fully tuned policy: a frozen copy (TRL would reload it from the model's
    name); None for a LoRA policy, whose reference is the base with the adapter switched off."""
    import copy

    from llmkit.models.adaptation import is_adapted

    return None if is_adapted(model) else copy.deepcopy(model).eval().requires_grad_(False)


def drop_reference_adapter(model: Any) -> None:
    """TRL adds a "ref" adapter beside a LoRA policy's; llmkit's adapter is new (its update is zero), so the
    base with the adapter off is already the reference, and a second adapter would be saved with the first."""
    from llmkit.models.adaptation import is_adapted

    if is_adapted(model) and "ref" in model.peft_config:
        model.delete_adapter("ref")


def required_chat_template(tokenizer: PreTrainedTokenizerBase, use_model_template: bool, what: str) -> str:
    """The model's chat template, or llmkit's when ``data.use_chat_template`` is false; a model without one is
    an error (``what`` cannot be rendered as the model is prompted), not a guess."""
    if not use_model_template:
        return DEFAULT_CHAT_TEMPLATE
    own = getattr(tokenizer, "chat_template", None)
    if not (isinstance(own, str) and own.strip()):
        raise LlmkitError(
            f"the model has no chat template, so {what} cannot be rendered as it is prompted; set "
            f"data.use_chat_template=false to use llmkit's documented template (docs/tasks/generation.md), "
            f"or use a chat model such as smollm2-135m"
        )
    return own


def conversation_segments(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], template: str
) -> list[tuple[str, bool]]:
    """Split a rendered conversation into (text, trainable) pieces: assistant replies are trainable.

    Each reply is located by rendering the conversation up to it with the generation prompt, then with
    it: the difference is exactly what the model would have to write, template tokens (end of turn)
    included. Templates that re-render earlier turns differently cannot be split this way.
    """
    segments: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:index], template, add_generation_prompt=True)
        after = render_chat(tokenizer, messages[: index + 1], template)
        if not before.startswith(done) or not after.startswith(before):
            raise ValueError("the chat template renders earlier turns differently as the conversation grows")
        segments += [(before[len(done) :], False), (after[len(before) :], True)]
        done = after
    rest = render_chat(tokenizer, messages, template)[len(done) :]
    if rest:
        segments.append((rest, False))
    return [(text, trainable) for text, trainable in segments if text]


def instruction_messages(
    instruction: str, input_text: str | None, output: str | None
) -> list[dict[str, str]]:
    """An Alpaca-style row as a conversation; an input follows the instruction after a blank line."""
    user = instruction.strip()
    if isinstance(input_text, str) and input_text.strip():
        user = f"{user}\n\n{input_text.strip()}"
    messages = [{"role": "user", "content": user}]
    if output is not None:
        messages.append({"role": "assistant", "content": output})
    return messages


# -- plain text: blocks or packed documents ---------------------------------------------------------------
def document_ids(tokenizer: PreTrainedTokenizerBase, documents: Iterable[str]) -> Iterable[list[int]]:
    """Each document's token ids followed by EOS (the model learns where documents end)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for document in documents:
        yield tokenizer(document, add_special_tokens=False, verbose=False).input_ids + eos


def concatenated_blocks(token_lists: Iterable[list[int]], block_size: int) -> dict[str, list[list[int]]]:
    """Join all documents and cut the stream into ``block_size`` blocks (the last may be shorter).

    Attention crosses document boundaries inside a block: the classic run_clm recipe.
    """
    return joined_chunks(concatenated_block_chunks([token_lists], block_size))


def concatenated_block_chunks(
    chunks: Iterable[Iterable[list[int]]], block_size: int
) -> Iterator[dict[str, list[list[int]]]]:
    """:func:`concatenated_blocks` of a corpus given a chunk of documents at a time (a stream): each chunk's
    tail opens the next chunk's first block, so the blocks are those of the corpus read whole."""
    documents = ({"input_ids": list(token_lists)} for token_lists in chunks)
    for blocks in cut_chunks(documents, block_size, last_at_least=2):
        ids = [block for block in blocks.get("input_ids", []) if len(block) > 1]
        yield {"input_ids": ids, "labels": [list(block) for block in ids]}


def document_examples(token_lists: Iterable[list[int]], max_length: int) -> list[Example]:
    """Documents as separate examples; a long one is cut into ``max_length`` pieces, each on its own."""
    examples = []
    for tokens in token_lists:
        for start in range(0, len(tokens), max_length):
            piece = tokens[start : start + max_length]
            if len(piece) > 1:
                examples.append(Example(piece, [IGNORE_INDEX, *piece[1:]]))
    return examples


def pack_examples(examples: Iterable[Example], max_length: int) -> dict[str, list[list[int]]]:
    """Pack examples into rows of at most ``max_length`` tokens, positions restarting at 0 for each.

    Best-fit decreasing: longest examples first, each into the open row it fills most tightly, so rows
    end up nearly full (packing in file order leaves a fifth of each row empty on Alpaca). The first
    label of every example is IGNORE_INDEX (nothing before it in its own document predicts it), so the
    loss of a packed row is the sum of its documents' own losses.
    """
    members: list[list[Example]] = []
    rows_with_room: dict[int, list[int]] = {}  # free tokens -> rows with exactly that much room
    rooms: list[int] = []  # the keys of rows_with_room, sorted
    for example in sorted(examples, key=lambda e: -len(e.input_ids)):
        size = len(example.input_ids)
        at = bisect.bisect_left(rooms, size)
        if at < len(rooms):  # the tightest open row it fits in
            room = rooms[at]
            row = rows_with_room[room].pop()
            if not rows_with_room[room]:
                del rows_with_room[room], rooms[at]
            members[row].append(example)
        else:
            room, row = max_length, len(members)
            members.append([example])
        left = room - size
        if left > 0:
            if left not in rows_with_room:
                rows_with_room[left] = []
                bisect.insort(rooms, left)
            rows_with_room[left].append(row)
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for row_examples in members:
        rows["input_ids"].append([t for e in row_examples for t in e.input_ids])
        rows["labels"].append([t for e in row_examples for t in (IGNORE_INDEX, *e.labels[1:])])
        rows["position_ids"].append([p for e in row_examples for p in range(len(e.input_ids))])
    return rows


class CausalLMCollator:
    """Right-pads ``input_ids``/``labels``; rows with ``position_ids`` (packed) get no attention mask.

    Passing ``position_ids`` without a 2D mask is what lets transformers detect the packed documents;
    padding gets position 0, so each pad token is a one-token "document" that nothing real attends to.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(feature["input_ids"]) for feature in features)
        packed = "position_ids" in features[0]
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        if packed:
            batch["position_ids"] = []
        else:
            batch["attention_mask"] = []
        for feature in features:
            ids = list(feature["input_ids"])
            padding = longest - len(ids)
            batch["input_ids"].append(ids + [self.pad_token_id] * padding)
            batch["labels"].append(list(feature.get("labels", ids)) + [IGNORE_INDEX] * padding)
            if packed:
                batch["position_ids"].append(list(feature["position_ids"]) + [0] * padding)
            else:
                batch["attention_mask"].append([1] * len(ids) + [0] * padding)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


# -- models -------------------------------------------------------------------------------------------
def causal_lm_problem(config: dict[str, Any]) -> str | None:
    """Why a model folder's config cannot generate text, or None when it is a decoder that can."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.get("model_type", "?")
    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return None
    if config.get("is_encoder_decoder"):
        return f"it is an encoder-decoder ({model_type})"
    heads = [a for a in architectures if "For" in a]
    if heads:
        return f"it is a {heads[0]}, not a causal language model"
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"model type '{model_type}' has no causal-LM head in transformers"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder"):
        return f"it is an encoder ({model_type}, a masked LM)"
    return None


def require_causal_lm(model_path: Path, name: str) -> dict[str, Any]:
    """The folder's config, or a one-line error saying why this model cannot generate."""
    config = model_config_dict(Path(model_path))
    problem = causal_lm_problem(config)
    if problem:
        raise LlmkitError(
            f"model {name} ({model_path}) cannot generate text: {problem}; use a decoder-only "
            f"model such as smollm2-135m or tiny-gpt2"
        )
    return config


def check_causal_lm_length(model_path: Path, max_length: int) -> None:
    """A model that can generate and whose context holds ``data.max_length`` tokens; else one line."""
    config = require_causal_lm(model_path, str(model_path))
    context = config.get("max_position_embeddings") or config.get("n_positions")
    if isinstance(context, int) and max_length > context:
        raise LlmkitError(
            f"data.max_length={max_length} is longer than the model's context "
            f"({context} positions); set data.max_length={context} or less"
        )


def context_length(model: PreTrainedModel) -> int | None:
    """How many positions the model can attend over (None when the config does not say)."""
    value = getattr(model.config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def load_causal_lm(model_path: Path, **load_options: Any) -> PreTrainedModel:
    """``load_options``: the recipe's safe-loading settings (trust_remote_code, use_safetensors)."""
    from transformers import AutoModelForCausalLM

    return from_pretrained(AutoModelForCausalLM, model_path, **load_options)


def penalty_kwargs(repetition_penalty: float | None) -> dict[str, float]:
    """``generate``'s repetition_penalty; none (None or 1) is left out, as ``generate`` itself does."""
    return {} if repetition_penalty in (None, 1) else {"repetition_penalty": repetition_penalty}


def generate_left_padded(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    pad_token_id: int,
    max_new_tokens: int,
    num_beams: int = 1,
    eos_token_ids: Sequence[int] | None = None,
    repetition_penalty: float = 1.0,
) -> Any:
    """Greedy (or beam) continuations of a batch of prompts: a (batch, <= max_new_tokens) tensor of new ids.

    Decoder-only models continue the last position of each row, so prompts are padded on the left (with an
    attention mask); rows that stop early are filled with ``pad_token_id`` after their end-of-sequence.
    """
    import torch

    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    stop = {"eos_token_id": list(eos_token_ids)} if eos_token_ids else {}  # else the model's own
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            pad_token_id=pad_token_id,
            **stop,
            **penalty_kwargs(repetition_penalty),
        )
    return output[:, width:]


def packed_documents_stay_apart(model: PreTrainedModel, tolerance: float = 1e-3) -> bool:
    """Run two short documents packed in one row and alone: equal logits prove no cross attention.

    Costs two forward passes over 12 tokens. Models whose attention ignores ``position_ids`` restarts (or
    that take no ``position_ids``) fail, and packing must then be switched off for them. The model runs as
    configured, so a ``use_cache`` left on (which disables the detection in transformers) fails too.
    """
    import torch

    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab, (1, 5), generator=generator)
    second = torch.randint(0, vocab, (1, 7), generator=generator)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = model.device
            alone = model(input_ids=second.to(device)).logits
            positions = torch.tensor([[*range(5), *range(7)]], device=device)
            both = torch.cat([first, second], dim=1).to(device)
            packed = model(input_ids=both, position_ids=positions).logits
    except TypeError:
        return False
    finally:
        model.train(was_training)
    return bool((packed[:, 5:] - alone).abs().max() <= tolerance)


# -- training ----------------------------------------------------------------------------------------
def perplexity(loss: float) -> float:
    """exp(mean token loss); inf instead of an OverflowError for a diverged model."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def lm_head_and_body(model: Any) -> tuple[Any, Any] | None:
    """(body, head) of a causal LM whose logits are a plain projection of the last hidden states.

    None when the model is wrapped (DDP), has no separate head, or post-processes its logits (Gemma's
    soft-capping, Cohere's logit scale): those take the ordinary path.
    """
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    scaled = any(getattr(config, key, None) for key in ("final_logit_softcapping", "logit_scale"))
    if body is None or body is model or head is None or scaled:
        return None
    return body, head


def causal_lm_trainer_class() -> type:
    """A Trainer whose evaluations also report ``<prefix>_perplexity`` (logged and returned).

    Its training loss computes vocabulary logits only at positions that predict a label: with prompts
    masked (instructions, documents), most positions carry none, and the LM head of a small model costs
    a fifth of its forward pass (SmolLM2-135M: 576 x 49,152 per token). The loss is the same.
    """
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    from llmkit.core.devices import shards_parameters

    class CausalLMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            fast = not (return_outputs or not model.training or "labels" not in inputs)
            if not fast or self._body_and_head(model) is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # a micro-batch mean: llmkit.training.loss_scaling weighs it
            return self.loss_and_item_logits(model, inputs)[0]

        def loss_and_item_logits(self, model, inputs, hard_loss: bool = True):
            """(the mean next-token loss, the vocabulary logits at the positions that predict a label): the
            logits at position t predict token t+1, so row t of the result is position t whose label t+1 is
            not -100, the items the loss averages. A distilling trainer (llmkit.training.distillation)
            compares them with its teacher's, which it passes here too with ``hard_loss=False`` (the loss is
            then None). A model the fast path cannot split (sharded, post-processed logits) runs its own
            forward, and the same positions are kept."""
            targets = inputs["labels"][:, 1:]
            selected = targets != IGNORE_INDEX
            features = {key: value for key, value in inputs.items() if key != "labels"}
            parts = self._body_and_head(model)
            if parts is None:
                logits = model(**features, use_cache=False).logits[:, :-1][selected]
            else:
                body, head = parts
                hidden = body(**features, use_cache=False)[0][:, :-1]
                logits = head(hidden[selected])
            if not hard_loss:
                return None, logits
            loss = F.cross_entropy(logits.float(), targets[selected], reduction="sum")
            return loss / selected.sum().clamp(min=1), logits

        def _body_and_head(self, model) -> tuple[Any, Any] | None:
            # a LoRA-wrapped model: its transformers modules, with the adapters inside
            return None if shards_parameters(self) else lm_head_and_body(inner_model(model))

        def _track_num_input_tokens(self, inputs):
            # Packed rows carry no attention mask, and the Trainer would then skip every token equal to
            # the pad id, which for many tokenizers is also the end-of-turn/EOS token inside the rows.
            # Only the tail the collator padded (pad id at position 0, to the row's end) is padding.
            if (
                self.args.include_num_input_tokens_seen != "non_padding"
                or "attention_mask" in inputs
                or "position_ids" not in inputs
            ):
                return super()._track_num_input_tokens(inputs)
            pad_id = getattr(self.data_collator, "pad_token_id", None)
            ids, positions = inputs["input_ids"], inputs["position_ids"]
            is_pad = (ids == pad_id) & (positions == 0)
            tail = is_pad.flip(-1).int().cumprod(-1).sum()
            tokens = torch.as_tensor(ids.numel() - int(tail), device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

        def evaluation_loop(
            self,
            dataloader,
            description: str,
            prediction_loss_only: bool | None = None,
            ignore_keys: list[str] | None = None,
            metric_key_prefix: str = "eval",
        ):
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            loss = output.metrics.get(f"{metric_key_prefix}_loss")
            if loss is not None:
                output.metrics[f"{metric_key_prefix}_perplexity"] = perplexity(loss)
            return output

    return CausalLMTrainer
