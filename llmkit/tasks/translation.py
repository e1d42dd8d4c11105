"""Translation: a text in one language in, its translation out, with an encoder-decoder or decoder-only model.

The two families, truncation and evaluation are those of every text-to-text task
(``llmkit.tasks.text_to_text``), shared with summarization:

* ``seq2seq`` -- T5, BART, MarianMT, ...: the source is ``data.source_prefix`` + the text; T5 models get
  T5's own task prefix by default (``"translate English to German: "``), others none.
* ``causal`` -- SmolLM2, GPT-2, ...: ``data.prompt`` names both languages and holds the text; it is the user
  turn of a chat, the translation is the reply, and only the reply and its end-of-turn tokens are learned.

Data, either way round:

* **language-keyed columns** (Multi30k's ``{"en": ..., "de": ...}`` rows): ``data.source_lang: en`` and
  ``data.target_lang: de`` name the languages and, unless ``data.source``/``data.target`` say otherwise, the
  columns. A column of ``{"en": ..., "de": ...}`` dicts (the Hub's ``translation`` column, as
  ``run_translation.py`` reads it) is unpacked into language columns when the split has no such column;
* **named columns**: ``data.source`` and ``data.target``, with the languages still given for the prompt.

Evaluation generates translations and scores them with sacreBLEU: ``eval_bleu`` and ``eval_chrf`` (0-100,
corpus-level), ``eval_gen_len`` and ``eval_loss``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError, missing_package
from llmkit.data.files import Split, column_values, require_columns, require_text, shown_value
from llmkit.tasks.text_to_text import GeneratedTextScorer, TextToTextTask

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SOURCE_FIELD = "{source}"
LANGUAGE_FIELDS = ("{source_lang}", "{target_lang}")
PREDICTION_KEY = "generated_translation"  # beside the input row, whose target column may be the reference
#: The column of {language: text} dicts that Hub translation datasets (WMT, OPUS) have.
PAIRS_COLUMN = "translation"
#: Language codes (ISO 639-1) the prompt and T5's prefix spell out; any other value is used as written.
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fi": "Finnish",
    "fr": "French",
    "hi": "Hindi",
    "hu": "Hungarian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def language_name(language: str) -> str:
    """ "de" (or "de_DE", "de-AT") -> "German"; a name or an unknown code stays as written."""
    return LANGUAGE_NAMES.get(language.replace("-", "_").split("_")[0].lower(), language)


class TranslationTask(TextToTextTask):
    name = "translation"
    default_model = "smollm2-135m"
    prediction_keys = (PREDICTION_KEY,)
    headline_metric = "bleu"
    data_defaults: ClassVar[dict[str, Any]] = {
        "source_lang": None,  # e.g. en: the source language, and its column unless data.source names one
        "target_lang": None,  # e.g. de
        "source": None,  # the source column (default: the column named data.source_lang)
        "target": None,  # the target column (default: the column named data.target_lang)
        "prompt": "Translate this {source_lang} text to {target_lang}:\n\n{source}",
        "source_prefix": None,
        "use_chat_template": True,
        "max_length": 256,
        "max_target_length": 128,
        "max_new_tokens": 128,
        "num_beams": 1,
        # above 1: every token already in the prompt or output is less likely (1.2 a common choice); breaks
        # the repetition loops of small models decoding greedily; predictions and evaluation alike
        "repetition_penalty": 1.0,
    }
    verb = "translate"
    source_noun, source_plural = "source text", "source texts"
    truncation_key = "truncated_sources"
    prompt_field = SOURCE_FIELD
    prediction_key = PREDICTION_KEY
    txt_unit = "line"  # a .txt --input holds one text to translate a line

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        for key in ("source_lang", "target_lang", "source", "target"):
            value = data[key]
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise LlmkitError(f"data.{key} must be a non-empty string or null, got {value!r}")
        for side, example in (("source", "en"), ("target", "de")):
            if data[side] is None and data[f"{side}_lang"] is None:
                raise LlmkitError(
                    f"translation needs its {side} language: set data.{side}_lang (e.g. data.{side}_lang="
                    f"{example}: the language, and the column of that name) or name the column with "
                    f"data.{side}=<column>"
                )

    def check_model(self, model_path: Path) -> None:
        """The family decides what must name the languages: the prompt (decoder-only) or T5's prefix."""
        super().check_model(model_path)
        if self.family == "causal":
            self.require_languages(self.data["prompt"], "data.prompt")
        elif self.model_type == "t5" and self.data["source_prefix"] is None:
            self.require_languages("{source_lang}{target_lang}", "T5's task prefix")

    def require_languages(self, text: str, what: str) -> None:
        """Both language settings, when ``text`` (the prompt, T5's prefix) names the languages."""
        for field in LANGUAGE_FIELDS:
            key = field.strip("{}")
            if field in text and self.data[key] is None:
                example = "en" if key == "source_lang" else "de"
                raise LlmkitError(
                    f"{what} names the {key.split('_')[0]} language ({field}), but data.{key} is not set; "
                    f"set it (e.g. data.{key}={example}), or set data.prompt / data.source_prefix to a "
                    f"text without it"
                )

    # -- columns and languages ----------------------------------------------------------------------------
    def source_column(self) -> str:
        return self.data["source"] or self.data["source_lang"]

    def target_column(self) -> str:
        return self.data["target"] or self.data["target_lang"]

    def source_key(self) -> str:
        return "source" if self.data["source"] else "source_lang"

    def target_key(self) -> str:
        return "target" if self.data["target"] else "target_lang"

    def set_source_column(self, column: str) -> None:
        self.data["source"] = column

    def languages(self) -> tuple[str, str]:
        """The two languages as a prompt says them ("English", "German")."""
        return language_name(self.data["source_lang"] or ""), language_name(self.data["target_lang"] or "")

    def prompt_text(self) -> str:
        source, target = self.languages()
        prompt = self.data["prompt"]
        if self.data["source_lang"] is not None:
            prompt = prompt.replace("{source_lang}", source)
        if self.data["target_lang"] is not None:
            prompt = prompt.replace("{target_lang}", target)
        return prompt

    def t5_prefix(self) -> str:
        """T5's own: "translate English to German: " (its pre-training used these names)."""
        source, target = self.languages()
        return f"translate {source} to {target}: "

    def scorer(self, tokenizer: PreTrainedTokenizerBase) -> BleuInBatches:
        return BleuInBatches(tokenizer)

    # -- data ---------------------------------------------------------------------------------------------
    def check_data(self, splits: dict[str, Split]) -> None:
        """Training scores BLEU/chrF with sacrebleu: a missing package is said before anything runs."""
        import importlib.util

        if importlib.util.find_spec("sacrebleu") is None:
            raise missing_package("task translation (BLEU and chrF)", "sacrebleu", "translation")
        super().check_data(splits)

    def check_inputs(self, split: Split) -> None:
        unpack_pairs(split, [self.source_column(), self.target_column()])
        self.require_column(split, "source")
        super().check_inputs(split)

    def check_targets(self, split: Split) -> None:
        self.require_column(split, "target")
        require_text(split, self.target_column(), self.target_key())

    def require_column(self, split: Split, side: str) -> None:
        """A missing language column says which language and how to name another column."""
        column, key = self.data[side], f"data.{side}"
        if column is None:
            column, key = self.data[f"{side}_lang"], f"data.{side}_lang"
        columns = split.dataset.column_names
        if column in columns:
            return
        if key == f"data.{side}":
            require_columns(split, {side: column})  # the general message (headerless files included)
        held = pair_languages(split)
        holds = f" (its '{PAIRS_COLUMN}' column holds {', '.join(held)} texts)" if held else ""
        raise LlmkitError(
            f"{split.origin}: no column '{column}' for the {side} language ({key}={column}); columns are: "
            f"{', '.join(columns)}{holds}; name the {side} column with data.{side}=<one of them> (and keep "
            f"{key} for the prompt), or set {key} to a language the data has"
        )

    # -- inference ----------------------------------------------------------------------------------------
    def translate(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str]
    ) -> list[str]:
        """Translations of raw texts, generated in batches with the evaluation's settings and truncation."""
        return self.generate_targets(model, tokenizer, texts)


