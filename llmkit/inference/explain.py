"""Why a prediction: word attributions by integrated gradients (``--explain`` on `predict` and `evaluate`).

Method: integrated gradients (Sundararajan et al., 2017) over the model's input embeddings, with Captum's
``LayerIntegratedGradients`` on ``model.get_input_embeddings()`` (a LoRA model hands that on to its base):
token ids cannot be differentiated, their embeddings can. IG rather than attention weights (which are not
attributions) or LIME/SHAP (hundreds of perturbed forward passes for a noisier answer): it needs only
gradients along a path, and it is *complete* -- the attributions add up to f(x) - f(baseline), so how far
they miss (``delta``, in logits) says whether the integral is accurate: ``N_STEPS`` steps, doubled (up to
``MAX_STEPS``) while the delta is over ``TOLERANCE`` of f(x) - f(baseline), for a model whose output turns
sharply somewhere along the path.

Baseline: the same sequence with every non-special token replaced by the pad token, [CLS]/[SEP]/BOS kept.
It is an input of the same length and shape the model has seen (padding), whose only missing part is the
words; special tokens and positions are the same in both, so they get exactly 0 and the attributions split
among the words what the words add. (An all-zero embedding would be a point the model never saw.)

Target, one logit: classification -- the predicted class's; regression -- the single output; multi-label --
the likeliest label's (one pass; it is the label the explanation names, predicted over the threshold or
not). NER -- for each predicted entity, the logit of the tag predicted at the first sub-token of its first
word (where the tag is read), over the sentence's words.

Scores: each token's attribution summed over the embedding, summed over a word's sub-tokens (word ids of a
fast tokenizer; a tokenizer without them scores tokens), then divided by the sum of their absolute values
and rounded to 4 decimals: each word's share of the evidence, + for the target, - against it. Only the
words the model saw are scored (truncation drops the rest). Cost: ``N_STEPS`` forward and backward passes
per target (more where the delta asks for them), in batches of ``INTERNAL_BATCH_SIZE``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.core.errors import LlmkitError, missing_package

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

    from llmkit.tasks import Task

#: The key an explained row gains (predict) and a worst row gains (evaluate).
EXPLANATION = "explanation"
EXPLAINED_TASKS = ("classification", "token-classification")
#: Steps of the path integral, and how many run in one forward/backward pass (bounds the memory).
N_STEPS = 32
INTERNAL_BATCH_SIZE = 16
#: The finest integral tried, and the convergence delta (a share of f(x) - f(baseline)) that is close enough.
MAX_STEPS = 256
TOLERANCE = 0.05
DECIMALS = 4
METHOD = (
    f"integrated gradients over the input embeddings (Captum; pad-token baseline; {N_STEPS} steps, up to "
    f"{MAX_STEPS} where the integral needs them)"
)
CAPTUM_MISSING = str(missing_package("--explain", "captum", "explain"))
#: Encoding keys that are no model input.
NOT_INPUTS = ("special_tokens_mask", "offset_mapping")

#: The logits of a batch -> the one value per row that is explained.
Pick = Callable[[Any], Any]


@dataclass
class Attribution:
    """One target's explanation before normalising: the words the model saw, each word's summed attribution
    (in logit units: they add up to f(x) - f(baseline) + delta), IG's convergence delta and its steps."""

    target: str
    words: list[str]
    raw: list[float]
    delta: float
    steps: int

    def record(self) -> dict[str, Any]:
        """``{"target", "words": [[word, score], ...], "delta", "steps"}``, the |scores| summing to 1."""
        total = sum(abs(value) for value in self.raw) or 1.0
        return {
            "target": self.target,
            "words": [
                [word, rounded(value / total)] for word, value in zip(self.words, self.raw, strict=True)
            ],
            "delta": rounded(self.delta),
            "steps": self.steps,
        }


def rounded(value: float) -> float:
    return round(value, DECIMALS) + 0.0  # + 0.0: no -0.0


def check_explainable(task: Task, model_dir: Path | None = None) -> None:
    """Refuse --explain before any model loads: a task it cannot explain, an exported model (no gradients
    to integrate), or captum not installed."""
    from llmkit.models.exported import exported_refusal, is_exported_folder

    if model_dir is not None and is_exported_folder(model_dir):
        raise exported_refusal(model_dir, "--explain (integrated gradients)")
    if getattr(task, "verbalizer", None) is not None:
        raise LlmkitError(
            "--explain: a zero-shot classifier (data.verbalizer) has no embeddings-to-logits path to "
            "attribute through; drop --explain"
        )
    if task.name not in EXPLAINED_TASKS:
        raise LlmkitError(
            f"--explain: {task.name} models cannot be explained; --explain supports classification and "
            f"token-classification (ner) models, drop --explain"
        )
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        raise LlmkitError(CAPTUM_MISSING) from None


