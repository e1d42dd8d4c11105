"""Training a tokenizer on a corpus (the ``tokenizers`` library), and statistics of what it learned.

One code path for every tokenizer llmkit trains: those of the bundled tiny test models
(``llmkit.models.tiny``) and the ``tokenizer: {train: true}`` of a model pre-trained from scratch
(``llmkit.models.scratch``). The texts come from any iterable of strings, read once, so a caller may pass a
split's column, a generator over a file, or a sample of a stream.

Three kinds, each with the pre-tokenization its model family is known for:

* ``wordpiece`` -- BERT's: Unicode clean-up (optionally lower-casing and accent stripping), words and
  punctuation split apart, ``##`` continuation pieces; line breaks are whitespace (they do not survive);
* ``bpe`` -- GPT-2's byte-level BPE: any text encodes (256 byte symbols), nothing is unknown, spaces and
  line breaks are kept exactly;
* ``unigram`` -- T5's SentencePiece-style Unigram with ``▁`` word starts, NFKC-normalised.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmkit.core.errors import LlmkitError

TOKENIZER_TYPES = ("wordpiece", "bpe", "unigram")
#: Byte-level BPE starts from every byte value: these symbols are in the vocabulary before any merge.
BYTE_ALPHABET_SIZE = 256
#: Vocabulary statistics read at most this many texts.
STATISTICS_TEXTS = 2000


@dataclass(frozen=True)
class SpecialTokens:
    """A model family's special tokens (in id order: they get ids 0, 1, ...), the role each plays for
    ``PreTrainedTokenizerFast``, and the template that wraps a single text and a pair (None: as they are)."""

    tokens: tuple[str, ...]
    roles: dict[str, str] = field(default_factory=dict)
    single: str | None = None
    pair: str | None = None


#: BERT: [CLS] text [SEP], pairs as [CLS] A [SEP] B [SEP] with segment ids 0 and 1.
BERT_SPECIAL_TOKENS = SpecialTokens(
    tokens=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    roles={
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
    single="[CLS] $A [SEP]",
    pair="[CLS] $A [SEP] $B:1 [SEP]:1",
)
GPT2_END_OF_TEXT = "<|endoftext|>"
#: GPT-2: one token begins and ends documents; byte-level BPE never needs an unknown token.
GPT2_SPECIAL_TOKENS = SpecialTokens(
    tokens=(GPT2_END_OF_TEXT,),
    roles={"bos_token": GPT2_END_OF_TEXT, "eos_token": GPT2_END_OF_TEXT, "unk_token": GPT2_END_OF_TEXT},
)
#: A GPT-style decoder on a vocabulary that can miss characters (wordpiece, unigram) needs an unknown token.
DECODER_UNKNOWN = "<unk>"
#: T5: ids 0, 1, 2 as in T5 (pad doubles as the decoder start); texts end with </s>.
T5_SPECIAL_TOKENS = SpecialTokens(
    tokens=("<pad>", "</s>", "<unk>"),
    roles={"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    single="$A </s>",
    pair="$A </s> $B </s>",
)
#: BART: ids 0..4 as in BART; texts are wrapped in <s> ... </s>.
BART_SPECIAL_TOKENS = SpecialTokens(
    tokens=("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
    roles={
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    },
    single="<s> $A </s>",
    pair="<s> $A </s> </s> $B </s>",
)


def decoder_special_tokens(kind: str) -> SpecialTokens:
    """GPT-2's tokens, plus an unknown token when the vocabulary is not byte-level."""
    if kind == "bpe":
        return GPT2_SPECIAL_TOKENS
    return SpecialTokens(
        tokens=(GPT2_END_OF_TEXT, DECODER_UNKNOWN),
        roles={"bos_token": GPT2_END_OF_TEXT, "eos_token": GPT2_END_OF_TEXT, "unk_token": DECODER_UNKNOWN},
    )


def default_lowercase(kind: str) -> bool:
    """As the families these kinds come from: BERT's WordPiece lower-cases, GPT-2 and T5 keep case."""
    return kind == "wordpiece"


def minimum_vocab_size(kind: str, specials: SpecialTokens) -> int:
    """The special tokens, byte-level BPE's 256 byte symbols, and room for at least one learned token."""
    return len(specials.tokens) + (BYTE_ALPHABET_SIZE if kind == "bpe" else 0) + 1


def check_tokenizer_settings(kind: str, vocab_size: Any, specials: SpecialTokens, where: str) -> None:
    """A known kind and a vocabulary larger than what the special tokens (and bytes) take; one line each."""
    if kind not in TOKENIZER_TYPES:
        raise LlmkitError(
            f"{where}: tokenizer.type must be one of {', '.join(TOKENIZER_TYPES)}, got {kind!r}"
        )
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise LlmkitError(
            f"{where}: tokenizer.vocab_size must be a whole number, e.g. 16000; got {vocab_size!r}"
        )
    least = minimum_vocab_size(kind, specials)
    if vocab_size < least:
        taken = f"the special tokens alone ({', '.join(specials.tokens)}) take {len(specials.tokens)} ids"
        if kind == "bpe":
            taken += f" and byte-level BPE starts from {BYTE_ALPHABET_SIZE} byte symbols"
        raise LlmkitError(
            f"{where}: tokenizer.vocab_size {vocab_size} is too small: {taken}; "
            f"set tokenizer.vocab_size to at least {least} (a corpus of a few MB suits 8000-32000)"
        )