def unpack_pairs(split: Split, languages: list[str]) -> None:
    """A ``translation`` column of {language: text} dicts gives each wanted language its own column, unless
    the split has that column already; a row without the language is named."""
    names = split.dataset.column_names
    wanted = [language for language in languages if language not in names]
    if PAIRS_COLUMN not in names or not wanted:
        return
    pairs = column_values(split.dataset, PAIRS_COLUMN)
    if not all(isinstance(pair, dict) for pair in pairs):
        return
    for language in wanted:
        if not any(pair.get(language) is not None for pair in pairs):
            continue  # no row holds it: the missing column is named by the task's check
        values = []
        for index, pair in enumerate(pairs):
            if pair.get(language) is None:
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: column '{PAIRS_COLUMN}' has no '{language}' text "
                    f"(it holds {shown_value(sorted(k for k, v in pair.items() if v is not None))}); "
                    f"fill it in, remove that row, or set the language to one it holds"
                )
            values.append(pair[language])
        split.dataset = split.dataset.add_column(language, values)


def pair_languages(split: Split) -> list[str]:
    """The languages of a ``translation`` column of {language: text} dicts; [] without one."""
    if PAIRS_COLUMN not in split.dataset.column_names:
        return []
    pairs = column_values(split.dataset, PAIRS_COLUMN)
    return sorted(
        {key for pair in pairs if isinstance(pair, dict) for key, v in pair.items() if v is not None}
    )


class BleuInBatches(GeneratedTextScorer):
    """sacreBLEU's corpus BLEU and chrF: each batch's texts are kept (text only) and scored at the end."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from llmkit.metrics import load_metrics

        self.metric = load_metrics("translation")
        super().__init__(tokenizer)

    def reset(self) -> None:
        super().reset()
        self.predictions: list[str] = []
        self.references: list[str] = []

    def add(self, predictions: list[str], references: list[str]) -> None:
        self.predictions += predictions
        self.references += references

    def result(self) -> dict[str, float]:
        return self.metric.compute(predictions=self.predictions, references=self.references)