def explanations(
    task: Task,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    predictions: list[dict[str, Any]] | None = None,
) -> list[Any]:
    """Each row's explanation: a dict (classification), or a list with one per predicted entity (NER).

    ``predictions`` hold the rows' prediction keys (``predict``'s dicts, or rows as `llmkit predict` writes
    them), so the explained target is the prediction shown; None: ``task.predict`` on the rows."""
    check_explainable(task)
    if predictions is None:
        predictions = task.predict(model, tokenizer, rows)
    explained = []
    for row, prediction in zip(rows, predictions, strict=True):
        if task.name == "classification":
            explained.append(text_attribution(task, model, tokenizer, row, prediction).record())
        else:
            found = entity_attributions(task, model, tokenizer, row, prediction)
            explained.append([{"entity": entity, **attribution.record()} for entity, attribution in found])
    return explained


def text_attribution(
    task: Task, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, row: dict, prediction: dict
) -> Attribution:
    """A classified row: its words' attributions to the predicted class (the score, the likeliest label)."""
    texts = [str(row[task.data["text"]])]
    if task.data["text_pair"]:
        texts.append(str(row[task.data["text_pair"]]))
    encoded = tokenizer(
        *texts,
        truncation=True,
        max_length=task.data["max_length"],
        return_tensors="pt",
        return_special_tokens_mask=True,
        return_offsets_mapping=tokenizer.is_fast,
    )
    target, index = classification_target(task, model, prediction)
    words, positions = word_positions(tokenizer, encoded, texts=texts)
    return attribution(model, tokenizer, encoded, class_logit(index), target, words, positions)


def classification_target(task: Task, model: PreTrainedModel, prediction: dict) -> tuple[str, int]:
    """The explained output: the predicted class, the likeliest label (multi-label), or the score."""
    from llmkit.tasks.classification import PREDICTED_LABEL, PROBABILITIES

    problem = task.inference_problem(model)
    if problem == "regression":
        return "score", 0
    ids = {name: int(i) for i, name in model.config.id2label.items()}
    if problem == "multi_label":
        probabilities = prediction[PROBABILITIES]
        name = max(probabilities, key=probabilities.get)
    else:
        name = prediction[PREDICTED_LABEL]
    return str(name), ids[name]


def entity_attributions(
    task: Task, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, row: dict, prediction: dict
) -> list[tuple[str, Attribution]]:
    """A tagged row: each predicted entity's text, and the words' attributions to the logit of the tag
    predicted at its first word's first sub-token."""
    import torch

    from llmkit.tasks.token_classification import PREDICTED_ENTITIES, first_sub_tokens

    entities = prediction.get(PREDICTED_ENTITIES) or []
    if not entities:
        return []
    text, spans = task.row_words(row)
    words = [text[start:end] for start, end in spans]
    encoded = tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=task.data["max_length"],
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    with torch.no_grad():
        logits = model(**model_inputs(encoded, model)).logits
    starts = first_sub_tokens(encoded.word_ids(0))
    word_at = {start: index for index, (start, _) in enumerate(spans)}
    seen, positions = word_positions(tokenizer, encoded, words=words)
    found = []
    for entity in entities:
        position = starts[word_at[entity["start"]]]
        tag = int(logits[0, position].argmax())
        pick = tag_logit(position, tag)
        target = str(model.config.id2label[tag])
        found.append((entity["text"], attribution(model, tokenizer, encoded, pick, target, seen, positions)))
    return found


def class_logit(index: int) -> Pick:
    return lambda logits: logits[:, index]


def tag_logit(position: int, tag: int) -> Pick:
    return lambda logits: logits[:, position, tag]


def attribution(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: BatchEncoding,
    pick: Pick,
    target: str,
    words: list[str],
    positions: list[int | None],
) -> Attribution:
    """Integrated gradients of ``pick(logits)`` for one encoded row, its tokens' attributions summed into
    the words they belong to (``positions``: each token's word, None for special tokens)."""
    raw, delta, steps = integrated_gradients(model, tokenizer, encoded, pick)
    summed = [0.0] * len(words)
    for value, index in zip(raw, positions, strict=True):
        if index is not None:
            summed[index] += value
    return Attribution(target, words, summed, delta, steps)


