"""GRPO: the shipped arithmetic problems, the final-answer check, the rewards (built-ins, a function beside
the recipe and a reward-model run), what a run logs and reports, and bad input in one line. A tiny causal LM
learns nothing, so the runs test mechanics: which rewards are computed on what, and where their means land."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import llmkit
from llmkit.core.errors import LlmkitError
from llmkit.data.arithmetic import ANSWER_INSTRUCTION, splits, write_splits
from llmkit.tasks.rewards import (
    RewardSpec,
    answers_match,
    check_rewards,
    checked_values,
    final_answer,
    reward_function,
)

#: Records every call's columns, so the test can see what the function was given.
REWARD_MODULE = """
import json, os

def parity(prompts, completions, completion_ids, answer, **kwargs):
    with open(os.environ["REWARD_CALLS"], "a") as out:
        out.write(json.dumps({"prompts": len(prompts), "answer": answer, "keys": sorted(kwargs)}) + "\\n")
    return [float(len(ids) % 2) for ids in completion_ids]

def explodes(completions, **kwargs):
    raise ValueError("no reward today")

def too_few(completions, **kwargs):
    return [1.0]

def not_numbers(completions, **kwargs):
    return ["good"] * len(completions)
"""


def problems_file(folder: Path, rows: int, seed: int) -> tuple[Path, Path]:
    train, test = write_splits(folder, rows, 6, seed)
    return train, test


def recipe(folder: Path, rewards: list, **overrides) -> Path:
    """A GRPO recipe on tiny-gpt2 (llmkit's template: it has none of its own), beside its reward module."""
    (folder / "my_rewards.py").write_text(REWARD_MODULE, encoding="utf-8")
    train, test = problems_file(folder / "data", 8, seed=3)
    settings = {
        "task": "grpo",
        "model": "tiny-gpt2",
        "data": {
            "train": str(train),
            "validation": str(test),
            "use_chat_template": False,
            "max_prompt_length": 200,
        },
        "grpo": {"rewards": rewards, "num_generations": 2, "max_completion_length": 6},
        "training": {
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 4,
            "logging_steps": 1,
            "learning_rate": 1e-3,
        },
        "output_dir": str(folder / "run"),
    }
    for key, value in overrides.items():
        settings[key] = {**settings.get(key, {}), **value}
    path = folder / "grpo.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def value_of(expression: str) -> int:
    """``a + b - c`` left to right (the generator's expressions: +, - and * of two or three numbers)."""
    parts = expression.split()
    value = int(parts[0])
    for operator, number in zip(parts[1::2], parts[2::2], strict=True):
        value = {"+": value + int(number), "-": value - int(number), "*": value * int(number)}[operator]
    return value


# -- the shipped task ---------------------------------------------------------------------------------
def test_arithmetic_splits_are_seeded_exact_and_disjoint(tmp_path: Path, run_cli) -> None:
    first, again = splits(50, 20, seed=7), splits(50, 20, seed=7)
    assert first == again
    assert splits(50, 20, seed=8)["train"] != first["train"]
    train = {p.expression for p in first["train"]}
    assert not train & {p.expression for p in first["test"]}
    for problem in first["train"] + first["test"]:
        assert problem.answer == value_of(problem.expression)
        assert all(number in problem.question for number in problem.expression.split()[::2])

    result = run_cli("data", "arithmetic", "--out", tmp_path, "--train", "5", "--test", "3", "--seed", "7")

    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert [row["expression"] for row in rows] == [p.expression for p in splits(5, 3, seed=7)["test"]]
    assert all(row["prompt"].endswith(ANSWER_INSTRUCTION) for row in rows)
    assert run_cli("data", "algebra", "--out", tmp_path).exit_code == 2


def test_the_shipped_sample_is_the_commands_output_with_its_defaults(tmp_path: Path) -> None:
    from llmkit.core.paths import SAMPLES_DIR

    write_splits(tmp_path, 1000, 200, 0)
    for name in ("train.jsonl", "test.jsonl"):
        assert (SAMPLES_DIR / "arithmetic" / name).read_text() == (tmp_path / name).read_text()


@pytest.mark.parametrize(
    ("completion", "gold", "right"),
    [
        ("5 + 3 = 8\nAnswer: 8", 8, True),
        ("Answer: 1,200.", "1200", True),
        ("Answer: 7 apples", 7, True),
        ("It is 12, no, 13", 13, True),  # no Answer line: the last number
        ("Answer: 8\nwait, 9", 8, False),  # the text after the last Answer: mark ... is 8: see below
        ("answer: nine", "Nine", True),
        ("I do not know", 4, False),
        ("Answer: -3", -3, True),
    ],
)
def test_the_final_answer_is_after_the_last_answer_mark_else_the_last_number(
    completion: str, gold: object, right: bool
) -> None:
    if completion.startswith("Answer: 8\nwait"):
        assert final_answer(completion) == "8"  # the Answer line counts, a later number does not
        assert answers_match(final_answer(completion), 9) is False
        return
    assert answers_match(final_answer(completion), gold) is right


# -- rewards --------------------------------------------------------------------------------------------
def test_built_in_rewards_score_answers_format_and_length() -> None:
    specs = check_rewards(
        [
            {"name": "answer"},
            {"name": "format", "weight": 0.5},
            {"name": "length", "min_tokens": 2, "max_tokens": 3},
        ],
        "answer",
    )
    completions = ["so 2 + 2 = 4\nAnswer: 4", "Answer: 5", "4"]
    ids = [[1, 2, 3], [1], [1, 2, 3, 4]]
    scores = {
        spec.label: reward_function(spec)(
            prompts=["p"] * 3, completions=completions, completion_ids=ids, answer=[4, 4, 4]
        )
        for spec in specs
    }
    assert scores == {"answer": [1.0, 0.0, 1.0], "format": [1.0, 1.0, 0.0], "length": [1.0, 0.0, 0.0]}
    assert [spec.weight for spec in specs] == [1.0, 0.5, 1.0]


def test_the_format_reward_reads_the_last_line_unless_told_any() -> None:
    """Rewarded anywhere, SmolLM2 learned to open with a guessed 'Answer: N' and ramble past the budget."""
    completions = ["Answer: 5\nExplanation: 9 - 3 = 6, so", "9 - 3 = 6\nAnswer: 6\n\n", "Answer: 6 more"]
    last = check_rewards([{"name": "format"}], None)[0]
    anywhere = check_rewards([{"name": "format", "line": "any"}], None)[0]
    assert reward_function(last)(prompts=["p"] * 3, completions=completions) == [0.0, 1.0, 0.0]
    anywhere_scores = reward_function(anywhere)(prompts=["p"] * 3, completions=completions)
    assert anywhere_scores == [1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "grpo.rewards must be a non-empty list"),
        ([{"name": "answr"}], "grpo.rewards[0]: unknown reward 'answr' (did you mean 'answer'?)"),
        ([{"name": "format", "patern": "x"}], "grpo.rewards[0]: unknown key 'patern'"),
        ([{"name": "format", "pattern": "("}], "grpo.rewards[0].pattern is not a regular expression"),
        ([{"name": "format", "line": "first"}], "grpo.rewards[0].line must be last or any, got 'first'"),
        ([{"name": "answer", "weight": "high"}], "grpo.rewards[0].weight must be a number"),
        ([{"name": "length", "min_tokens": 5, "max_tokens": 2}], "max_tokens=2 is below min_tokens=5"),
        ([{"function": "../evil:run"}], "grpo.rewards[0].function must be MODULE:FUNCTION"),
        ([{"name": "format"}, {"name": "format"}], "two rewards are labelled 'format'"),
        ([{"model": "runs/rm", "wieght": 1}], "grpo.rewards[0]: unknown key 'wieght' for a model reward"),
        ([{"model": ""}], "grpo.rewards[0].model must be the folder of a reward-model run"),
    ],
)
def test_a_wrong_reward_entry_is_one_line_naming_it(entries: list, message: str) -> None:
    with pytest.raises(LlmkitError, match=None) as caught:
        check_rewards(entries, "answer")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_reward_that_returns_the_wrong_shape_names_itself() -> None:
    spec = RewardSpec(2, "function", "mine", 1.0, {"file": "my.py"})
    with pytest.raises(LlmkitError, match=r"grpo.rewards\[2\] \(mine\) returned 1 values for 3 completions"):
        checked_values(spec, [1.0], 3)
    with pytest.raises(LlmkitError, match=r"returned dict, not a list of 3 numbers"):
        checked_values(spec, {"a": 1}, 3)
    assert checked_values(spec, [1, None, 0.5], 3) == [1.0, None, 0.5]


