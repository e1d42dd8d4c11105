"""Summarization: a document in, a short summary out, with an encoder-decoder or a decoder-only model.

The model's config picks the family (``check_model``):

* ``seq2seq`` -- T5, BART, ... (``AutoModelForSeq2SeqLM``, ``Seq2SeqTrainer``): the source is
  ``data.source_prefix`` + the document (the prefix defaults to T5's ``"summarize: "`` for T5 models, none for
  others), the labels are the summary's tokens.
* ``causal`` -- SmolLM2, GPT-2, ... through ``llmkit.causal_lm``: ``data.prompt`` with the document in it
  is the user turn of a chat (the model's template, or llmkit's), the summary is the reply, and only the reply
  and its end-of-turn tokens carry a loss.

Truncation rule (both families): a summary keeps at most ``data.max_target_length`` tokens. The source may
take ``data.max_length`` tokens (seq2seq), or the prompt may take ``data.max_length - data.max_target_length``
tokens so that prompt + summary fit in ``data.max_length`` (decoder-only). A document that does not fit
loses its end; the prefix, the instructions, the template and the summary are never cut for it. Each split
reports how many documents were cut (``<split>_truncated_documents``, also on stderr).

Evaluation generates summaries (``data.max_new_tokens``, ``data.num_beams``; greedy by default) one batch at
a time and scores each batch with ROUGE as it goes (``batch_eval_metrics``), so neither logits nor all the
generated ids are ever held: metrics ``eval_rouge1/2/L/Lsum``, ``eval_gen_len`` and ``eval_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transformers import Seq2SeqTrainingArguments

from llmkit.adaptation import from_pretrained, model_config_dict
from llmkit.causal_lm import (
    IGNORE_INDEX,
    CausalLMCollator,
    Example,
    causal_lm_problem,
    causal_lm_trainer_class,
    chat_template_for,
    conversation_segments,
    generate_left_padded,
    load_causal_lm,
    tokenize_segments,
)
from llmkit.data import Split, explode, join_lists, require_columns, require_text
from llmkit.errors import LlmkitError
from llmkit.progress import log
from llmkit.tasks.base import FAST_LOSS_COMPILE_REFUSAL, Task

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DOCUMENT_FIELD = "{document}"
T5_PREFIX = "summarize: "
PREDICT_BATCH_SIZE = 16
PREDICTION_KEY = "generated_summary"  # beside the input row, whose "summary" may be the reference
# Stand-ins rendered through the chat template once, to find where the document and summary go.
_DOCUMENT_MARK = "\u2063llmkit-document\u2063"
_SUMMARY_MARK = "\u2063llmkit-summary\u2063"


@dataclass
class ChatFrame:
    """The chat template around a document and a summary: prompt = head + document + tail, reply likewise."""

    head: str
    tail: str
    reply_head: str
    reply_tail: str


def chat_frame(tokenizer: PreTrainedTokenizerBase, template: str, prompt: str) -> ChatFrame:
    """Render [user: prompt, assistant: summary] once with stand-ins and split the text around them."""
    messages = [
        {"role": "user", "content": prompt.replace(DOCUMENT_FIELD, _DOCUMENT_MARK)},
        {"role": "assistant", "content": _SUMMARY_MARK},
    ]
    segments = conversation_segments(tokenizer, messages, template)
    prompt_text, reply_text = segments[0][0], segments[1][0]
    if prompt_text.count(_DOCUMENT_MARK) != 1 or reply_text.count(_SUMMARY_MARK) != 1:
        raise ValueError("the chat template does not render the user and assistant contents verbatim")
    head, tail = prompt_text.split(_DOCUMENT_MARK)
    reply_head, reply_tail = reply_text.split(_SUMMARY_MARK)
    return ChatFrame(head, tail, reply_head, reply_tail)


def read_config(model_path: Path) -> dict[str, Any]:
    return model_config_dict(Path(model_path))


def model_context(config: dict[str, Any]) -> int | None:
    """Positions the model attends over (learned or rotary limits); None when unbounded (T5) or unknown."""
    context = config.get("max_position_embeddings") or config.get("n_positions")
    return context if isinstance(context, int) and context > 0 else None


def model_family(config: dict[str, Any]) -> tuple[str | None, str]:
    """("seq2seq" | "causal", "") for a model that can summarize, else (None, why it cannot)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type", "?")
    if config.get("is_encoder_decoder"):
        if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            return "seq2seq", ""
        return None, f"encoder-decoder '{model_type}' has no sequence-to-sequence LM head in transformers"
    problem = causal_lm_problem(config)
    return ("causal", "") if problem is None else (None, problem)


