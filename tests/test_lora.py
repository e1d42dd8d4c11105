"""LoRA: every task trains an adapter; its folder works wherever a model goes; merge, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import llmkit
from llmkit.models.adaptation import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MODEL_CONFIG_FILE
from tests import lookalikes
from tests.conftest import LAUNCHES_PROCESSES, write_csv

LORA = ["peft.method=lora", "peft.r=4", "peft.alpha=8"]


def adapter_files(folder: Path) -> None:
    """An adapter folder: peft's files, the adapted config, the tokenizer, a card; no full weights."""
    names = {path.name for path in folder.iterdir()}
    assert {ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MODEL_CONFIG_FILE, "README.md"} <= names
    assert "tokenizer_config.json" in names
    assert "model.safetensors" not in names and "config.json" not in names
    base = json.loads((folder / ADAPTER_CONFIG_FILE).read_text())["base_model_name_or_path"]
    assert Path(base).is_dir()  # a local folder: loads offline
    assert "base_model: " in (folder / "README.md").read_text() or "tiny" in str(base)


# -- classification: adapter, predict, pipeline, merge ------------------------------------------------
def test_classification_adapter_predicts_pipelines_and_merges(finetune_tiny, run_cli, tmp_path: Path) -> None:
    from transformers import pipeline

    result = finetune_tiny("training.max_steps=6", "training.learning_rate=1e-2", *LORA)
    out = result.output_dir
    adapter_files(out)
    stats = json.loads((out / "run_stats.json").read_text())["adapter"]
    assert 0 < stats["trainable_parameters"] < stats["all_parameters"]
    assert json.loads((out / MODEL_CONFIG_FILE).read_text())["id2label"] == {"0": "negative", "1": "positive"}

    rows = tmp_path / "rows.csv"
    write_csv(rows, ["text"], [["What a wonderful day"], ["Awful, boring and too long"]])
    predicted = run_cli("predict", "--model", out, "--input", rows)
    assert predicted.exit_code == 0, predicted.stderr
    llmkit_rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert {row["predicted_label"] for row in llmkit_rows} <= {"negative", "positive"}

    # the model card's snippet: labels through model_kwargs (transformers takes the config from the base)
    card = (out / "README.md").read_text()
    assert "model_kwargs={'id2label': {0: 'negative', 1: 'positive'}}" in card
    assert "library_name: peft" in card and "## Adapter" in card
    classify = pipeline(
        "text-classification", model=str(out), model_kwargs={"id2label": {0: "negative", 1: "positive"}}
    )
    for row in llmkit_rows:
        answer = classify(row["text"])[0]
        assert answer["label"] == row["predicted_label"]
        assert answer["score"] == pytest.approx(row["predicted_score"], abs=1e-4)

    merged = run_cli("merge", out, "--output", tmp_path / "merged")
    assert merged.exit_code == 0, merged.stderr
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "merged").iterdir()}
    plain = pipeline("text-classification", model=str(tmp_path / "merged"))  # a plain folder, labels and all
    for row in llmkit_rows:
        answer = plain(row["text"])[0]
        assert answer["label"] == row["predicted_label"]
        assert answer["score"] == pytest.approx(row["predicted_score"], abs=1e-4)


def test_merge_in_the_recipe_writes_a_plain_folder_beside_the_adapter(finetune_tiny) -> None:
    from transformers import AutoModelForSequenceClassification

    out = finetune_tiny("training.max_steps=2", *LORA, "peft.merge=true").output_dir
    adapter_files(out)
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged")
    assert merged.config.id2label == {0: "negative", 1: "positive"}


def test_without_a_peft_section_every_weight_trains(finetune_tiny) -> None:
    out = finetune_tiny("training.max_steps=1", "peft=null").output_dir
    assert (out / "model.safetensors").exists() and not (out / ADAPTER_CONFIG_FILE).exists()


# -- every other task ------------------------------------------------------------------------------------
def write_dialogues(tmp_path: Path, count: int = 12) -> Path:
    return lookalikes.write_dialogues(tmp_path / "dialogues.jsonl", count)