# -- runs -------------------------------------------------------------------------------------------------
def test_a_run_logs_each_reward_and_length_keeps_samples_and_scores_held_out_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("REWARD_CALLS", str(calls))
    rewards = [{"name": "answer"}, {"function": "my_rewards:parity", "weight": 0.25}, {"name": "length"}]
    path = recipe(tmp_path, rewards)
    monkeypatch.chdir(tmp_path / "data")  # the function file is found beside the recipe, not here

    result = llmkit.finetune(str(path))

    history = json.loads((result.output_dir / "log_history.json").read_text())
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 2
    for entry in steps:  # TRL's logs, in llmkit's log history
        assert {"rewards/answer/mean", "rewards/parity/mean", "rewards/length/mean", "reward"} <= set(entry)
        assert entry["completions/mean_length"] > 0
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    # evaluations (before and after) score the 6 held-out prompts once each; each training step 4 completions:
    # 2 prompts x 2 generations, each completion with its row's columns
    assert [call["prompts"] for call in logged] == [6, 4, 4, 6]
    training = logged[1]
    assert training["answer"][0] == training["answer"][1] and training["answer"][2] == training["answer"][3]
    assert {"expression", "trainer_state"} <= set(training["keys"])

    metrics = result.metrics
    for prefix in ("eval_before_", "eval_"):
        assert 0 <= metrics[f"{prefix}exact_match"] <= 1
        assert {f"{prefix}reward_answer", f"{prefix}reward_parity", f"{prefix}reward_length"} <= set(metrics)
        assert 1 <= metrics[f"{prefix}completion_length"] <= 6
    # the total is the weighted sum of the means (every reward gave a number for every completion)
    total = (
        metrics["eval_reward_answer"] + 0.25 * metrics["eval_reward_parity"] + metrics["eval_reward_length"]
    )
    assert metrics["eval_reward"] == pytest.approx(total)

    stats = json.loads((result.output_dir / "run_stats.json").read_text())
    assert [sample["step"] for sample in stats["completions"]] == [1, 1, 2, 2]  # 2 per logging step
    assert set(stats["completions"][0]["rewards"]) == {"answer", "parity", "length"}
    report = (result.output_dir / "report.md").read_text()
    assert (
        "## Sampled completions" in report
        and "| step | prompt | completion | answer | parity | length |" in report
    )
    plots = json.loads((result.output_dir / "plots" / "plot_data.json").read_text())
    assert {"reward", "completion_length", "exact_match"} <= set(plots)
    assert {"train", "eval", "train parity"} <= set(plots["reward"]["lines"])
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text())
    assert saved["grpo"]["rewards"][1]["file"] == str((tmp_path / "my_rewards.py").resolve())


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("explodes", "grpo.rewards[1] (explodes) raised ValueError: no reward today"),
        ("too_few", "grpo.rewards[1] (too_few) returned 1 values for 6 completions"),  # 6 held-out prompts
        ("not_numbers", "grpo.rewards[1] (not_numbers) returned 'good' (a str) at position 0"),
        ("missing", "has no function missing"),
    ],
)
def test_a_reward_function_that_fails_stops_the_run_in_one_line(
    function: str, message: str, tmp_path: Path, run_cli
) -> None:
    path = recipe(tmp_path, [{"name": "format"}, {"function": f"my_rewards:{function}"}])

    result = run_cli("finetune", path)

    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and message in line


