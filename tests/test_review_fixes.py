"""Defects from the review (issue 20) on the precision/device axis: each test fails on the code before."""

from __future__ import annotations

import csv
import fnmatch
import json
from pathlib import Path

import pytest
import torch

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.models.resolve import resolve_model
from llmkit.recipe.loader import load_recipe

TEXT = "\n\n".join(
    f"Paragraph {i}: the quick brown fox jumps over the lazy dog and keeps running far away."
    for i in range(40)
)


def bf16_checkpoint(folder: Path) -> Path:
    """tiny-gpt2 stored in bf16, as most hub LLMs are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model("tiny-gpt2")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def finetune_text(model: Path, tmp_path: Path, name: str, *overrides: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    result = llmkit.finetune(
        {"task": "generation", "model": str(model), "data": {"train": str(corpus), "validation_split": 0}},
        [
            "data.max_length=64",
            "training.max_steps=3",
            "training.learning_rate=5e-5",
            "training.precision=fp32",
            f"output_dir={tmp_path / name}",
            *overrides,
        ],
    )
    return load_file(result.output_dir / "model.safetensors")


def test_fp32_training_of_a_bf16_checkpoint_keeps_fp32_master_weights(tmp_path: Path) -> None:
    """Repro: bf16-stored weights trained in pure bf16 whatever training.precision said; lr 5e-5 updates
    rounded away in 36 % of them."""
    from safetensors.torch import load_file

    checkpoint = bf16_checkpoint(tmp_path / "bf16")
    before = load_file(checkpoint / "model.safetensors")
    after = finetune_text(checkpoint, tmp_path, "fp32")
    assert {tensor.dtype for tensor in after.values()} == {torch.float32}
    changed = sum(int((after[k] != before[k].float()).sum()) for k in before)
    total = sum(tensor.numel() for tensor in before.values())
    assert changed / total > 0.95

    pure = finetune_text(checkpoint, tmp_path, "pure-bf16", "model.dtype=bf16")  # on purpose: pure bf16
    assert {tensor.dtype for tensor in pure.values()} == {torch.bfloat16}


def test_model_dtype_is_validated() -> None:
    base = {"task": "classification", "data": {"train": "train.csv"}}
    with pytest.raises(LlmkitError, match=r"model\.dtype must be one of fp32, bf16, auto"):
        load_recipe({**base, "model": {"name": "tiny-bert", "dtype": "fp16"}})


def test_demos_and_predict_put_the_model_on_the_gpu(
    monkeypatch, finetune_tiny, sentiment_files, tmp_path
) -> None:
    """predict/summarize/generate/fill-mask used to run on the CPU next to an idle GPU."""
    from llmkit.inference.predict import predict_file

    result = finetune_tiny("training.max_steps=1")
    validation = sentiment_files[1]
    moved_to = []

    def record_move(self, *args, **kwargs):
        moved_to.append(args[0] if args else kwargs.get("device"))
        return self  # this machine has no GPU: stay on the CPU, but remember where llmkit sent the model

    monkeypatch.setattr("llmkit.core.devices.inference_device", lambda: "cuda")
    monkeypatch.setattr(torch.nn.Module, "to", record_move)
    predict_file(str(result.output_dir), validation, tmp_path / "predictions.jsonl")
    assert moved_to == ["cuda"]


def test_hub_downloads_fetch_only_what_from_pretrained_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, local_files_only=False, allow_patterns=None, **kwargs):
        calls.append(allow_patterns)
        if local_files_only:
            raise FileNotFoundError("not cached")
        return "/nonexistent"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    resolve_model("someone/some-model")
    patterns = calls[-1]
    repository = [
        "config.json", "generation_config.json", "model.safetensors", "model-00001-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt", "merges.txt", "spiece.model", "chat_template.jinja",
        "tf_model.h5", "flax_model.msgpack", "model.onnx", "original/consolidated.00.pth",
        "pytorch_model.bin", "modeling_custom.py",
    ]  # fmt: skip
    fetched = {name for name in repository if any(fnmatch.fnmatch(name, p) for p in patterns)}
    assert fetched == set(repository[:12])
    resolve_model("someone/some-model", allow_pickle=True, trust_remote_code=True)
    wider = {name for name in repository if any(fnmatch.fnmatch(name, p) for p in calls[-1])}
    assert wider == fetched | {"pytorch_model.bin", "modeling_custom.py"}


@pytest.mark.parametrize("task", ["fill-mask", "generation", "summarization"])
def test_torch_compile_is_refused_where_the_loss_bypasses_it(task: str) -> None:
    recipe = {"task": task, "model": "tiny-bert", "data": {"train": "train.csv"}}
    with pytest.raises(LlmkitError, match=f"torch_compile does not work for task {task}"):
        load_recipe(recipe, ["training.torch_compile=true"])
    classification = {**recipe, "task": "classification"}
    assert load_recipe(classification, ["training.torch_compile=true"]).training["torch_compile"] is True


def test_validate_another_task_without_a_recipe_uses_that_tasks_defaults(run_cli, tmp_path: Path) -> None:
    """Repro: `llmkit validate task=generation ...` failed on the default recipe's `text_pair` key."""
    rows = tmp_path / "instructions.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"instruction": f"Say {w}.", "output": w}) for w in ("hi", "yes", "no")) + "\n"
    )
    result = run_cli("validate", "task=generation", "model=tiny-gpt2", f"data.train={rows}")
    assert result.exit_code == 0, result.stderr
    assert "task generation, model tiny-gpt2" in result.stdout
    assert load_recipe(None, ["task=generation", f"data.train={rows}"]).model == "smollm2-135m"