def write_speeches(tmp_path: Path) -> Path:
    return lookalikes.write_speeches(tmp_path / "speeches.txt")


def write_instructions(tmp_path: Path, count: int = 48) -> Path:
    return lookalikes.write_instructions(tmp_path / "alpaca.json", count)


def write_chats(tmp_path: Path) -> Path:
    chats = [
        {"messages": [{"role": "user", "content": f"Say {word}."}, {"role": "assistant", "content": word}]}
        for word in ("red", "green", "blue", "yellow", "black", "white", "pink", "grey")
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(chat) + "\n" for chat in chats), encoding="utf-8")
    return path


CASES = {
    "text": ("generation-shakespeare", "tiny-gpt2", lambda tmp: [f"data.train={write_speeches(tmp)}"]),
    "instruction": ("instruct-alpaca", "tiny-gpt2", lambda tmp: [f"data.train={write_instructions(tmp)}"]),
    "chat": (
        "instruct-alpaca",
        "tiny-gpt2",
        lambda tmp: [f"data.train={write_chats(tmp)}", "data.format=chat"],
    ),
    "packing": (
        "instruct-alpaca",
        "tiny-gpt2",
        lambda tmp: [f"data.train={write_instructions(tmp)}", "data.packing=true"],
    ),
    "summarization-causal": (
        "summarize-dialogsum",
        "tiny-gpt2",
        lambda tmp: [f"data.train={write_dialogues(tmp)}", "data.validation=null", "data.max_length=256"],
    ),
    "summarization-t5": (
        "summarize-dialogsum",
        "tiny-t5",
        lambda tmp: [f"data.train={write_dialogues(tmp)}", "data.validation=null"],
    ),
    "summarization-bart": (
        "summarize-dialogsum",
        "tiny-bart",
        lambda tmp: [f"data.train={write_dialogues(tmp)}", "data.validation=null"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_generative_task_trains_an_adapter_that_its_demo_and_transformers_load(
    case: str, run_cli, tmp_path: Path
) -> None:
    recipe, model, data = CASES[case]
    out = tmp_path / "out"
    result = llmkit.finetune(
        recipe,
        [
            f"model={model}",
            *data(tmp_path),
            "data.max_train_samples=24",
            "data.max_eval_samples=4",
            "data.validation_split=0.2",
            "data.max_length=128",
            "training.max_steps=2",
            "training.eval_strategy=no",
            "training.per_device_train_batch_size=4",
            f"output_dir={out}",
            *LORA,
        ],
    )
    adapter_files(result.output_dir)
    assert math.isfinite(result.metrics["train_loss"])
    if recipe == "summarize-dialogsum":
        summary = run_cli("summarize", "A: Hi, how are you? B: Fine, thanks.", "--model", out, "--json")
        assert summary.exit_code == 0, summary.stderr
        assert "generated_summary" in json.loads(summary.stdout)
        family = "AutoModelForSeq2SeqLM" if model != "tiny-gpt2" else "AutoModelForCausalLM"
        import transformers

        loaded = getattr(transformers, family).from_pretrained(str(out))  # transformers' own PEFT loading
        assert any("lora" in name for name, _ in loaded.named_modules())
    else:
        from transformers import pipeline

        generated = run_cli("generate", "Once upon", "--model", out, "--max-new-tokens", "4", "--json")
        assert generated.exit_code == 0, generated.stderr
        assert json.loads(generated.stdout)["prompt"] == "Once upon"
        text = pipeline("text-generation", model=str(out))("Once upon", max_new_tokens=4, do_sample=False)
        assert text[0]["generated_text"].startswith("Once upon")


def test_fill_mask_adapter_trains_the_new_head_and_fills_masks(run_cli, tmp_path: Path) -> None:
    from transformers import pipeline

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(f"the {w} sat on the mat ." for w in ("cat", "dog", "bird") * 20), encoding="utf-8"
    )
    out = tmp_path / "fm"
    llmkit.finetune(
        {
            "task": "fill-mask",
            "model": "tiny-bert",
            "data": {"train": str(corpus), "validation_split": 0.2, "max_length": 32},
            "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
            "peft": {"r": 4},
            "output_dir": str(out),
        }
    )
    adapter_files(out)
    saved = json.loads((out / ADAPTER_CONFIG_FILE).read_text())["modules_to_save"]
    assert saved == ["cls.predictions.transform"]  # the new head's own layer, not the tied decoder
    filled = run_cli("fill-mask", "the cat sat on the [MASK] .", "--model", out, "--json")
    assert filled.exit_code == 0, filled.stderr  # the head counts as trained: the adapter holds it
    assert len(json.loads(filled.stdout)["masks"][0]) == 5
    assert pipeline("fill-mask", model=str(out))("the cat sat on the [MASK] .")[0]["token_str"]


# -- the fast loss paths see the adapter ----------------------------------------------------------------
def test_fast_loss_paths_equal_the_wrapped_models_own_loss() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, TrainingArguments

    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.causal_lm import causal_lm_trainer_class
    from llmkit.tasks.fill_mask import masked_positions_trainer

    torch.manual_seed(0)
    cases = [
        (AutoModelForCausalLM, "tiny-gpt2", causal_lm_trainer_class(), {"fan_in_fan_out": True}),
        (AutoModelForMaskedLM, "tiny-bert", masked_positions_trainer(), {}),
    ]
    for auto, alias, trainer_class, extra in cases:
        model = auto.from_pretrained(resolve_model(alias))
        model = get_peft_model(
            model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, **extra)
        )
        ids = torch.randint(5, 100, (2, 12))
        labels = ids.clone()
        labels[:, :5] = -100
        args = TrainingArguments(output_dir="/tmp/unused", use_cpu=True, report_to="none")
        trainer = trainer_class(model=model, args=args)
        model.train()
        torch.manual_seed(1)
        fast = trainer.compute_loss(model, {"input_ids": ids, "labels": labels})
        torch.manual_seed(1)
        stock = model(input_ids=ids, labels=labels).loss
        assert fast.item() == pytest.approx(stock.item(), rel=1e-5), alias
        fast.backward()  # gradients reach the adapters through the fast path
        grads = [p.grad for name, p in model.named_parameters() if "lora_" in name]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), alias