def test_a_missing_reward_file_is_named(tmp_path: Path, run_cli) -> None:
    path = recipe(tmp_path, [{"function": "other_rewards:score"}])

    result = run_cli("finetune", path)

    assert result.exit_code == 2
    assert f"no file {(tmp_path / 'other_rewards.py').resolve()}" in result.stderr


def test_a_prompt_over_the_budget_is_named_or_left_out(tmp_path: Path, run_cli) -> None:
    path = recipe(tmp_path, [{"name": "answer"}], data={"max_prompt_length": 40})

    refused = run_cli("finetune", path)

    assert refused.exit_code == 2
    assert (
        "train.jsonl line 1: the prompt is" in refused.stderr
        and "data.max_prompt_length=40" in refused.stderr
    )
    squeezed = run_cli("finetune", path, "data.max_prompt_length=200", "grpo.max_completion_length=100")
    assert squeezed.exit_code == 2 and "more than the model's context (256 positions)" in squeezed.stderr


def test_rows_without_the_answer_column_are_refused_and_validate_counts_prompts_over_their_limit(
    tmp_path: Path, run_cli
) -> None:
    path = recipe(tmp_path, [{"name": "format"}], data={"answer": "solution"})

    result = run_cli("validate", path)

    assert result.exit_code == 2
    assert "train.jsonl: no column 'solution' (set by data.answer)" in result.stderr
    assert "data.answer=null for rows without answers" in result.stderr
    valid = run_cli("validate", path, "data.answer=null")
    assert valid.exit_code == 0
    assert "0 (0.0%) are over max_prompt_length 200 (refused: an error naming the row)" in valid.stdout