def train_tokenizer(
    texts: Iterable[str],
    kind: str,
    vocab_size: int,
    specials: SpecialTokens,
    lowercase: bool | None = None,
    model_max_length: int = 512,
    segment_ids: bool = False,
):
    """A ``PreTrainedTokenizerFast`` of ``kind`` trained on ``texts`` (read once), with ``specials`` first.

    ``segment_ids``: the tokenizer returns ``token_type_ids`` by default (a BERT tells sentence A from B).
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    lowercase = default_lowercase(kind) if lowercase is None else lowercase
    backend, trainer = _backend_and_trainer(kind, vocab_size, specials, lowercase)
    backend.train_from_iterator(texts, trainer=trainer)
    if specials.single:
        backend.post_processor = processors.TemplateProcessing(
            single=specials.single,
            pair=specials.pair,
            special_tokens=[(token, backend.token_to_id(token)) for token in _template_tokens(specials)],
        )
    inputs = {"model_input_names": ["input_ids", "token_type_ids", "attention_mask"]} if segment_ids else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=model_max_length, **inputs, **specials.roles
    )


def _backend_and_trainer(kind: str, vocab_size: int, specials: SpecialTokens, lowercase: bool):
    """The untrained ``tokenizers`` pipeline (normaliser, pre-tokenizer, model, decoder) and its trainer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    special_tokens = list(specials.tokens)
    if kind == "wordpiece":
        backend = Tokenizer(models.WordPiece(unk_token=specials.roles["unk_token"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False
        )
    elif kind == "bpe":
        backend = Tokenizer(models.BPE())
        if lowercase:
            backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        backend = Tokenizer(models.Unigram())
        nfkc = normalizers.NFKC()
        backend.normalizer = normalizers.Sequence([nfkc, normalizers.Lowercase()]) if lowercase else nfkc
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            unk_token=specials.roles["unk_token"],
            initial_alphabet=list(string.printable.strip()),  # punctuation a corpus lacks stays known
            show_progress=False,
        )
    return backend, trainer


def _template_tokens(specials: SpecialTokens) -> list[str]:
    """The special tokens a template names (``[SEP]:1`` names ``[SEP]``), each once."""
    named = f"{specials.single} {specials.pair or ''}".split()
    return [
        token for token in dict.fromkeys(part.split(":")[0] for part in named) if token in specials.tokens
    ]


@dataclass
class TrainedTokenizer:
    """A tokenizer trained on a corpus, with how long that took and how much text it read."""

    tokenizer: Any
    seconds: float
    texts: int
    characters: int


def train_on_corpus(
    texts: Iterable[str],
    kind: str,
    vocab_size: int,
    specials: SpecialTokens,
    lowercase: bool | None = None,
    model_max_length: int = 512,
    segment_ids: bool = False,
) -> TrainedTokenizer:
    """:func:`train_tokenizer`, timed, counting the texts and characters it read."""
    counted = _Counted(texts)
    started = time.perf_counter()
    tokenizer = train_tokenizer(counted, kind, vocab_size, specials, lowercase, model_max_length, segment_ids)
    return TrainedTokenizer(tokenizer, time.perf_counter() - started, counted.texts, counted.characters)


class _Counted:
    """An iterable of texts that counts what passes through it."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.texts = 0
        self.characters = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.texts += 1
            self.characters += len(text)
            yield text


def vocabulary_statistics(
    tokenizer: Any, texts: Iterable[str], limit: int = STATISTICS_TEXTS
) -> dict[str, Any]:
    """What the vocabulary does to text: pieces per word, words kept whole, unknown pieces.

    A word is what the tokenizer's pre-tokenizer splits off (punctuation marks are words of their own), read
    from the first ``limit`` texts.
    """
    sample = [text for _, text in zip(range(limit), texts, strict=False)]
    encodings = tokenizer._tokenizer.encode_batch(sample, add_special_tokens=False) if sample else []
    pieces_per_word: dict[tuple[int, int], int] = {}
    unknown = tokenizer.unk_token_id
    unknown_pieces = pieces = 0
    for row, encoding in enumerate(encodings):
        for word, token_id in zip(encoding.word_ids, encoding.ids, strict=True):
            if word is None:
                continue
            pieces += 1
            unknown_pieces += token_id == unknown
            pieces_per_word[(row, word)] = pieces_per_word.get((row, word), 0) + 1
    words = len(pieces_per_word)
    special = set(tokenizer.all_special_tokens)
    learned = [token for token in tokenizer.get_vocab() if token not in special]
    return {
        "vocab_size": len(tokenizer),
        "special_tokens": sorted(special),
        "texts_measured": len(sample),
        "words_measured": words,
        "pieces_per_word": round(pieces / words, 3) if words else None,
        "whole_word_share": round(sum(n == 1 for n in pieces_per_word.values()) / words, 4)
        if words
        else None,
        "unknown_share": round(unknown_pieces / pieces, 5) if pieces else None,
        "longest_tokens": sorted(learned, key=lambda token: (-len(token), token))[:5],
    }
