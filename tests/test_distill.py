"""Knowledge distillation (``distill:``) and students with fewer layers (``model: {init_from, layers}``).

alpha 0 trains exactly as a run without a teacher; a student that is a copy of its teacher starts at a soft
loss of 0 (classification, token classification, fill-mask, generation: the fast masked-positions and
labelled-positions paths included); a student learns a teacher's predictions; the soft losses are the
hand-computed values (a causal LM's at the shifted labelled positions); the combined loss keeps gradient
accumulation x batch = one batch; a student keeps exactly the teacher's chosen layers (BERT, Llama, Qwen2,
GPT-2); every bad setting is one line, exit code 2, nothing written. Tiny models only: seconds in all.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import llmkit
from tests.conftest import NEGATIVE, POSITIVE, write_csv

TEXTS = POSITIVE + NEGATIVE
QUICK = [
    "training.logging_steps=1",
    "training.eval_strategy=no",
    "training.precision=fp32",
    "training.report_to=none",
]


# -- fixtures: data, a dropout-free tiny BERT, teacher runs --------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distill")


@pytest.fixture(scope="module")
def data(folder: Path) -> dict[str, Path]:
    rows = [[text, "positive" if text in POSITIVE else "negative"] for text in TEXTS]
    tagged = folder / "tagged.jsonl"
    names = ["Anna", "John", "Maria", "Peter"]
    tagged.write_text(
        "".join(
            json.dumps(
                {"tokens": [names[i % 4], "lives", "in", "Berlin"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]}
            )
            + "\n"
            for i in range(16)
        ),
        encoding="utf-8",
    )
    (folder / "text.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    documents = ["\n".join(TEXTS[i : i + 4]) for i in range(0, 20, 4)] * 2
    (folder / "documents.txt").write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    instructions = folder / "instructions.jsonl"
    instructions.write_text(
        "".join(json.dumps({"instruction": f"Repeat: {t}", "output": t}) + "\n" for t in TEXTS),
        encoding="utf-8",
    )
    chat = folder / "chat.jsonl"
    chat.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"Echo {t}"}, {"role": "assistant", "content": t}]}
            )
            + "\n"
            for t in TEXTS
        ),
        encoding="utf-8",
    )
    return {
        "instructions": instructions,
        "chat": chat,
        "train": write_csv(folder / "train.csv", ["text", "label"], rows[:8] + rows[10:18]),
        "validation": write_csv(folder / "validation.csv", ["text", "label"], rows[8:10] + rows[18:20]),
        "other_labels": write_csv(
            folder / "other.csv", ["text", "label"], [[t, "good" if t in POSITIVE else "bad"] for t in TEXTS]
        ),
        "tagged": tagged,
        "text": folder / "text.txt",
        "documents": folder / "documents.txt",
    }


def tiny_bert_without_dropout(folder: Path) -> Path:
    """tiny-bert without dropout, in ``folder``: a student that is a copy of its teacher then computes exactly
    as it does, and the micro-batches of a step exactly as one batch."""
    from llmkit.models.resolve import resolve_model

    target = folder / "calm-bert"
    shutil.copytree(resolve_model("tiny-bert"), target)
    config = json.loads((target / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def calm_bert(folder: Path) -> Path:
    return tiny_bert_without_dropout(folder)


@pytest.fixture(scope="module")
def calm_gpt2(folder: Path) -> Path:
    """tiny-gpt2 without dropout, for the same reason."""
    from llmkit.models.resolve import resolve_model

    target = folder / "calm-gpt2"
    shutil.copytree(resolve_model("tiny-gpt2"), target)
    config = json.loads((target / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    (target / "config.json").write_text(json.dumps(config))
    return target


def recipe_for(task: str, data: dict[str, Path]) -> list[str]:
    if task == "generation":  # plain text, a line a document, cut into 32-token blocks
        return [
            "task=generation",
            f"data.train={data['text']}",
            "data.txt_unit=line",
            "data.max_length=32",
            "data.validation_split=0",
        ]
    if task == "token-classification":
        return ["task=token-classification", f"data.train={data['tagged']}", "data.validation_split=0"]
    if task == "fill-mask":
        return [
            "task=fill-mask",
            f"data.train={data['text']}",
            "data.max_length=32",
            "data.validation_split=0",
        ]
    return [f"data.train={data['train']}", f"data.validation={data['validation']}"]


def finetune(out: Path, *overrides: str):
    return llmkit.finetune(None, [*QUICK, f"output_dir={out}", *overrides])


@pytest.fixture(scope="module")
def teachers(folder: Path, data: dict[str, Path], calm_bert: Path, calm_gpt2: Path) -> dict[str, Path]:
    """A few steps of each distilling task on the dropout-free tiny BERT (trained heads, the data's labels),
    and of generation on the dropout-free tiny GPT-2."""
    made = {}
    for task in ("classification", "token-classification", "fill-mask", "generation"):
        made[task] = folder / f"teacher-{task}"
        overrides = recipe_for(task, data)
        finetune(
            made[task],
            f"model={calm_gpt2 if task == 'generation' else calm_bert}",
            *overrides,
            "training.max_steps=3",
            "training.learning_rate=1e-3",
        )
    return made


def log_history(run: Path) -> list[dict]:
    return json.loads((run / "log_history.json").read_text())


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


# -- the loss ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("task", "model"), [("classification", "tiny-bert"), ("generation", "tiny-gpt2")])
def test_alpha_0_trains_exactly_as_the_labels_alone(
    task: str, model: str, folder: Path, data, teachers
) -> None:
    """Same seed, a tiny model with its dropout, two micro-batches a step: the same losses and weights, bit
    for bit (the teacher neither changes the student's start nor draws from the random generator)."""
    common = [f"model={model}", *recipe_for(task, data), "training.max_steps=4"]
    common += ["training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=2"]
    plain = finetune(folder / f"plain-{task}", *common).output_dir
    distilled = finetune(
        folder / f"alpha0-{task}", *common, f"distill.teacher={teachers[task]}", "distill.alpha=0"
    ).output_dir
    losses = [[entry["loss"] for entry in log_history(run) if "loss" in entry] for run in (plain, distilled)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    soft = [entry["distill_soft_loss"] for entry in log_history(distilled) if "loss" in entry]
    assert all(value > 0 for value in soft)  # the teacher was asked, and disagreed
    first, second = weights(plain), weights(distilled)
    assert first.keys() == second.keys()
    assert all((first[key] == second[key]).all() for key in first)


@pytest.mark.parametrize("task", ["classification", "token-classification", "fill-mask", "generation"])
def test_a_copy_of_the_teacher_starts_at_soft_loss_0(task: str, folder: Path, data, teachers) -> None:
    teacher = teachers[task]
    out = finetune(
        folder / f"copy-{task}",
        f"model={teacher}",
        *recipe_for(task, data),
        f"distill.teacher={teacher}",
        "distill.alpha=1",
        "distill.temperature=2",
        "training.max_steps=1",
    ).output_dir
    first = log_history(out)[0]
    assert first["distill_soft_loss"] < 1e-6 and first["loss"] < 1e-6, first
    assert first["distill_hard_loss"] > 0.1  # the labels' loss is there, weighed 0


def test_the_student_learns_the_teachers_predictions(folder: Path, data, calm_bert: Path) -> None:
    """A teacher trained on the opposite labels: the student that learns from its outputs alone answers as it
    does, the one that learns from the labels alone the opposite."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    flipped = [[text, "negative" if text in POSITIVE else "positive"] for text in TEXTS]
    contrary = write_csv(folder / "contrary.csv", ["text", "label"], flipped[:8] + flipped[10:18])
    steps = [
        f"model={calm_bert}",
        "data.validation_split=0",
        "training.max_steps=30",
        "training.learning_rate=3e-3",
    ]
    steps.append("training.per_device_train_batch_size=16")
    teacher = finetune(folder / "contrary-teacher", *steps, f"data.train={contrary}").output_dir
    learners = {
        alpha: finetune(
            folder / f"learner-{alpha}",
            *steps,
            f"data.train={data['train']}",
            f"distill.teacher={teacher}",
            f"distill.alpha={alpha}",
            "distill.temperature=1",
        ).output_dir
        for alpha in (1, 0)
    }
    batch = AutoTokenizer.from_pretrained(teacher)(
        TEXTS[:8] + TEXTS[10:18], padding=True, return_tensors="pt"
    )

    def answers(run: Path):
        with torch.no_grad():
            return AutoModelForSequenceClassification.from_pretrained(run).eval()(**batch).logits.argmax(-1)

    taught = answers(teacher)
    agreement = {alpha: (answers(run) == taught).float().mean().item() for alpha, run in learners.items()}
    assert agreement[1] >= 0.9 and agreement[0] <= 0.1, agreement
    soft = [entry["distill_soft_loss"] for entry in log_history(learners[1]) if "loss" in entry]
    assert soft[-1] < 0.1 * soft[0], soft


def test_the_soft_losses_are_the_hand_computed_values() -> None:
    import torch

    from llmkit.training.distillation import item_logits, soft_loss

    third = math.log(3)  # logits (ln 3, 0): probabilities 3/4, 1/4
    uniform, skewed = torch.tensor([[0.0, 0.0]]), torch.tensor([[third, 0.0]])
    kl_1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_loss("kl", uniform, skewed, 1.0).item() == pytest.approx(kl_1, rel=1e-6)
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # at T = 2 the teacher's logits are (ln 3 / 2, 0)
    kl_2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))  # times T^2
    assert soft_loss("kl", uniform, skewed, 2.0).item() == pytest.approx(kl_2, rel=1e-6)

    # token classification: the mean over the tokens whose label is not -100 (the middle one is ignored)
    student = torch.tensor([[[0.0, 0.0], [9.0, -9.0], [1.0, 2.0]]])
    teacher = torch.tensor([[[third, 0.0], [-9.0, 9.0], [1.0, 2.0]]])
    labels = torch.tensor([[0, -100, 1]])
    items = item_logits(student, labels), item_logits(teacher, labels)
    assert items[0].shape == (2, 2)
    assert soft_loss("kl", *items, 1.0).item() == pytest.approx(kl_1 / 2, rel=1e-6)

    # multi-label: BCE against the teacher's sigmoid probabilities (0.5, 0.75), mean over rows x labels
    bce = (-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)) + math.log(2)) / 2
    assert soft_loss(
        "bce", torch.tensor([[third, 0.0]]), torch.tensor([[0.0, third]])
    ).item() == pytest.approx(bce, rel=1e-6)
    # regression: the squared difference from the teacher's score, mean over rows
    assert soft_loss(
        "mse", torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [4.0]])
    ).item() == pytest.approx((0.25 + 4.0) / 2)
    assert soft_loss("kl", torch.zeros(0, 2), torch.zeros(0, 2), 2.0).item() == 0  # no items in a micro-batch
    assert item_logits(uniform, torch.tensor([1])) is uniform  # one row per example: as it is


def test_the_causal_soft_loss_is_the_hand_computed_value(
    tmp_path: Path, calm_gpt2: Path, monkeypatch
) -> None:
    """A causal LM's items are the positions whose next token has a label: logits at position t predict
    token t+1, so a row's first label is never one, and -100 (a prompt, padding) is skipped. The KL of those
    positions' softened distributions, times T^2, their mean; the hard loss is the model's own."""
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from llmkit.tasks.causal_lm import causal_lm_trainer_class
    from llmkit.training.distillation import soft_loss

    student = AutoModelForCausalLM.from_pretrained(calm_gpt2)
    teacher = AutoModelForCausalLM.from_pretrained(calm_gpt2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    arguments = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = causal_lm_trainer_class()(model=student, args=arguments)
    inputs = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, -100, 7, -100, 9], [10, 11, 12, -100, -100]]),
    }
    # row 0: position 1 predicts 7, position 3 predicts 9; row 1: positions 0 and 1 predict 11 and 12
    positions = [(0, 1), (0, 3), (1, 0), (1, 1)]
    with torch.no_grad():
        features = {key: inputs[key] for key in ("input_ids", "attention_mask")}
        whole_student, whole_teacher = student(**features).logits, teacher(**features).logits
        own_loss = student(**inputs).loss
    temperature = 2.0
    expected = 0.0
    for row, position in positions:
        p = torch.softmax(whole_teacher[row, position] / temperature, dim=-1)
        q = torch.softmax(whole_student[row, position] / temperature, dim=-1)
        expected += (p * (p.log() - q.log())).sum().item()
    expected *= temperature**2 / len(positions)

    for path in ("fast", "the model's own forward"):
        if path != "fast":  # a model the fast path cannot split (sharded, soft-capped logits)
            monkeypatch.setattr(trainer, "_body_and_head", lambda model: None)
        hard, student_items = trainer.loss_and_item_logits(student, inputs)
        nothing, teacher_items = trainer.loss_and_item_logits(teacher, inputs, hard_loss=False)
        assert nothing is None and student_items.shape == (len(positions), student.config.vocab_size)
        assert torch.allclose(
            student_items, torch.stack([whole_student[r, t] for r, t in positions]), atol=1e-5
        )
        assert soft_loss("kl", student_items, teacher_items, temperature).item() == pytest.approx(
            expected, rel=1e-4
        )
        assert hard.item() == pytest.approx(own_loss.item(), rel=1e-5)


@pytest.mark.parametrize(
    "case", ["classification", "multi-label", "regression", "ner", "fill-mask", "generation"]
)
def test_accumulated_micro_batches_distil_as_one_batch(case: str, tmp_path: Path) -> None:
    """The combined loss is weighed by llmkit's step weighting like any loss: 4 micro-batches of 4 log the
    loss and gradient norm one batch of 16 does (generation: micro-batches of different label counts, the
    soft and hard terms both means over the tokens that predict a label)."""
    import torch

    from llmkit.recipe.loader import load_recipe
    from llmkit.training.spine import prepare
    from tests.test_batch_split import CASES, first_step

    recipe = CASES[case](tmp_path)
    teacher = tmp_path / "teacher"  # the task's model under another seed, nudged: it disagrees
    start = {"model": "tiny-bert", **recipe, "data": {**recipe["data"], "validation_split": 0}}
    run = prepare(load_recipe({**start, "training": {"seed": 7}, "output_dir": str(tmp_path / "t")}))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in run.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    run.model.save_pretrained(teacher)
    run.tokenizer.save_pretrained(teacher)
    recipe = {**recipe, "distill": {"teacher": str(teacher), "alpha": 0.7, "temperature": 2.0}}
    one_batch = first_step(recipe, tmp_path, accumulation=1)
    accumulated = first_step(recipe, tmp_path, accumulation=4)
    assert accumulated["loss"] == pytest.approx(one_batch["loss"], rel=1e-5)
    assert accumulated["grad_norm"] == pytest.approx(one_batch["grad_norm"], rel=1e-4)


# -- the student ---------------------------------------------------------------------------------------------
def test_a_student_keeps_the_chosen_layers_of_its_teacher(folder: Path, data, teachers) -> None:
    from llmkit.models.student import STUDENT_RECORD_FILE, build_student

    teacher = teachers["classification"]
    built = build_student({"init_from": str(teacher), "layers": [1]})
    config = json.loads((built / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["architectures"] == ["BertForSequenceClassification"]
    source, student = weights(teacher), weights(built)
    renamed = {
        key.replace("encoder.layer.1.", "encoder.layer.0."): key for key in source if ".layer.0." not in key
    }
    assert set(student) == set(renamed)
    assert all((student[key] == source[renamed[key]]).all() for key in student)  # embeddings, layer 1, head
    stamp = (built / STUDENT_RECORD_FILE).stat().st_mtime_ns
    assert build_student({"init_from": str(teacher), "layers": [1]}) == built  # the cached folder
    assert (built / STUDENT_RECORD_FILE).stat().st_mtime_ns == stamp
    assert build_student({"init_from": str(teacher), "layers": [0]}) != built

    # the student without a teacher (the baseline), from the command line; the report says where it came from
    out = finetune(
        folder / "baseline",
        f"model.init_from={teacher}",
        "model.layers=[1]",
        *recipe_for("classification", data),
        "training.max_steps=2",
    ).output_dir
    assert "layers 1 of the 2" in (out / "report.md").read_text()
    from llmkit.recipe.loader import load_recipe

    saved = load_recipe(out / "recipe.yaml")
    assert saved.student == {"init_from": str(teacher), "layers": [1]} and saved.distill is None


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_decoder_student_keeps_the_chosen_layers(family: str, folder: Path) -> None:
    """Llama-family decoders (SmolLM2 is a Llama): the kept layers renumbered, the embeddings, final norm and
    tied LM head as they were, Qwen2's per-layer attention kinds kept for the kept layers; the folder
    generates through a transformers pipeline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config, pipeline

    from llmkit.models.resolve import resolve_model
    from llmkit.models.student import build_student

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-gpt2"))
    sizes = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
    }
    kinds = ["full_attention", "sliding_attention", "full_attention"]
    config = (
        LlamaConfig(**sizes)
        if family == "llama"
        else Qwen2Config(**sizes, use_sliding_window=True, sliding_window=8, layer_types=kinds)
    )
    torch.manual_seed(0)
    source = folder / f"tiny-{family}"
    AutoModelForCausalLM.from_config(config).save_pretrained(source)
    tokenizer.save_pretrained(source)

    built = build_student({"init_from": str(source), "layers": [1, 2]})
    saved = json.loads((built / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2
    if family == "qwen2":
        assert saved["layer_types"] == kinds[1:]
    original, student = weights(source), weights(built)
    renamed = {
        key.replace("layers.1.", "layers.0.").replace("layers.2.", "layers.1."): key
        for key in original
        if ".layers.0." not in key
    }
    assert set(student) == set(renamed) and "lm_head.weight" not in student  # tied: saved once
    assert all((student[key] == original[renamed[key]]).all() for key in student)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    generate = pipeline("text-generation", model=str(built))
    assert generate("the food was", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith(
        "the food"
    )


def test_a_lora_run_teaches_and_gives_its_layers_to_a_lora_student(
    folder: Path, data, calm_bert, run_cli
) -> None:
    """A LoRA run folder (no merged/ folder: its adapter is merged as it loads) as teacher and as the source
    of the student's layers, the student trained as LoRA too."""
    from llmkit.models.student import build_student

    teacher = folder / "lora-teacher"
    lora = ["peft.method=lora", "peft.r=4", "training.learning_rate=1e-3"]
    finetune(
        teacher, f"model={calm_bert}", *recipe_for("classification", data), *lora, "training.max_steps=2"
    )
    out = finetune(
        folder / "lora-student",
        f"model.init_from={teacher}",
        "model.layers=[0]",
        *recipe_for("classification", data),
        *lora,
        f"distill.teacher={teacher}",
        "training.max_steps=2",
    ).output_dir
    assert all(entry["distill_soft_loss"] >= 0 for entry in log_history(out) if "loss" in entry)
    stats = json.loads((out / "run_stats.json").read_text())
    assert stats["distillation"]["teacher"] == str(teacher) and stats["student"]["layers"] == [0]
    card = (out / "README.md").read_text()
    assert f"by distilling `{teacher}` (alpha 0.5, temperature 2)" in card
    assert "(layers 0 of its 2)" in card

    # the student folder's layer 0 is the teacher's, adapter merged
    from transformers import AutoModelForSequenceClassification

    from llmkit.models.adaptation import from_pretrained

    whole = from_pretrained(AutoModelForSequenceClassification, teacher)
    built = AutoModelForSequenceClassification.from_pretrained(
        build_student({"init_from": str(teacher), "layers": [0]})
    )
    expected, got = whole.state_dict(), built.state_dict()
    assert all((got[key] == expected[key]).all() for key in got)  # layer 0 is layer 0: every weight as it was

    validated = run_cli(
        "validate", *recipe_for("classification", data), f"model={calm_bert}", f"distill.teacher={teacher}"
    )
    assert validated.exit_code == 0, validated.stderr
    assert f"teacher {teacher} (" in validated.stdout and "the same labels and vocabulary" in validated.stdout


@pytest.mark.parametrize("shape", ["text", "packed text", "instructions", "chat"])
def test_a_causal_lm_teacher_distils_into_a_student_of_fewer_layers(
    shape: str, folder: Path, data, teachers
) -> None:
    """A tiny GPT-2 generation run teaches a student of one of its two layers, on plain text (in blocks or
    packed documents, the teacher checked to keep them apart), instructions and chat alike; the student's
    folder generates through a transformers pipeline."""
    from transformers import pipeline

    teacher = teachers["generation"]
    shaped = recipe_for("generation", data)
    if shape == "packed text":
        shaped.append("data.packing=true")
    elif shape != "text":
        shaped = [
            "task=generation",
            f"data.train={data[shape]}",
            "data.max_length=64",
            "data.validation_split=0",
        ]
    out = finetune(
        folder / f"causal-student-{shape.replace(' ', '-')}",
        f"model.init_from={teacher}",
        "model.layers=[1]",
        *shaped,
        f"distill.teacher={teacher}",
        "training.max_steps=2",
    ).output_dir
    logged = [entry for entry in log_history(out) if "loss" in entry]
    assert len(logged) == 2 and all(entry["distill_soft_loss"] > 0 for entry in logged)
    stats = json.loads((out / "run_stats.json").read_text())
    assert stats["distillation"]["soft_loss"] == "kl" and stats["student"]["layers"] == [1]
    assert json.loads((out / "config.json").read_text())["n_layer"] == 1
    if shape == "text":
        generate = pipeline("text-generation", model=str(out))
        assert generate("the food", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith(
            "the food"
        )


def test_a_lora_causal_lm_run_teaches(folder: Path, data, calm_gpt2: Path) -> None:
    """A LoRA generation run (its adapter merged onto the base as it loads) teaches a fully trained student
    of one of its layers."""
    teacher = folder / "lora-lm-teacher"
    lora = ["peft.method=lora", "peft.r=4", "training.learning_rate=1e-3"]
    finetune(teacher, f"model={calm_gpt2}", *recipe_for("generation", data), *lora, "training.max_steps=2")
    out = finetune(
        folder / "lora-lm-student",
        f"model.init_from={teacher}",
        "model.layers=[0]",
        *recipe_for("generation", data),
        f"distill.teacher={teacher}",
        "training.max_steps=1",
    ).output_dir
    assert log_history(out)[0]["distill_soft_loss"] > 0
    stats = json.loads((out / "run_stats.json").read_text())
    assert stats["distillation"]["teacher"] == str(teacher) and stats["student"]["layers"] == [0]


# -- what is refused -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_vocabulary(folder: Path, teachers) -> Path:
    """The classification teacher with a tokenizer of another vocabulary."""
    from llmkit.models.tiny import build_wordpiece_tokenizer

    target = folder / "other-vocabulary"
    shutil.copytree(teachers["classification"], target)
    for path in target.glob("tokenizer*"):
        path.unlink()
    build_wordpiece_tokenizer(vocab_size=500).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def other_lm_vocabulary(folder: Path, teachers) -> Path:
    """The generation teacher with a byte-level BPE of another vocabulary."""
    from llmkit.models.tiny import build_byte_level_bpe_tokenizer

    target = folder / "other-lm-vocabulary"
    shutil.copytree(teachers["generation"], target)
    for path in [*target.glob("tokenizer*"), *target.glob("vocab.*"), target / "merges.txt"]:
        path.unlink(missing_ok=True)
    build_byte_level_bpe_tokenizer(vocab_size=300).save_pretrained(target)
    return target


ERRORS = [
    (
        "other labels",
        ["data.train={other_labels}", "data.validation={other_labels}", "distill.teacher={classification}"],
        "has other labels than the data (only the teacher has negative, positive; only the data has bad, "
        "good)",
    ),
    (
        "other vocabulary",
        ["distill.teacher={other_vocabulary}"],
        "has a vocabulary of 500 tokens, the student's tokenizer 2,000",
    ),
    (
        "task",
        ["task=summarization", "model=tiny-t5", "distill.teacher={classification}"],
        "distill does not work for task summarization; it works for classification, fill-mask, "
        "generation, token-classification",
    ),
    (
        "causal teacher not a causal LM",
        ["task=generation", "model=tiny-gpt2", "data.train={text}", "distill.teacher={classification}"],
        "distill.teacher {classification} is no teacher for task generation: model {classification} "
        "({classification}) cannot generate text: it is a BertForSequenceClassification, not a causal "
        "language model",
    ),
    (
        "causal teacher of another vocabulary",
        ["task=generation", "model=tiny-gpt2", "data.train={text}", "distill.teacher={other_lm_vocabulary}"],
        "has a vocabulary of 300 tokens, the student's tokenizer 512",
    ),
    (
        "alpha",
        ["distill.teacher={classification}", "distill.alpha=1.5"],
        "distill.alpha must be between 0 and 1",
    ),
    (
        "temperature",
        ["distill.teacher={classification}", "distill.temperature=0"],
        "distill.temperature must be above 0",
    ),
    ("no teacher", ["distill.alpha=0.5"], "distill.teacher must name the teacher model"),
    (
        "teacher not found",
        ["distill.teacher={folder}/nowhere"],
        "distill.teacher {folder}/nowhere: model folder",
    ),
    ("teacher without labels", ["distill.teacher=tiny-bert"], "distill.teacher tiny-bert names no labels"),
    (
        "teacher without a head",
        ["task=fill-mask", "data.train={text}", "distill.teacher=tiny-bert"],
        "distill.teacher tiny-bert has no trained BertForMaskedLM head for task fill-mask (weights it lacks: "
        "cls.predictions",
    ),
    ("unknown key", ["distill.teachr=x"], "unknown key 'distill.teachr' (did you mean 'teacher'?)"),
    (
        "next sentence",
        [
            "task=fill-mask",
            "data.train={documents}",
            "data.validation=null",
            "data.validation_split=0",
            "data.txt_unit=paragraph",
            "data.next_sentence=true",
            "distill.teacher={fill-mask}",
        ],
        "data.next_sentence adds a second head and loss",
    ),
    (
        "layers out of range",
        ["model.init_from={classification}", "model.layers=[0, 5]"],
        "names layer 5, and the model has 2 layers (0 to 1)",
    ),
    (
        "layers out of order",
        ["model.init_from={classification}", "model.layers=[1, 0]"],
        "each once, in increasing order",
    ),
    ("layers alone", ["model.layers=[0]"], "model.layers goes with model.init_from"),
    (
        "init_from and name",
        ["model.name=tiny-bert", "model.init_from={classification}", "model.layers=[0]"],
        "model has both init_from",
    ),
    (
        "no layer stack",
        ["model.init_from=tiny-t5", "model.layers=[0]"],
        "model.layers keeps layers of BERT-family encoders (bert, roberta, xlm-roberta, camembert, electra) "
        "and of Llama-family or GPT-2 decoders (llama, mistral, qwen2, qwen3, gpt2), and this model is a t5",
    ),
]


@pytest.mark.parametrize(("name", "arguments", "expected"), ERRORS, ids=[case[0] for case in ERRORS])
def test_bad_settings_are_one_line_exit_2(
    name: str,
    arguments: list[str],
    expected: str,
    run_cli,
    folder: Path,
    data,
    teachers,
    other_vocabulary,
    other_lm_vocabulary,
) -> None:
    names = {**{key: str(value) for key, value in data.items()}, **{k: str(v) for k, v in teachers.items()}}
    names.update(other_vocabulary=str(other_vocabulary), other_lm_vocabulary=str(other_lm_vocabulary))
    names.update(folder=str(folder))
    out = folder / f"refused-{name.replace(' ', '-')}"
    defaults = ["model=tiny-bert", f"data.train={data['train']}", f"data.validation={data['validation']}"]
    result = run_cli(
        "finetune",
        *defaults,
        *[a.format(**names) for a in arguments],
        f"output_dir={out}",
        "training.max_steps=1",
    )
    assert_refused(result, name, expected.format(**names), out)


def assert_refused(result, name: str, expected: str, out: Path) -> None:
    """Exit 2 with one error line holding ``expected``, and no run folder written."""
    assert result.exit_code == 2, (name, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert not out.exists()