def test_gradient_checkpointing_trains_an_adapter(finetune_tiny) -> None:
    plain = finetune_tiny("training.max_steps=3", "training.precision=fp32", *LORA, "overwrite=true")
    checkpointed = finetune_tiny(
        "training.max_steps=3",
        "training.precision=fp32",
        "training.gradient_checkpointing=true",
        *LORA,
        "overwrite=true",
    )
    assert checkpointed.metrics["train_loss"] == pytest.approx(plain.metrics["train_loss"], rel=1e-4)
    assert checkpointed.metrics["eval_loss"] == pytest.approx(plain.metrics["eval_loss"], rel=1e-4)


# -- bad input: one line, exit 2, nothing written -----------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "peft.target_modules=[q_proj]",
            "peft.target_modules names 'q_proj', which this model does not have",
        ),
        ("peft.r=0", "peft.r must be a positive integer"),
        ("peft.alpha=lots", "peft.alpha must be a number"),
        ("peft.quantize=4bit", "peft.quantize=4bit needs a CUDA GPU"),
        ("peft.rank=8", "unknown key 'peft.rank'"),
        ("peft.method=prefix", "peft.method must be one of lora"),
    ],
)
def test_bad_peft_settings_exit_2_and_write_nothing(
    run_cli, sentiment_files, tmp_path: Path, override: str, expected: str
) -> None:
    train, validation = sentiment_files
    out = tmp_path / "out"
    result = run_cli(
        "finetune", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}",
        f"output_dir={out}", "training.max_steps=1", override,
    )  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not out.exists()


