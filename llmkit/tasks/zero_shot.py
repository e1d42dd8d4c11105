"""Zero-shot classification with a causal LM: classification's ``data.verbalizer`` and ``data.prompt``.

No training at all: each row's text is rendered into ``data.prompt`` (``{text}``, and ``{text_pair}`` for
pairs; optionally as a user turn of the model's chat template, ``data.chat_prompt``), and each label is
scored by the log-likelihood of its verbaliser words after the prompt
(:class:`llmkit.models.verbalizer.VerbalizerClassifier`). The classification task encodes, scores and
predicts through these helpers, so `llmkit evaluate` (metrics, intervals, error analysis) and `llmkit
predict` share its code path. The class order is the verbaliser's order; integer labels in a file are
class ids in that order (as ``data.label_names`` names them), string labels must be its keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError
from llmkit.tasks.causal_lm import causal_lm_problem, continuing_text

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TEXT_SLOT, PAIR_SLOT = "{text}", "{text_pair}"


def zero_shot_settings(data: dict[str, Any]) -> dict[str, list[str]] | None:
    """``data.verbalizer`` as label -> verbaliser strings (None when unset), after checking it and the prompt
    settings that go with it; every message names the key."""
    verbalizer, prompt = data.get("verbalizer"), data.get("prompt")
    if verbalizer is None:
        for key in ("prompt", "chat_prompt"):
            if data.get(key):
                raise LlmkitError(
                    f"data.{key} is read only for zero-shot classification with a causal LM; set "
                    f"data.verbalizer too (label -> words, e.g. {{negative: [' bad'], positive: [' good']}})"
                )
        return None
    example = "e.g. {negative: [' bad'], positive: [' good']}"
    if not isinstance(verbalizer, dict) or len(verbalizer) < 2:
        raise LlmkitError(
            f"data.verbalizer must map each label to its words (at least two labels), {example}; "
            f"got {verbalizer!r}"
        )
    words: dict[str, list[str]] = {}
    for label, value in verbalizer.items():
        options = [value] if isinstance(value, str) else value
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise LlmkitError(
                f"data.verbalizer: label {label!r} needs a string or a list of strings, {example}; "
                f"got {value!r}"
            )
        if any(not option for option in options):
            raise LlmkitError(
                f"data.verbalizer: label {label!r} has an empty string; give each label words to score"
            )
        words[str(label)] = options
    if len(words) < len(verbalizer):
        raise LlmkitError("data.verbalizer names a label twice (as a number and as text); name each once")
    check_prompt(prompt, data.get("text_pair"))
    if data.get("problem") not in ("auto", "single_label"):
        raise LlmkitError(
            f"data.problem={data.get('problem')}: zero-shot scoring (data.verbalizer) picks one label per "
            f"row; set data.problem=single_label or drop it"
        )
    return words


def check_prompt(prompt: Any, text_pair: str | None) -> None:
    """A prompt template that places the text (and the pair, for pairs)."""
    if not isinstance(prompt, str) or TEXT_SLOT not in prompt:
        raise LlmkitError(
            f"data.prompt must be a template with {TEXT_SLOT} where the row's text goes, e.g. "
            f"'Review: {TEXT_SLOT}\\nSentiment:'; got {prompt!r}"
        )
    if text_pair and PAIR_SLOT not in prompt:
        raise LlmkitError(f"data.prompt must place {PAIR_SLOT} as well, since data.text_pair is set")
    if not text_pair and PAIR_SLOT in prompt:
        raise LlmkitError(f"data.prompt has {PAIR_SLOT}; set data.text_pair to the column it reads")


def render_prompt(template: str, text: str, pair: str | None = None) -> str:
    """The row in its prompt. A literal ``\\n`` (as a shell passes it) is a newline; braces other than the
    two slots are the prompt's own (no str.format)."""
    rendered = template.replace("\\n", "\n").replace(TEXT_SLOT, text)
    return rendered.replace(PAIR_SLOT, pair) if pair is not None else rendered


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    data: dict[str, Any],
    text: str,
    pair: str | None = None,
) -> list[int]:
    """A row's prompt as token ids within ``data.max_length``: a long text loses its end (the instruction
    after it stays whole), and what is still too long keeps its last tokens (the end the label follows)."""
    max_length = data["max_length"]
    ids = _tokenized_prompt(tokenizer, data, text, pair)
    if len(ids) > max_length:
        text_ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        keep = max(0, len(text_ids) - (len(ids) - max_length) - 2)  # a margin for tokens merging anew
        ids = _tokenized_prompt(tokenizer, data, tokenizer.decode(text_ids[:keep]), pair)[-max_length:]
    return ids


def _tokenized_prompt(
    tokenizer: PreTrainedTokenizerBase, data: dict[str, Any], text: str, pair: str | None
) -> list[int]:
    prompt = render_prompt(data["prompt"], text, pair)
    if not data["chat_prompt"]:
        return tokenizer(prompt, verbose=False).input_ids  # with the model's own start token, if any
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False, verbose=False).input_ids  # the template has them


def check_chat_template(tokenizer: PreTrainedTokenizerBase, data: dict[str, Any], where: Any) -> None:
    """``data.chat_prompt`` needs the model's own chat template (an untrained template means nothing)."""
    template = getattr(tokenizer, "chat_template", None)
    if data.get("chat_prompt") and not (isinstance(template, str) and template.strip()):
        raise LlmkitError(
            f"data.chat_prompt: model {where} has no chat template; set data.chat_prompt=false to score "
            f"the plain prompt"
        )


def verbaliser_ids(tokenizer: PreTrainedTokenizerBase, words: dict[str, list[str]]) -> list[list[list[int]]]:
    """Each label's verbalisers as the tokens that continue a prompt (tokenized apart from it, as a reply
    is, so no start-of-text marker is added)."""
    ids = []
    with continuing_text(tokenizer):
        for label, options in words.items():
            encoded = [
                tokenizer(option, add_special_tokens=False, verbose=False).input_ids for option in options
            ]
            if any(not tokens for tokens in encoded):
                raise LlmkitError(
                    f"data.verbalizer: a word of label {label!r} has no tokens in the model's tokenizer"
                )
            ids.append(encoded)
    return ids


def require_causal_lm_for_verbalizer(model_path: Path) -> None:
    """Scoring verbalisers needs a model that predicts the next token; one line otherwise."""
    from llmkit.models.adaptation import model_config_dict

    problem = causal_lm_problem(model_config_dict(model_path))
    if problem:
        raise LlmkitError(
            f"data.verbalizer: model {model_path} cannot score words: {problem}; zero-shot classification "
            f"needs a causal LM such as smollm2-135m or a generation run"
        )


def load_verbalizer_model(
    model_path: Path, words: dict[str, list[str]], **load_options: Any
) -> PreTrainedModel:
    """The causal LM in ``model_path`` wrapped as a classifier over ``words``' labels (in their order)."""
    from llmkit.models.resolve import load_tokenizer
    from llmkit.models.verbalizer import VerbalizerClassifier
    from llmkit.tasks.causal_lm import load_causal_lm

    require_causal_lm_for_verbalizer(model_path)
    tokenizer = load_tokenizer(model_path, trust_remote_code=load_options.get("trust_remote_code", False))
    language_model = load_causal_lm(model_path, **load_options)
    return VerbalizerClassifier(language_model, verbaliser_ids(tokenizer, words), list(words))
