"""Text in, text out (summarization, translation): the two model families they share, in one place.

The model's config picks the family (``check_model``):

* ``seq2seq`` -- T5, BART, ... (``AutoModelForSeq2SeqLM``, ``Seq2SeqTrainer``): the model reads
  ``data.source_prefix`` + the source text (the prefix defaults to the task's T5 prefix for T5 models, none
  for others), the labels are the target's tokens.
* ``causal`` -- SmolLM2, GPT-2, ... through ``llmkit.tasks.causal_lm``: ``data.prompt`` with the source text
in it
  is the user turn of a chat (the model's template, or llmkit's), the target is the reply, and only the reply
  and its end-of-turn tokens carry a loss.

Truncation rule (both families): a target keeps at most ``data.max_target_length`` tokens. The source may
take ``data.max_length`` tokens (seq2seq), or the prompt may take ``data.max_length - data.max_target_length``
tokens so that prompt + target fit in ``data.max_length`` (decoder-only). A source that does not fit loses
its end; the prefix, the instructions, the template and the target are never cut for it. Each split reports
how many sources were cut (``<split>_<truncation_key>``, also on stderr).

Evaluation generates targets as predictions do (``data.max_new_tokens``, ``data.num_beams``,
``data.repetition_penalty``; greedy by default), one batch at a time, and hands each batch's texts to the
task's scorer (``batch_eval_metrics``), so neither logits nor generated ids are ever held: the scorer's
metrics, ``eval_gen_len`` and ``eval_loss``.

A task built on :class:`TextToTextTask` says which columns hold its source and target, how its prompt
names the source, what a T5 model reads before it, and how its generated texts are scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transformers import Seq2SeqTrainingArguments

from llmkit.core.errors import LlmkitError
from llmkit.core.progress import log
from llmkit.data.files import Split, join_lists, require_columns, require_text
from llmkit.models.adaptation import from_pretrained, model_config_dict
from llmkit.tasks.base import FAST_LOSS_COMPILE_REFUSAL, Task
from llmkit.tasks.causal_lm import (
    IGNORE_INDEX,
    CausalLMCollator,
    Example,
    causal_lm_problem,
    causal_lm_trainer_class,
    chat_template_for,
    conversation_segments,
    generate_left_padded,
    load_causal_lm,
    penalty_kwargs,
    tokenize_segments,
)
from llmkit.tasks.decoding import check_repetition_penalty

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREDICT_BATCH_SIZE = 16
# Stand-ins rendered through the chat template once, to find where the source and target go.
_SOURCE_MARK = "\u2063llmkit-document\u2063"
_TARGET_MARK = "\u2063llmkit-summary\u2063"


@dataclass
class ChatFrame:
    """The chat template around a source and a target: prompt = head + source + tail, reply likewise."""

    head: str
    tail: str
    reply_head: str
    reply_tail: str


def chat_frame(tokenizer: PreTrainedTokenizerBase, template: str, prompt: str, field: str) -> ChatFrame:
    """Render [user: prompt, assistant: target] once with stand-ins and split the text around them;
    ``field`` is where the source goes in ``prompt`` (e.g. ``{document}``)."""
    messages = [
        {"role": "user", "content": prompt.replace(field, _SOURCE_MARK)},
        {"role": "assistant", "content": _TARGET_MARK},
    ]
    segments = conversation_segments(tokenizer, messages, template)
    prompt_text, reply_text = segments[0][0], segments[1][0]
    if prompt_text.count(_SOURCE_MARK) != 1 or reply_text.count(_TARGET_MARK) != 1:
        raise ValueError("the chat template does not render the user and assistant contents verbatim")
    head, tail = prompt_text.split(_SOURCE_MARK)
    reply_head, reply_tail = reply_text.split(_TARGET_MARK)
    return ChatFrame(head, tail, reply_head, reply_tail)


def read_config(model_path: Path) -> dict[str, Any]:
    return model_config_dict(Path(model_path))


def model_context(config: dict[str, Any]) -> int | None:
    """Positions the model attends over (learned or rotary limits); None when unbounded (T5) or unknown."""
    context = config.get("max_position_embeddings") or config.get("n_positions")
    return context if isinstance(context, int) and context > 0 else None


def model_family(config: dict[str, Any]) -> tuple[str | None, str]:
    """("seq2seq" | "causal", "") for a model that can write a target text, else (None, why it cannot)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type", "?")
    if config.get("is_encoder_decoder"):
        if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            return "seq2seq", ""
        return None, f"encoder-decoder '{model_type}' has no sequence-to-sequence LM head in transformers"
    problem = causal_lm_problem(config)
    return ("causal", "") if problem is None else (None, problem)