def sentencepiece_style_tokenizer(style: str):
    """A Llama-style tokenizer: Metaspace that prepends (T5, Llama 3.x SP ports) or Prepend("▁") (Llama 2)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["### Instruction:\nSay hi\n\n### Response:\nhi there friend", "hello world how are you"] * 50
    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    if style == "metaspace":
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"])
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.parametrize("style", ["metaspace", "prepend"])
def test_sentencepiece_replies_get_no_extra_word_start(style: str) -> None:
    """The review's suspicion, confirmed: a reply tokenized on its own began with "▁" (a space the rendered
    conversation does not have), so the model learned to answer with a leading space."""
    from llmkit.tasks.causal_lm import (
        DEFAULT_CHAT_TEMPLATE,
        conversation_segments,
        render_chat,
        tokenize_segments,
    )

    tokenizer = sentencepiece_style_tokenizer(style)
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi there"}]
    example = tokenize_segments(
        tokenizer, conversation_segments(tokenizer, messages, DEFAULT_CHAT_TEMPLATE), 200
    )
    prompt = render_chat(tokenizer, messages[:1], DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert example.input_ids[: len(prompt_ids)] == prompt_ids  # what inference feeds the model
    reply = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    assert not tokenizer.convert_ids_to_tokens(reply)[0].startswith("▁")  # "hi", not " hi"
    assert tokenizer.convert_ids_to_tokens(tokenizer("hi", add_special_tokens=False).input_ids)[0].startswith(
        "▁"
    )  # the tokenizer itself is left as it was


@pytest.mark.parametrize("sharding", ["is_fsdp_enabled", "is_deepspeed_enabled"])
@pytest.mark.parametrize("task", ["generation", "fill-mask"])
def test_sharded_models_take_the_full_forward(task: str, sharding: str, monkeypatch) -> None:
    """The review's FSDP suspicion: the fast loss called the model's body and head directly, skipping the
    root module's forward, which gathers the sharded embeddings and head. Sharded runs take the full path."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, Trainer

    from llmkit.tasks.causal_lm import causal_lm_trainer_class
    from llmkit.tasks.fill_mask import masked_positions_trainer

    if task == "generation":
        cls, model = (
            causal_lm_trainer_class(),
            AutoModelForCausalLM.from_pretrained(resolve_model("tiny-gpt2")),
        )
    else:
        cls, model = (
            masked_positions_trainer(),
            AutoModelForMaskedLM.from_pretrained(resolve_model("tiny-bert")),
        )
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    full_forward = []
    monkeypatch.setattr(Trainer, "compute_loss", lambda self, *args, **kwargs: full_forward.append(1))
    trainer = cls.__new__(cls)  # only compute_loss is exercised
    trainer.is_fsdp_enabled = trainer.is_deepspeed_enabled = False
    loss = trainer.compute_loss(model, {"input_ids": ids, "labels": ids})
    assert not full_forward and torch.isfinite(loss)  # unsharded: the fast path
    setattr(trainer, sharding, True)
    trainer.compute_loss(model, {"input_ids": ids, "labels": ids})
    assert full_forward == [1]


def test_a_saved_dataset_folder_is_left_as_it_was(finetune_tiny, sentiment_files, tmp_path: Path) -> None:
    """Encoding a save_to_disk folder wrote datasets' cache-*.arrow files into the user's folder."""
    from datasets import Dataset

    with sentiment_files[0].open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    folder = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(folder))
    before = sorted(p.name for p in folder.iterdir())
    finetune_tiny(f"data.train={folder}", "training.max_steps=1")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_tokens_per_second_leaves_out_the_evaluation_before_training(finetune_tiny, tmp_path: Path) -> None:
    """eval_on_start evaluates inside Trainer.train, whose clock (train_runtime) therefore includes it."""
    result = finetune_tiny(
        "training.max_steps=2", "training.eval_on_start=true", "training.eval_strategy=steps"
    )
    history = json.loads((result.output_dir / "log_history.json").read_text())
    before = next(entry for entry in history if "eval_runtime" in entry)
    metrics = result.metrics
    training = metrics["train_runtime"] - before["eval_runtime"]
    assert metrics["train_tokens_per_second"] == pytest.approx(
        metrics["num_input_tokens_seen"] / training, rel=0.01
    )
