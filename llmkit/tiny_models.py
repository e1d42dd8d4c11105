"""Tiny randomly initialised models with locally trained tokenizers, for tests and smoke runs.

They build in well under a second from text shipped with llmkit, so tests exercise the real
mechanics (tokenizer files, configs, safetensors, pipelines) without downloading anything.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from llmkit.data import SAMPLES_DIR

SPECIAL_BERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sample_corpus() -> Iterator[str]:
    """Sentences from the shipped samples: enough English to train a small vocabulary."""
    for path in sorted(SAMPLES_DIR.rglob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield row["text"]


def build_wordpiece_tokenizer(vocab_size: int = 2000):
    """A lower-casing BERT-style WordPiece tokenizer trained on the sample corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_BERT_TOKENS)
    backend.train_from_iterator(sample_corpus(), trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def build_tiny_bert(folder: Path) -> None:
    """2 layers, hidden size 64: a BERT encoder without task head, like MiniLM (heads are added per task)."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = build_wordpiece_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
