"""Tiny randomly initialised models with locally trained tokenizers, for tests and smoke runs.

They build in well under a second from text shipped with llmkit, so tests exercise the real
mechanics (tokenizer files, configs, safetensors, pipelines) without downloading anything.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from llmkit.core.paths import SAMPLES_DIR
from llmkit.models.tokenizer_training import (
    BART_SPECIAL_TOKENS,
    BERT_SPECIAL_TOKENS,
    GPT2_END_OF_TEXT,
    GPT2_SPECIAL_TOKENS,
    T5_SPECIAL_TOKENS,
    train_tokenizer,
)


def sample_corpus() -> Iterator[str]:
    """Sentences from the shipped samples: enough English to train a small vocabulary."""
    for path in sorted(SAMPLES_DIR.rglob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield row["text"]


def build_wordpiece_tokenizer(vocab_size: int = 2000):
    """A lower-casing BERT-style WordPiece tokenizer trained on the sample corpus."""
    return train_tokenizer(sample_corpus(), "wordpiece", vocab_size, BERT_SPECIAL_TOKENS, lowercase=True)


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


def build_byte_level_bpe_tokenizer(vocab_size: int = 512):
    """A GPT-2-style byte-level BPE (any text encodes, nothing is unknown) trained on the sample corpus."""
    return train_tokenizer(sample_corpus(), "bpe", vocab_size, GPT2_SPECIAL_TOKENS, model_max_length=256)


def build_tiny_gpt2(folder: Path) -> None:
    """2 layers, hidden size 64, 256 positions: a causal LM for tests of the generation task.

    It has no chat template on purpose, so tests exercise llmkit's documented fallback template.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_byte_level_bpe_tokenizer()
    end_of_text = tokenizer.convert_tokens_to_ids(GPT2_END_OF_TEXT)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=256,
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_unigram_tokenizer(vocab_size: int = 600):
    """A T5-style SentencePiece-like Unigram tokenizer ("▁" word starts) that appends ``</s>``."""
    return train_tokenizer(sample_corpus(), "unigram", vocab_size, T5_SPECIAL_TOKENS)


def build_tiny_t5(folder: Path) -> None:
    """2 + 2 layers, d_model 64, relative positions: an encoder-decoder for tests of summarization."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = build_unigram_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_bart_tokenizer(vocab_size: int = 600):
    """A BART-style byte-level BPE that wraps texts in ``<s> ... </s>``."""
    return train_tokenizer(sample_corpus(), "bpe", vocab_size, BART_SPECIAL_TOKENS)


def build_tiny_bart(folder: Path) -> None:
    """2 + 2 layers, d_model 64, 512 learned positions: the other encoder-decoder family (BART)."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer = build_bart_tokenizer()
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