def test_a_missing_target_module_lists_the_models_linear_layers(run_cli, sentiment_files, tmp_path) -> None:
    train, validation = sentiment_files
    result = run_cli(
        "finetune", "model=tiny-bert", f"data.train={train}", f"data.validation={validation}",
        f"output_dir={tmp_path / 'out'}", "peft.target_modules=[q_proj, value]",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "its linear layers: " in result.stderr and "query" in result.stderr and "dense" in result.stderr


def test_an_adapter_whose_base_is_gone_names_it_and_base_points_at_it(
    finetune_tiny, run_cli, tmp_path
) -> None:
    out = finetune_tiny("training.max_steps=1", *LORA).output_dir
    rows = write_csv(tmp_path / "rows.csv", ["text"], [["fine"]])
    config = json.loads((out / ADAPTER_CONFIG_FILE).read_text())
    base = config["base_model_name_or_path"]
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(config))
    recipe = (out / "recipe.yaml").read_text()
    (out / "recipe.yaml").write_text(recipe.replace("model: tiny-bert", "model: no-such-base"))

    lost = run_cli("predict", "--model", out, "--input", rows)
    assert lost.exit_code == 2
    assert "its base model 'no-such-base' or" in lost.stderr and "--base PATH" in lost.stderr
    found = run_cli("predict", "--model", out, "--input", rows, "--base", base)
    assert found.exit_code == 0, found.stderr
    assert json.loads(found.stdout)["predicted_label"] in ("negative", "positive")
    merged = run_cli("merge", out, "--base", base, "--output", tmp_path / "m")
    assert merged.exit_code == 0, merged.stderr


def test_merging_a_full_run_is_refused(finetune_tiny, run_cli, tmp_path: Path) -> None:
    out = finetune_tiny("training.max_steps=1").output_dir
    result = run_cli("merge", out)
    assert result.exit_code == 2 and "no adapter to merge" in result.stderr
    assert not (out / "merged").exists()