@dataclass
class SummarizationArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments that generate at evaluation (what ``Seq2SeqTrainer`` reads).

    Generation settings come from the recipe's ``data`` keys (max_new_tokens, num_beams), passed by the
    trainers; a module-level class, because the Trainer pickles its arguments into checkpoints.
    """

    predict_with_generate: bool = field(default=True)


class SummarizationTask(Task):
    name = "summarization"
    default_model = "smollm2-135m"
    #: decoder-only outputs; seq2seq folders load with AutoModelForSeq2SeqLM (transformers 5 has no
    #: summarization pipeline any more).
    pipeline_task = "text-generation"
    prediction_keys = (PREDICTION_KEY,)
    headline_metric = "rougeL"
    data_defaults: ClassVar[dict[str, Any]] = {
        "document": "document",
        "summary": "summary",
        "prompt": "Summarize this text in one or two sentences:\n\n{document}",
        "source_prefix": None,
        "use_chat_template": True,
        "max_length": 512,
        "max_target_length": 128,
        "max_new_tokens": 64,
        "num_beams": 1,
        "explode": False,  # a list of reference summaries becomes one row per reference
    }
    torch_compile_refusal = FAST_LOSS_COMPILE_REFUSAL
    training_defaults: ClassVar[dict[str, Any]] = {
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "batch_eval_metrics": True,  # score each generated batch and drop it
        "train_sampling_strategy": "group_by_length",  # documents vary in length: batch similar ones
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        for key in ("max_length", "max_target_length", "max_new_tokens", "num_beams"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
                raise LlmkitError(f"data.{key} must be a whole number of at least 1, got {data[key]!r}")
        prompt = data["prompt"]
        if not isinstance(prompt, str) or prompt.count(DOCUMENT_FIELD) != 1:
            raise LlmkitError(
                f"data.prompt must contain {DOCUMENT_FIELD} exactly once (where the document goes), "
                f"got {prompt!r}"
            )
        if data["source_prefix"] is not None and not isinstance(data["source_prefix"], str):
            raise LlmkitError(f"data.source_prefix must be a string or null, got {data['source_prefix']!r}")
        self.family: str | None = None  # set by check_model from the model's config
        self.model_type = ""

    # -- data -------------------------------------------------------------------------------------
    def check_inputs(self, split: Split) -> None:
        require_columns(split, {"document": self.data["document"]})
        join_lists(split, self.data["document"], self.data["join_lists"])
        require_text(split, self.data["document"], "document")

    def check_data(self, splits: dict[str, Split]) -> None:
        """A list of reference summaries (SciTLDR's ``target``) is one row per reference with data.explode."""
        for split in splits.values():
            self.check_inputs(split)
            if split.role != "test" or self.data["summary"] in split.dataset.column_names:
                require_columns(split, {"summary": self.data["summary"]})
                if self.data["explode"]:
                    explode(split, self.data["summary"], "summary")
                lists = "set data.explode=true to make one row per reference summary"
                require_text(split, self.data["summary"], "summary", lists=lists)

    def source_prefix(self) -> str:
        """The recipe's prefix, or by default T5's "summarize: " for T5 models and nothing for others."""
        if self.data["source_prefix"] is not None:
            return self.data["source_prefix"]
        return T5_PREFIX if self.model_type == "t5" else ""

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        from datasets import Dataset

        documents = list(dataset[self.data["document"]])
        summary_column = self.data["summary"]
        summaries = list(dataset[summary_column]) if summary_column in dataset.column_names else None
        if self._family() == "seq2seq":
            return Dataset.from_dict(self._encode_seq2seq(tokenizer, documents, summaries))
        frame = self.frame(tokenizer)
        columns: dict[str, list] = {"input_ids": [], "truncated": []}
        if summaries is not None:
            columns["labels"] = []
        for index, document in enumerate(documents):
            prompt, cut = self.prompt_ids(tokenizer, frame, document)
            columns["truncated"].append(cut)
            if summaries is None:
                columns["input_ids"].append(prompt)
                continue
            example = self.causal_example(tokenizer, frame, prompt, summaries[index])
            columns["input_ids"].append(example.input_ids)
            columns["labels"].append(example.labels)
        return Dataset.from_dict(columns)

    def _encode_seq2seq(
        self, tokenizer: PreTrainedTokenizerBase, documents: list[str], summaries: list[str] | None
    ) -> dict[str, list]:
        max_length = self.data["max_length"]
        sources = [self.source_prefix() + document for document in documents]
        full_lengths = [len(ids) for ids in tokenizer(sources, verbose=False).input_ids]
        encoded = tokenizer(sources, max_length=max_length, truncation=True)
        columns = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "truncated": [length > max_length for length in full_lengths],
        }
        if summaries is not None:
            targets = tokenizer(
                text_target=summaries, max_length=self.data["max_target_length"], truncation=True
            )
            columns["labels"] = targets["input_ids"]
        return columns

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Decoder-only runs save the chat template their prompts are built with."""
        if self._family() == "causal":
            tokenizer.chat_template = chat_template_for(tokenizer, self.data["use_chat_template"])

    def frame(self, tokenizer: PreTrainedTokenizerBase) -> ChatFrame:
        """The chat frame for this tokenizer (the template is saved by prepare_tokenizer)."""
        template = chat_template_for(tokenizer, self.data["use_chat_template"])
        try:
            return chat_frame(tokenizer, template, self.data["prompt"])
        except ValueError as exc:
            raise LlmkitError(
                f"the model's chat template cannot be split around the document and summary ({exc}); "
                f"set data.use_chat_template=false to use llmkit's template"
            ) from None

    def prompt_ids(
        self, tokenizer: PreTrainedTokenizerBase, frame: ChatFrame, document: str
    ) -> tuple[list[int], bool]:
        """The decoder-only prompt for a document, and whether the document had to be cut to fit it.

        A prompt that fits is tokenized whole, as inference tokenizes the rendered chat (pieces tokenized
        alone can split differently at their seams: "\\n\\n" before a word); only a document that must
        be cut is tokenized on its own, to lose its end.
        """
        budget = self.data["max_length"] - self.data["max_target_length"]
        whole = tokenize_segments(tokenizer, [(frame.head + document + frame.tail, False)], budget)
        if not whole.truncated:
            return whole.input_ids, False
        segments = [(frame.head, False), (document, False), (frame.tail, False)]
        example = tokenize_segments(tokenizer, segments, budget, shrink=1)
        return example.input_ids, example.truncated

    def causal_example(
        self, tokenizer: PreTrainedTokenizerBase, frame: ChatFrame, prompt: list[int], summary: str
    ) -> Example:
        """Prompt (label -100) + the summary as the reply with its end-of-turn tokens (learned)."""
        reply = frame.reply_head + summary + frame.reply_tail
        reply_ids = tokenizer(reply, add_special_tokens=False, verbose=False).input_ids
        reply_ids = reply_ids[: self.data["max_target_length"]]
        return Example(prompt + reply_ids, [IGNORE_INDEX] * len(prompt) + reply_ids)

    def chat_examples(self, rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> list[Any]:
        """Decoder-only: each document's prompt and summary as trained, for `llmkit validate`'s chat checks
        (a document cut to fit has no inference prompt to compare with)."""
        from llmkit.chat_checks import ChatExample

        if self._family() != "causal":
            return []
        frame = self.frame(tokenizer)
        examples = []
        for row in rows:
            document, summary = row[self.data["document"]], row.get(self.data["summary"])
            if not isinstance(summary, str):
                continue
            prompt, cut = self.prompt_ids(tokenizer, frame, document)
            example = self.causal_example(tokenizer, frame, prompt, summary)
            user = self.data["prompt"].replace(DOCUMENT_FIELD, document)
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
        log(f"{role}: {cut} of {len(dataset)} documents are longer than {room}; their ends were cut")
        prefix = "eval" if role == "validation" else role
        return {f"{prefix}_truncated_documents": cut}

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if self._family() == "causal":
            return CausalLMCollator(pad_id)
        return Seq2SeqCollator(tokenizer)

    def data_summary(self, splits: dict[str, Split]) -> list[str]:
        if self.family == "seq2seq":
            return [f"model family: encoder-decoder; source prefix {self.source_prefix()!r}"]
        return [f"model family: decoder-only; prompt {self.data['prompt']!r} in the chat template"]

    # -- model ------------------------------------------------------------------------------------
    def fit_context(self, model_path: Path) -> None:
        """Lengths within the context of a model used as it is (no summarization recipe to follow)."""
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
                f"model {model_path} cannot summarize: it is neither a sequence-to-sequence model nor a "
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
            raise RuntimeError("SummarizationTask.check_model must run before encoding (it reads the family)")
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
        return SummarizationArguments

    def trainer_class(self) -> type:
        settings = {"max_new_tokens": self.data["max_new_tokens"], "num_beams": self.data["num_beams"]}
        if self._family() == "seq2seq":
            return seq2seq_trainer_class(settings)
        return causal_trainer_class(settings)

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        documents = [row[self.data["document"]] for row in rows]
        return [{PREDICTION_KEY: summary} for summary in self.summarize(model, tokenizer, documents)]

    def summarize(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, documents: list[str]
    ) -> list[str]:
        """Summaries of raw documents, generated in batches with the evaluation's settings and truncation."""
        import torch

        model.eval()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self._family() == "causal":
            frame = self.frame(tokenizer)
            prompts = [self.prompt_ids(tokenizer, frame, document)[0] for document in documents]
        else:
            sources = [self.source_prefix() + document for document in documents]
            prompts = tokenizer(sources, max_length=self.data["max_length"], truncation=True).input_ids
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        summaries: list[str] = [""] * len(prompts)
        for start in range(0, len(order), PREDICT_BATCH_SIZE):
            batch = order[start : start + PREDICT_BATCH_SIZE]
            if self.family == "causal":
                new_ids = generate_left_padded(
                    model,
                    [prompts[i] for i in batch],
                    pad_id,
                    self.data["max_new_tokens"],
                    self.data["num_beams"],
                    eos_token_ids=stop_ids(model, tokenizer),
                )
            else:
                padded = tokenizer.pad({"input_ids": [prompts[i] for i in batch]}, return_tensors="pt")
                with torch.no_grad():
                    new_ids = model.generate(
                        **padded.to(model.device),
                        max_new_tokens=self.data["max_new_tokens"],
                        num_beams=self.data["num_beams"],
                        do_sample=False,
                    )
            texts = tokenizer.batch_decode(new_ids, skip_special_tokens=True)
            for index, text in zip(batch, texts, strict=True):
                summaries[index] = text.strip()
        return summaries


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


