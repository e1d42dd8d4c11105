"""Summarization: a document in, a short summary out, with an encoder-decoder or a decoder-only model.

The two families, truncation and evaluation are those of every text-to-text task
(``llmkit.tasks.text_to_text``):

* ``seq2seq`` -- T5, BART, ...: the source is ``data.source_prefix`` + the document (the prefix defaults to
  T5's ``"summarize: "`` for T5 models, none for others), the labels are the summary's tokens.
* ``causal`` -- SmolLM2, GPT-2, ...: ``data.prompt`` with the document in it is the user turn of a chat, the
  summary is the reply, and only the reply and its end-of-turn tokens carry a loss.

A document that does not fit loses its end (``<split>_truncated_documents``). Evaluation generates summaries
and scores each batch with ROUGE as it goes: metrics ``eval_rouge1/2/L/Lsum``, ``eval_gen_len`` and
``eval_loss``. A list of reference summaries becomes one row per reference with ``data.explode``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.data.files import Split, explode, require_columns, require_text
from llmkit.tasks.text_to_text import (
    GeneratedTextScorer,
    GenerationEvalArguments,
    TextToTextTask,
    model_family,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DOCUMENT_FIELD = "{document}"
T5_PREFIX = "summarize: "
PREDICTION_KEY = "generated_summary"  # beside the input row, whose "summary" may be the reference
#: The arguments class under its former name (checkpoints pickled before the shared module name it).
SummarizationArguments = GenerationEvalArguments

__all__ = [
    "DOCUMENT_FIELD",
    "PREDICTION_KEY",
    "T5_PREFIX",
    "RougeInBatches",
    "SummarizationArguments",
    "SummarizationTask",
    "model_family",
]


class SummarizationTask(TextToTextTask):
    name = "summarization"
    default_model = "smollm2-135m"
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
        # above 1: every token already in the prompt or output is less likely (1.2 a common choice); breaks
        # the repetition loops of small models decoding greedily; predictions and evaluation alike
        "repetition_penalty": 1.0,
        "explode": False,  # a list of reference summaries becomes one row per reference
    }
    verb = "summarize"
    source_noun, source_plural = "document", "documents"
    truncation_key = "truncated_documents"
    prompt_field = DOCUMENT_FIELD
    prediction_key = PREDICTION_KEY
    txt_unit = "paragraph"  # a dialogue spans several lines: documents are separated by blank lines

    def source_column(self) -> str:
        return self.data["document"]

    def target_column(self) -> str:
        return self.data["summary"]

    def source_key(self) -> str:
        return "document"

    def target_key(self) -> str:
        return "summary"

    def set_source_column(self, column: str) -> None:
        self.data["document"] = column

    def t5_prefix(self) -> str:
        return T5_PREFIX

    def scorer(self, tokenizer: PreTrainedTokenizerBase) -> RougeInBatches:
        return RougeInBatches(tokenizer)

    def check_targets(self, split: Split) -> None:
        """A list of reference summaries (SciTLDR's ``target``) is one row per reference with data.explode."""
        require_columns(split, {"summary": self.data["summary"]})
        if self.data["explode"]:
            explode(split, self.data["summary"], "summary")
        lists = "set data.explode=true to make one row per reference summary"
        require_text(split, self.data["summary"], "summary", lists=lists)

    def summarize(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, documents: list[str]
    ) -> list[str]:
        """Summaries of raw documents, generated in batches with the evaluation's settings and truncation."""
        return self.generate_targets(model, tokenizer, documents)


class RougeInBatches(GeneratedTextScorer):
    """ROUGE of each evaluation batch, kept as running sums of per-summary F-measures (means at the end)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from llmkit.metrics import load_metrics

        self.rouge = load_metrics("rouge")
        super().__init__(tokenizer)

    def reset(self) -> None:
        super().reset()
        self.sums: dict[str, float] = {}
        # counted here, not from the batches: llmkit evaluate's bootstrap adds resampled texts directly
        self.summaries = 0

    def add(self, predictions: list[str], references: list[str]) -> None:
        scores = self.rouge.compute(predictions=predictions, references=references, use_aggregator=False)
        for key, values in scores.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(sum(values))
        self.summaries += len(predictions)

    def result(self) -> dict[str, float]:
        return {key: total / max(self.summaries, 1) for key, total in self.sums.items()}