def integrated_gradients(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: BatchEncoding, pick: Pick
) -> tuple[list[float], float, int]:
    """Each token's attribution (summed over the embedding) to ``pick(logits)`` of one encoded row, the
    convergence delta (the attributions' sum minus f(x) - f(baseline)) and the steps it took: ``N_STEPS``,
    doubled up to ``MAX_STEPS`` while the delta is over ``TOLERANCE`` of f(x) - f(baseline) (at least of
    one logit) -- a model whose output turns sharply along the path needs a finer integral."""
    from captum.attr import LayerIntegratedGradients

    inputs = model_inputs(encoded, model)
    input_ids = inputs.pop("input_ids")
    names = list(inputs)

    def forward(ids: Any, *values: Any) -> Any:
        return pick(model(input_ids=ids, **dict(zip(names, values, strict=True))).logits.float())

    integral = LayerIntegratedGradients(forward, model.get_input_embeddings())
    baseline = pad_baseline(tokenizer, encoded).to(input_ids.device)
    change = logit_change(model, encoded, pick, baseline)
    steps = N_STEPS
    while True:
        attributions = integral.attribute(
            input_ids,
            baselines=baseline,
            additional_forward_args=tuple(inputs.values()),
            n_steps=steps,
            internal_batch_size=INTERNAL_BATCH_SIZE,
        )
        raw = attributions.float().sum(dim=-1)[0].tolist()
        delta = sum(raw) - change
        if abs(delta) <= TOLERANCE * max(abs(change), 1.0) or steps >= MAX_STEPS:
            return raw, delta, steps
        steps *= 2


def logit_change(model: PreTrainedModel, encoded: BatchEncoding, pick: Pick, baseline: Any) -> float:
    """f(x) - f(baseline) at the ends of the integral's path: the baseline's embeddings under the row's own
    ids (as Captum runs the path), which a model may read besides (a decoder classifier pools at its last
    non-pad token), so the delta is the integral's error alone."""
    import torch

    inputs = model_inputs(encoded, model)
    layer = model.get_input_embeddings()
    with torch.no_grad():
        padded = layer(baseline)
        end = pick(model(**inputs).logits.float())
        swap = layer.register_forward_hook(lambda module, args, output: padded)
        try:
            start = pick(model(**inputs).logits.float())
        finally:
            swap.remove()
    return float(end[0] - start[0])


def model_inputs(encoded: BatchEncoding, model: PreTrainedModel) -> dict[str, Any]:
    return {key: value.to(model.device) for key, value in encoded.items() if key not in NOT_INPUTS}


def pad_baseline(tokenizer: PreTrainedTokenizerBase, encoded: BatchEncoding) -> Any:
    """The row with every non-special token replaced by the pad token (see the module doc for why)."""
    import torch

    special = encoded["special_tokens_mask"].bool()
    return torch.where(
        special, encoded["input_ids"], torch.full_like(encoded["input_ids"], tokenizer.pad_token_id)
    )


def word_positions(
    tokenizer: PreTrainedTokenizerBase,
    encoded: BatchEncoding,
    texts: list[str] | None = None,
    words: list[str] | None = None,
) -> tuple[list[str], list[int | None]]:
    """The words the model saw, in order, and each token's index among them (None: a special token).

    ``words``: the row was encoded as these words (NER); ``texts``: as these texts (a text and its pair),
    a word's text then runs from its first sub-token's start to its last one's end. A tokenizer without
    word ids (a slow one): each token is a word."""
    special = encoded["special_tokens_mask"][0].tolist()
    if not encoded.is_fast:
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
        kept = [token for token, is_special in zip(tokens, special, strict=True) if not is_special]
        numbers = iter(range(len(kept)))
        return kept, [None if is_special else next(numbers) for is_special in special]
    offsets = encoded["offset_mapping"][0].tolist() if words is None else None
    found: dict[tuple[int, int], int] = {}
    spans: list[list[int]] = []  # texts: per word, its text (0: text, 1: pair), first character and end
    positions: list[int | None] = []
    for position, key in enumerate(zip(encoded.sequence_ids(0), encoded.word_ids(0), strict=True)):
        if key[1] is None or special[position]:
            positions.append(None)
            continue
        if key not in found:
            found[key] = len(found)
            if offsets is not None:
                spans.append([key[0], *offsets[position]])
        elif offsets is not None:
            spans[found[key]][2] = offsets[position][1]
        positions.append(found[key])
    if words is not None:
        return [words[word] for _, word in found], positions
    return [texts[text][start:end].strip() for text, start, end in spans], positions


__all__ = ["CAPTUM_MISSING", "EXPLANATION", "check_explainable", "explanations"]