# -- scale-out and crash safety hold for adapters ------------------------------------------------------
@LAUNCHES_PROCESSES
def test_two_processes_train_the_same_adapter_as_one(sentiment_files, tmp_path: Path) -> None:
    from tests.test_distributed import finetune

    train, validation = sentiment_files
    common = [
        "model=tiny-bert", f"data.train={train}", f"data.validation={validation}", "training.max_steps=4",
        "training.learning_rate=1e-2", "training.train_sampling_strategy=sequential",
        "training.precision=fp32", "peft.dropout=0", *LORA,
    ]  # fmt: skip
    one = finetune(
        [*common, "training.per_device_train_batch_size=8", f"output_dir={tmp_path / 'one'}"], tmp_path
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = finetune(
        [
            "--num-processes",
            "2",
            *common,
            "training.per_device_train_batch_size=4",
            f"output_dir={tmp_path / 'two'}",
        ],
        tmp_path,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert double["train_loss"] == pytest.approx(single["train_loss"], rel=0.05)
    assert double["eval_loss"] == pytest.approx(single["eval_loss"], rel=0.05)
    adapter_files(tmp_path / "two")


def test_a_killed_adapter_run_resumes_to_the_same_metrics(sentiment_files, tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from llmkit.runs.entries import complete_checkpoints
    from tests.test_reliability import ENV, command

    train, validation = sentiment_files
    lora = [*LORA, "training.max_steps=100"]
    whole = subprocess.run(
        [*command(train, validation, tmp_path / "whole"), *lora], env=ENV, capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    victim = subprocess.Popen(
        [*command(train, validation, out), *lora],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not complete_checkpoints(out) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    checkpoint = complete_checkpoints(out)[-1]
    assert (checkpoint / ADAPTER_WEIGHTS_FILE).exists()  # checkpoints hold the adapter, not the model
    resumed = subprocess.run(
        [*command(train, validation, out), *lora], env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "llmkit: resuming from" in resumed.stderr
    first = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    assert again["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-5)
    adapter_files(out)


# -- the real models ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_lora_learns_sst2_with_under_two_percent_of_the_weights(
    tmp_path: Path, real_data_dir: Path
) -> None:
    result = llmkit.finetune(
        "sst2-minilm",
        [
            f"data.train={real_data_dir / 'sst2' / 'train.tsv'}",
            f"data.validation={real_data_dir / 'sst2' / 'dev.tsv'}",
            "data.max_train_samples=2000",
            "data.max_eval_samples=200",
            "training.max_steps=60",
            "training.learning_rate=5e-4",
            f"output_dir={tmp_path / 'out'}",
            "peft.r=8",  # 1.5 % of MiniLM's parameters (r=16: 2.9 %)
        ],
    )
    stats = json.loads((result.output_dir / "run_stats.json").read_text())["adapter"]
    assert stats["trainable_parameters"] / stats["all_parameters"] < 0.02
    assert result.metrics["eval_accuracy"] > 0.7


@pytest.mark.slow
def test_smollm2_lora_adapter_is_small_and_generates(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = llmkit.finetune(
        "instruct-alpaca",
        [
            f"data.train={write_instructions(tmp_path, 16)}", "data.max_length=128",
            "data.validation_split=0", "training.max_steps=2", "training.per_device_train_batch_size=4",
            f"output_dir={out}", "peft.r=8",
        ],
    )  # fmt: skip
    assert math.isfinite(result.metrics["train_loss"])
    assert (out / ADAPTER_WEIGHTS_FILE).stat().st_size < 0.05 * 135e6 * 2  # well under 5 % of the bf16 model
    chat = run_cli("generate", "Name a color.", "--model", out, "--chat", "--max-new-tokens", "6", "--json")
    assert chat.exit_code == 0, chat.stderr
    assert json.loads(chat.stdout)["text"].strip()


def test_ner_and_qa_adapters_train_their_heads_and_predict(run_cli, tmp_path: Path) -> None:
    from transformers import pipeline

    from tests.test_ner import rows as ner_rows
    from tests.test_ner import write_jsonl
    from tests.test_qa import row as qa_row

    tagged = write_jsonl(tmp_path / "tagged.jsonl", ner_rows(16))
    ner = llmkit.finetune(
        {"task": "ner", "model": "tiny-bert"},
        [f"data.train={tagged}", "training.max_steps=2", f"output_dir={tmp_path / 'ner'}", *LORA],
    ).output_dir
    adapter_files(ner)
    assert json.loads((ner / ADAPTER_CONFIG_FILE).read_text())["modules_to_save"]  # the new tag head
    id2label = json.loads((ner / MODEL_CONFIG_FILE).read_text())["id2label"]
    labels = {int(key): tag for key, tag in id2label.items()}
    assert f"model_kwargs={{'id2label': {labels!r}}}" in (ner / "README.md").read_text()  # the card says how
    tags = pipeline(
        "token-classification",
        model=str(ner),
        aggregation_strategy="simple",
        model_kwargs={"id2label": labels},
    )
    assert isinstance(tags("Anna Schmidt works for Globex in Paris ."), list)
    rows = write_jsonl(tmp_path / "sentences.jsonl", [{"tokens": ["Anna", "lives", "in", "Paris", "."]}])
    predicted = run_cli("predict", "--model", ner, "--input", rows)
    assert predicted.exit_code == 0, predicted.stderr
    assert "predicted_entities" in json.loads(predicted.stdout)

    questions = write_jsonl(tmp_path / "questions.jsonl", [qa_row(i) for i in range(12)])
    qa = llmkit.finetune(
        {"task": "question-answering", "model": "tiny-bert"},
        [f"data.train={questions}", "data.max_length=64", "data.doc_stride=16", "training.max_steps=2",
         f"output_dir={tmp_path / 'qa'}", *LORA],
    ).output_dir  # fmt: skip
    adapter_files(qa)
    answered = run_cli("answer", "Where does Anna live?", "--context", "Anna lives in Berlin.", "--model", qa)
    assert answered.exit_code == 0, answered.stderr