def test_the_batch_must_hold_whole_groups_of_completions(tmp_path: Path, run_cli) -> None:
    path = recipe(tmp_path, [{"name": "answer"}])

    result = run_cli("finetune", path, "grpo.num_generations=3")

    assert result.exit_code == 2
    assert "= 4 completions a step must be a multiple of grpo.num_generations=3" in result.stderr


def test_chat_prompts_are_rendered_by_the_template_and_long_ones_left_out_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks.causal_lm import DEFAULT_CHAT_TEMPLATE, render_chat

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    rows = [{"prompt": chat, "answer": 5}] * 7 + [
        {"prompt": [{"role": "user", "content": "and " * 80}], "answer": 1}
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    files = {"train": str(data), "validation": str(data), "max_prompt_length": 64}
    path = recipe(tmp_path, [{"name": "answer"}], data=files)

    result = llmkit.finetune(str(path), ["data.skip_long_prompts=true"])

    assert (
        result.metrics["train_long_prompts"] == result.metrics["eval_long_prompts"] == 1
    )  # left out, counted
    stats = json.loads((result.output_dir / "run_stats.json").read_text())
    tokenizer = load_tokenizer(resolve_model("tiny-gpt2"))
    expected = render_chat(tokenizer, chat, DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True)
    assert {sample["prompt"] for sample in stats["completions"]} == {expected}  # what GRPO sampled from


def test_lora_with_a_kl_penalty_uses_the_base_as_reference_and_saves_one_adapter(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = recipe(tmp_path, [{"name": "format", "pattern": "[aeiou]"}], peft={"r": 4})

    result = llmkit.finetune(str(path), ["grpo.beta=0.1"])

    history = json.loads((result.output_dir / "log_history.json").read_text())
    assert all("kl" in entry for entry in history if "loss" in entry)
    with safe_open(str(result.output_dir / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert names and not [name for name in names if ".ref." in name]


# -- a reward-model run as a reward --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reward_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward-model run on tiny-bert (another tokenizer than the tiny-gpt2 policy's), trained one step."""
    folder = tmp_path_factory.mktemp("reward-model")
    rows = [{"prompt": f"What is {n} + 1?", "chosen": f"Answer: {n + 1}", "rejected": "no"} for n in range(8)]
    train = folder / "pairs.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = {"task": "reward-model", "model": "tiny-bert", "output_dir": str(folder / "run")}
    overrides = [
        f"data.train={train}",
        "data.validation_split=0",
        "data.max_length=384",
        "data.max_prompt_length=256",
    ]
    steps = ["training.max_steps=1", "training.eval_on_start=false", "training.eval_strategy=no"]
    return llmkit.finetune(settings, [*overrides, *steps]).output_dir


def test_model_rewards_are_labelled_model_or_numbered() -> None:
    one = check_rewards([{"model": "a"}, {"name": "format"}], "answer")
    assert [(spec.kind, spec.label) for spec in one] == [("model", "model"), ("format", "format")]
    two = check_rewards(
        [{"model": "a"}, {"model": "b", "weight": 0.5}, {"model": "c", "name": "judge"}], None
    )
    assert [spec.label for spec in two] == ["model_1", "model_2", "judge"]
    assert two[0].settings == {"model": "a"} and two[1].weight == 0.5


def test_a_reward_model_run_scores_completions_as_predict_does(
    reward_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit.inference.predict import predict_file

    relative = os.path.relpath(reward_run, tmp_path)  # to the recipe's folder
    path = recipe(tmp_path, [{"name": "format"}, {"model": relative, "weight": 1.0}])
    monkeypatch.chdir(tmp_path / "data")  # the run folder is found beside the recipe, not here

    result = llmkit.finetune(str(path))

    history = json.loads((result.output_dir / "log_history.json").read_text())
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 2 and all("rewards/model/mean" in entry for entry in steps)
    assert {"eval_before_reward_model", "eval_reward_model"} <= set(result.metrics)
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text())
    assert saved["grpo"]["rewards"][1]["model"] == str(reward_run.resolve())

    # the completions the run sampled, scored by `llmkit predict` on the reward-model run: what the run logged
    rows = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    samples = json.loads((result.output_dir / "run_stats.json").read_text())["completions"]
    question = {row["prompt"].strip(): row["prompt"] for row in rows}
    asked = [next(q for q in question if q in sample["prompt"]) for sample in samples]
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        "".join(
            json.dumps({"prompt": question[q], "completion": sample["completion"]}) + "\n"
            for q, sample in zip(asked, samples, strict=True)
        ),
        encoding="utf-8",
    )
    predicted = predict_file(str(reward_run), replies, tmp_path / "scored.jsonl")
    assert all(isinstance(row["score"], float) for row in predicted)  # every prompt fits the reward model
    logged = [sample["rewards"]["model"] for sample in samples]
    assert logged == pytest.approx([row["score"] for row in predicted], abs=1e-5)  # TRL keeps float32

    # and exactly: the reward function itself against predict, on the same texts
    spec = check_rewards([{"model": str(reward_run)}], None)[0]
    messages = [[{"role": "user", "content": q}] for q in asked]
    completions = [sample["completion"] for sample in samples]
    scores = reward_function(spec)(prompts=asked, completions=completions, prompt_messages=messages)
    assert [round(score, 6) for score in scores] == [row["score"] for row in predicted]


def test_a_folder_that_is_not_a_reward_model_run_is_one_line(
    reward_run: Path, tmp_path: Path, run_cli
) -> None:
    from llmkit.models.resolve import resolve_model

    missing = recipe(tmp_path, [{"model": "runs/none"}])
    result = run_cli("finetune", missing)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"grpo.rewards[0] (model): no folder {(tmp_path / 'runs' / 'none').resolve()}" in line
    assert "give the output_dir of a run trained with task: reward-model" in line

    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "recipe.yaml").write_text("task: classification\n", encoding="utf-8")
    cases = {
        classifier: "is a classification run, not a reward-model run",
        resolve_model("tiny-bert"): "is not a reward-model run (no readable recipe.yaml): a plain BertModel",
        resolve_model("tiny-gpt2"): "a plain GPT2LMHeadModel, without a single score",
    }
    for folder, message in cases.items():
        spec = check_rewards([{"model": str(folder)}], None)[0]
        with pytest.raises(LlmkitError) as caught:
            reward_function(spec)
        assert message in str(caught.value) and "grpo.rewards[0] (model)" in str(caught.value)
        assert "\n" not in str(caught.value)