@dataclass
class GenerationEvalArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments that generate at evaluation (what ``Seq2SeqTrainer`` reads).

    Generation settings come from the recipe's ``data`` keys (``TextToTextTask.decoding``), passed by the
    trainers; a module-level class, because the Trainer pickles its arguments into checkpoints.
    """

    predict_with_generate: bool = field(default=True)


class TextToTextTask(Task):
    """A source text in, a target text out; subclasses name the columns, the prompt and the scores."""

    #: decoder-only outputs; seq2seq folders load with AutoModelForSeq2SeqLM (transformers 5 has no
    #: summarization or translation pipeline any more).
    pipeline_task = "text-generation"
    torch_compile_refusal = FAST_LOSS_COMPILE_REFUSAL
    training_defaults: ClassVar[dict[str, Any]] = {
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "batch_eval_metrics": True,  # score each generated batch and drop it
        "train_sampling_strategy": "group_by_length",  # sources vary in length: batch similar ones
    }
    #: What the task does, for messages ("cannot summarize").
    verb: ClassVar[str]
    #: The source, one and many, for messages and the truncation count ("document", "documents").
    source_noun: ClassVar[str]
    source_plural: ClassVar[str]
    #: The encoding metric counting cut sources: ``<split>_<truncation_key>``.
    truncation_key: ClassVar[str]
    #: Where the source goes in ``data.prompt``.
    prompt_field: ClassVar[str]
    #: The key each prediction is written under, beside the input row.
    prediction_key: ClassVar[str]
    #: How a .txt --input of the demo command is read: one text a line, or a paragraph each.
    txt_unit: ClassVar[str] = "paragraph"

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        for key in ("max_length", "max_target_length", "max_new_tokens", "num_beams"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
                raise LlmkitError(f"data.{key} must be a whole number of at least 1, got {data[key]!r}")
        data["repetition_penalty"] = check_repetition_penalty(
            data["repetition_penalty"], "data.repetition_penalty"
        )
        prompt = data["prompt"]
        if not isinstance(prompt, str) or prompt.count(self.prompt_field) != 1:
            raise LlmkitError(
                f"data.prompt must contain {self.prompt_field} exactly once (where the {self.source_noun} "
                f"goes), got {prompt!r}"
            )
        if data["source_prefix"] is not None and not isinstance(data["source_prefix"], str):
            raise LlmkitError(f"data.source_prefix must be a string or null, got {data['source_prefix']!r}")
        self.family: str | None = None  # set by check_model from the model's config
        self.model_type = ""

    # -- what a subclass says ---------------------------------------------------------------------------
    def source_column(self) -> str:
        """The column that holds the source texts."""
        raise NotImplementedError

    def target_column(self) -> str:
        """The column that holds the target texts (absent from a split that is to be predicted)."""
        raise NotImplementedError

    def source_key(self) -> str:
        """The ``data`` key that names the source column, for messages."""
        raise NotImplementedError

    def target_key(self) -> str:
        raise NotImplementedError

    def set_source_column(self, column: str) -> None:
        """Read the sources from another column (a demo's --column, a .txt file's ``text``)."""
        raise NotImplementedError

    def t5_prefix(self) -> str:
        """What a T5 model reads before the source when the recipe sets no data.source_prefix."""
        raise NotImplementedError

    def prompt_text(self) -> str:
        """``data.prompt`` as the user turn says it, the source field still in it."""
        return self.data["prompt"]

    def scorer(self, tokenizer: PreTrainedTokenizerBase) -> GeneratedTextScorer:
        """The ``compute_metrics`` that scores the generated texts of each evaluation batch."""
        raise NotImplementedError

    # -- data -------------------------------------------------------------------------------------
    def check_inputs(self, split: Split) -> None:
        require_columns(split, {self.source_key(): self.source_column()})
        join_lists(split, self.source_column(), self.data["join_lists"])
        require_text(split, self.source_column(), self.source_key())

    def check_data(self, splits: dict[str, Split]) -> None:
        """Every split's sources; its targets too, unless it is a test split to predict (no target column)."""
        for split in splits.values():
            self.check_inputs(split)
            if split.role != "test" or self.target_column() in split.dataset.column_names:
                self.check_targets(split)

    def check_targets(self, split: Split) -> None:
        require_columns(split, {self.target_key(): self.target_column()})
        require_text(split, self.target_column(), self.target_key())

    def source_prefix(self) -> str:
        """The recipe's prefix, or by default the task's T5 prefix for T5 models and nothing for others."""
        if self.data["source_prefix"] is not None:
            return self.data["source_prefix"]
        return self.t5_prefix() if self.model_type == "t5" else ""

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        from datasets import Dataset

        sources = list(dataset[self.source_column()])
        target_column = self.target_column()
        targets = list(dataset[target_column]) if target_column in dataset.column_names else None
        if self._family() == "seq2seq":
            return Dataset.from_dict(self._encode_seq2seq(tokenizer, sources, targets))
        frame = self.frame(tokenizer)
        columns: dict[str, list] = {"input_ids": [], "truncated": []}
        if targets is not None:
            columns["labels"] = []
        for index, source in enumerate(sources):
            prompt, cut = self.prompt_ids(tokenizer, frame, source)
            columns["truncated"].append(cut)
            if targets is None:
                columns["input_ids"].append(prompt)
                continue
            example = self.causal_example(tokenizer, frame, prompt, targets[index])
            columns["input_ids"].append(example.input_ids)
            columns["labels"].append(example.labels)
        return Dataset.from_dict(columns)

    def _encode_seq2seq(
        self, tokenizer: PreTrainedTokenizerBase, sources: list[str], targets: list[str] | None
    ) -> dict[str, list]:
        max_length = self.data["max_length"]
        self._check_prefix_fits(tokenizer)
        prefixed = [self.source_prefix() + source for source in sources]
        full_lengths = [len(ids) for ids in tokenizer(prefixed, verbose=False).input_ids]
        encoded = tokenizer(prefixed, max_length=max_length, truncation=True)
        columns = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "truncated": [length > max_length for length in full_lengths],
        }
        if targets is not None:
            labels = tokenizer(
                text_target=targets, max_length=self.data["max_target_length"], truncation=True
            )
            columns["labels"] = labels["input_ids"]
        return columns

    def _check_prefix_fits(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Sources are cut at their end to fit data.max_length; a prefix that fills it would leave every
        source empty, silently, so that is an error."""
        prefix = self.source_prefix()
        if not prefix:
            return
        length = len(tokenizer(prefix, verbose=False).input_ids)  # with the model's special tokens
        if length >= self.data["max_length"]:
            raise LlmkitError(
                f"data.source_prefix {prefix!r} takes {length} tokens with the model's special tokens, and "
                f"data.max_length={self.data['max_length']} leaves no room for the {self.source_noun}; "
                f"shorten the prefix or raise data.max_length"
            )

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Decoder-only runs save the chat template their prompts are built with."""
        if self._family() == "causal":
            tokenizer.chat_template = chat_template_for(tokenizer, self.data["use_chat_template"])

    def frame(self, tokenizer: PreTrainedTokenizerBase) -> ChatFrame:
        """The chat frame for this tokenizer (the template is saved by prepare_tokenizer)."""
        template = chat_template_for(tokenizer, self.data["use_chat_template"])
        try:
            return chat_frame(tokenizer, template, self.prompt_text(), self.prompt_field)
        except ValueError as exc:
            raise LlmkitError(
                f"the model's chat template cannot be split around the {self.source_noun} and "
                f"{self.target_key()} ({exc}); set data.use_chat_template=false to use llmkit's template"
            ) from None

    def prompt_ids(
        self, tokenizer: PreTrainedTokenizerBase, frame: ChatFrame, source: str
    ) -> tuple[list[int], bool]:
        """The decoder-only prompt for a source, and whether the source had to be cut to fit it.

        A prompt that fits is tokenized whole, as inference tokenizes the rendered chat (pieces tokenized
        alone can split differently at their seams: "\\n\\n" before a word); only a source that must
        be cut is tokenized on its own, to lose its end.
        """
        budget = self.data["max_length"] - self.data["max_target_length"]
        whole = tokenize_segments(tokenizer, [(frame.head + source + frame.tail, False)], budget)
        if not whole.truncated:
            return whole.input_ids, False
        segments = [(frame.head, False), (source, False), (frame.tail, False)]
        example = tokenize_segments(tokenizer, segments, budget, shrink=1)
        return example.input_ids, example.truncated

    def causal_example(
        self, tokenizer: PreTrainedTokenizerBase, frame: ChatFrame, prompt: list[int], target: str
    ) -> Example:
        """Prompt (label -100) + the target as the reply with its end-of-turn tokens (learned)."""
        reply = frame.reply_head + target + frame.reply_tail
        reply_ids = tokenizer(reply, add_special_tokens=False, verbose=False).input_ids
        reply_ids = reply_ids[: self.data["max_target_length"]]
        return Example(prompt + reply_ids, [IGNORE_INDEX] * len(prompt) + reply_ids)

    def chat_examples(self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[Any]:
        """Decoder-only: each source's prompt and target as trained, for `llmkit validate`'s chat checks
        (a source cut to fit has no inference prompt to compare with)."""
        from llmkit.tasks.chat_checks import ChatExample

        if self._family() != "causal":
            return []
        frame = self.frame(tokenizer)
        examples = []
        for row in rows:
            source, target = row[self.source_column()], row.get(self.target_column())
            if not isinstance(target, str):
                continue
            prompt, cut = self.prompt_ids(tokenizer, frame, source)
            example = self.causal_example(tokenizer, frame, prompt, target)
            user = self.prompt_text().replace(self.prompt_field, source)
            examples.append(
                ChatExample(
                    None if cut else [{"role": "user", "content": user}],
                    example.input_ids,
                    [label != IGNORE_INDEX for label in example.labels],
                    truncated=cut or len(example.input_ids) - len(prompt) >= self.data["max_target_length"],
                    prompt_length=len(prompt),
                )
            )
        return examples

    def encoding_metrics(self, role: str, dataset: Dataset) -> dict[str, int]:
        if "truncated" not in dataset.column_names:
            return {}
        cut = sum(dataset["truncated"])
        room = (
            f"data.max_length={self.data['max_length']} source tokens"
            if self._family() == "seq2seq"
            else f"data.max_length - data.max_target_length = "
            f"{self.data['max_length'] - self.data['max_target_length']} prompt tokens"
        )
        noun = self.source_plural
        log(f"{role}: {cut} of {len(dataset)} {noun} are longer than {room}; their ends were cut")
        prefix = "eval" if role == "validation" else role
        return {f"{prefix}_{self.truncation_key}": cut}

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if self._family() == "causal":
            return CausalLMCollator(pad_id)
        return Seq2SeqCollator(tokenizer)

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        if self.family == "seq2seq":
            return [f"model family: encoder-decoder; source prefix {self.source_prefix()!r}"]
        return [f"model family: decoder-only; prompt {self.prompt_text()!r} in the chat template"]

    # -- model ------------------------------------------------------------------------------------
    def fit_context(self, model_path: Path) -> None:
        """Lengths within the context of a model used as it is (no recipe of this task to follow)."""
        context = model_context(read_config(model_path))
        if context is not None and context < self.data["max_length"]:
            self.data["max_length"] = context
            self.data["max_target_length"] = min(self.data["max_target_length"], context // 4)
            self.data["max_new_tokens"] = min(self.data["max_new_tokens"], self.data["max_target_length"])

    def check_model(self, model_path: Path) -> None:
        config = read_config(model_path)
        family, problem = model_family(config)
        if family is None:
            raise LlmkitError(
                f"model {model_path} cannot {self.verb}: it is neither a sequence-to-sequence model nor a "
                f"causal LM ({problem}); use an encoder-decoder such as tiny-t5 or tiny-bart, or a "
                f"decoder-only model such as smollm2-135m"
            )
        self.family, self.model_type = family, config.get("model_type", "")
        context = model_context(config)
        limits = {"max_length": self.data["max_length"]}
        if family == "causal":
            if self.data["max_target_length"] >= self.data["max_length"]:
                raise LlmkitError(
                    f"data.max_target_length={self.data['max_target_length']} leaves no room for the prompt "
                    f"in data.max_length={self.data['max_length']}; make max_length larger than it"
                )
            limits["max_length - max_target_length + max_new_tokens"] = (
                self.data["max_length"] - self.data["max_target_length"] + self.data["max_new_tokens"]
            )
        else:
            limits["max_target_length"] = self.data["max_target_length"]
        for key, value in limits.items():
            if context is not None and value > context:
                raise LlmkitError(
                    f"data.{key} = {value} is longer than the model's context ({context} positions); "
                    f"lower it to {context} or less"
                )

    def _family(self) -> str:
        if self.family is None:
            raise RuntimeError(
                f"{type(self).__name__}.check_model must run before encoding (it reads the family)"
            )
        return self.family

    def auto_class(self) -> type:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM if self._family() == "seq2seq" else AutoModelForCausalLM

    def load_model(self, path: Path, **load_options: Any) -> PreTrainedModel:
        self.check_model(path)
        if self.family == "causal":
            return load_causal_lm(path, **load_options)
        return from_pretrained(self.auto_class(), path, **load_options)

    def peft_task_type(self) -> str | None:
        return "SEQ_2_SEQ_LM" if self._family() == "seq2seq" else "CAUSAL_LM"

    def arguments_class(self) -> type:
        return GenerationEvalArguments

    def trainer_class(self) -> type:
        settings = self.decoding()
        if self._family() == "seq2seq":
            return seq2seq_trainer_class(settings, self.scorer)
        return causal_trainer_class(settings, self.scorer)

    def decoding(self) -> dict[str, Any]:
        """How targets are generated, in evaluation and in predictions alike (greedy or beam search)."""
        return {key: self.data[key] for key in ("max_new_tokens", "num_beams", "repetition_penalty")}

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        sources = [row[self.source_column()] for row in rows]
        return [{self.prediction_key: text} for text in self.generate_targets(model, tokenizer, sources)]

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        """Each source as the model is asked (the user turn, or the prefixed source), its output and target;
        the model card's usage example passes that input to the pipeline as it is."""
        sources = [row[self.source_column()] for row in rows]
        outputs = self.generate_targets(model, tokenizer, sources)
        asked = (
            [self.prompt_text().replace(self.prompt_field, source) for source in sources]
            if self._family() == "causal"
            else [self.source_prefix() + source for source in sources]
        )
        return [
            {"input": question, "prediction": output, "reference": str(row.get(self.target_column()) or "")}
            for question, output, row in zip(asked, outputs, rows, strict=True)
        ]

    def generate_targets(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: list[str]
    ) -> list[str]:
        """Targets of raw sources, generated in batches with the evaluation's settings and truncation."""
        import torch

        model.eval()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self._family() == "causal":
            frame = self.frame(tokenizer)
            prompts = [self.prompt_ids(tokenizer, frame, source)[0] for source in sources]
        else:
            prefixed = [self.source_prefix() + source for source in sources]
            prompts = tokenizer(prefixed, max_length=self.data["max_length"], truncation=True).input_ids
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        targets: list[str] = [""] * len(prompts)
        for start in range(0, len(order), PREDICT_BATCH_SIZE):
            batch = order[start : start + PREDICT_BATCH_SIZE]
            if self.family == "causal":
                new_ids = generate_left_padded(
                    model,
                    [prompts[i] for i in batch],
                    pad_id,
                    eos_token_ids=stop_ids(model, tokenizer),
                    **self.decoding(),
                )
            else:
                padded = tokenizer.pad({"input_ids": [prompts[i] for i in batch]}, return_tensors="pt")
                with torch.no_grad():
                    new_ids = model.generate(
                        **padded.to(model.device), do_sample=False, **seq2seq_decoding(self.decoding())
                    )
            texts = tokenizer.batch_decode(new_ids, skip_special_tokens=True)
            for index, text in zip(batch, texts, strict=True):
                targets[index] = text.strip()
        return targets


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """End-of-sequence ids to stop at: the model's generation config and the tokenizer's EOS (end of turn)."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return sorted(i for i in ids if i is not None)


class Seq2SeqCollator:
    """Pads sources (attention mask) and labels (-100, ignored by the loss); drops bookkeeping columns."""

    KEYS = ("input_ids", "attention_mask", "labels")

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate([{k: v for k, v in feature.items() if k in self.KEYS} for feature in features])


class GeneratedTextScorer:
    """``compute_metrics`` for ``batch_eval_metrics``: decode each batch, let the subclass score it.

    Called once per evaluation batch with generated ids and labels; returns the subclass's ``result()``
    and the mean generated length on the last batch (``compute_result``), {} before.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.generated_tokens = 0

    def add(self, predictions: list[str], references: list[str]) -> None:
        """Take one batch's generated texts and their references."""
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        """The scores over every batch added since the last reset."""
        raise NotImplementedError

    def decode(self, ids: Any) -> list[str]:
        import numpy as np

        ids = as_numpy(ids)
        ids = np.where(ids < 0, self.pad_id, ids)  # -100: label padding and prompt positions
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def __call__(self, eval_prediction: Any, compute_result: bool = True) -> dict[str, float]:
        import numpy as np

        predictions = self.decode(eval_prediction.predictions)
        self.add(predictions, self.decode(eval_prediction.label_ids))
        generated = as_numpy(eval_prediction.predictions)
        text_tokens = np.isin(generated, self.tokenizer.all_special_ids, invert=True) & (generated >= 0)
        self.generated_tokens += int(text_tokens.sum())
        self.count += len(predictions)
        if not compute_result:
            return {}
        result = self.result()
        result["gen_len"] = self.generated_tokens / max(self.count, 1)
        self.reset()
        return result


def as_numpy(values: Any) -> Any:
    """A tensor (on any device) or array-like as a numpy array."""
    import numpy as np

    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


Scorer = Callable[[Any], GeneratedTextScorer]


def seq2seq_decoding(settings: dict[str, Any]) -> dict[str, Any]:
    """A task's decoding settings as ``generate`` keywords (a penalty of 1, none, left out)."""
    others = {key: value for key, value in settings.items() if key != "repetition_penalty"}
    return others | penalty_kwargs(settings["repetition_penalty"])


def seq2seq_trainer_class(settings: dict[str, Any], scorer: Scorer) -> type:
    """``Seq2SeqTrainer`` that generates with the task's settings and scores batch by batch."""
    from transformers import Seq2SeqTrainer

    class GeneratingSeq2SeqTrainer(Seq2SeqTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.compute_metrics = scorer(self.processing_class)  # decoding needs the tokenizer

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            # max_length counts the decoder start token; it is given instead of max_new_tokens because
            # Seq2SeqTrainer writes a default max_length into the generation config, and both would clash.
            decoding = seq2seq_decoding(settings)
            defaults = {"max_length": decoding.pop("max_new_tokens") + 1, **decoding}
            gen_kwargs = {**defaults, "do_sample": False, **gen_kwargs}
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)

    return GeneratingSeq2SeqTrainer


def causal_trainer_class(settings: dict[str, Any], scorer: Scorer) -> type:
    """The causal-LM Trainer, whose evaluation also generates each batch's targets from its prompts."""
    import torch

    class GeneratingCausalLMTrainer(causal_lm_trainer_class()):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.compute_metrics = scorer(self.processing_class)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            loss, _, _ = super().prediction_step(model, inputs, True, ignore_keys)
            labels = inputs.get("labels")
            if prediction_loss_only or labels is None:
                return loss, None, None
            # The prompt of each row is everything before its first learned token.
            prompts = []
            for ids, row_labels in zip(inputs["input_ids"].tolist(), labels.tolist(), strict=True):
                start = next((i for i, label in enumerate(row_labels) if label != IGNORE_INDEX), len(ids))
                prompts.append(ids[:start])
            unwrapped = self.accelerator.unwrap_model(model)
            tokenizer = self.processing_class
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            generated = generate_left_padded(
                unwrapped, prompts, pad_id, eos_token_ids=stop_ids(unwrapped, tokenizer), **settings
            )
            if generated.shape[1] == 0:
                generated = torch.full((len(prompts), 1), pad_id, device=generated.device)
            return loss, generated, labels

    return GeneratingCausalLMTrainer