class RougeInBatches:
    """``compute_metrics`` for ``batch_eval_metrics``: decode and score each batch, keep only running sums.

    Called once per evaluation batch with generated ids and labels; returns the means (ROUGE F-measures and
    the mean generated length) on the last batch (``compute_result``), {} before.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from llmkit.metrics import load_metrics

        self.tokenizer = tokenizer
        self.rouge = load_metrics("rouge")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.generated_tokens = 0

    def decode(self, ids: Any) -> list[str]:
        import numpy as np

        ids = as_numpy(ids)
        ids = np.where(ids < 0, self.pad_id, ids)  # -100: label padding and prompt positions
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def __call__(self, eval_prediction: Any, compute_result: bool = True) -> dict[str, float]:
        import numpy as np

        predictions = self.decode(eval_prediction.predictions)
        references = self.decode(eval_prediction.label_ids)
        scores = self.rouge.compute(predictions=predictions, references=references, use_aggregator=False)
        for key, values in scores.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(sum(values))
        generated = as_numpy(eval_prediction.predictions)
        text_tokens = np.isin(generated, self.tokenizer.all_special_ids, invert=True) & (generated >= 0)
        self.generated_tokens += int(text_tokens.sum())
        self.count += len(predictions)
        if not compute_result:
            return {}
        result = {key: total / max(self.count, 1) for key, total in self.sums.items()}
        result["gen_len"] = self.generated_tokens / max(self.count, 1)
        self.reset()
        return result


def as_numpy(values: Any) -> Any:
    """A tensor (on any device) or array-like as a numpy array."""
    import numpy as np

    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def seq2seq_trainer_class(settings: dict[str, int]) -> type:
    """``Seq2SeqTrainer`` that generates with the task's settings and scores ROUGE batch by batch."""
    from transformers import Seq2SeqTrainer

    class SummarizationSeq2SeqTrainer(Seq2SeqTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.compute_metrics = RougeInBatches(self.processing_class)  # decoding needs the tokenizer

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **gen_kwargs):
            # max_length counts the decoder start token; it is given instead of max_new_tokens because
            # Seq2SeqTrainer writes a default max_length into the generation config, and both would clash.
            defaults = {"max_length": settings["max_new_tokens"] + 1, "num_beams": settings["num_beams"]}
            gen_kwargs = {**defaults, "do_sample": False, **gen_kwargs}
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **gen_kwargs)

    return SummarizationSeq2SeqTrainer


def causal_trainer_class(settings: dict[str, int]) -> type:
    """The causal-LM Trainer, whose evaluation also generates each batch's summaries from its prompts."""
    import torch

    class SummarizationCausalLMTrainer(causal_lm_trainer_class()):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.compute_metrics = RougeInBatches(self.processing_class)

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
                unwrapped,
                prompts,
                pad_id,
                settings["max_new_tokens"],
                settings["num_beams"],
                eos_token_ids=stop_ids(unwrapped, tokenizer),
            )
            if generated.shape[1] == 0:
                generated = torch.full((len(prompts), 1), pad_id, device=generated.device)
            return loss, generated, labels

    return SummarizationCausalLMTrainer
