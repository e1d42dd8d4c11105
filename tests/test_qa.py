"""Extractive question answering (task: question-answering): windows, span search, SQuAD metric, the
tokenization cache, predict, `llmkit answer`, and every bad input of issue 16."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmkit.core.errors import LlmkitError

FACTS = [
    ("Where does Anna live?", "Anna lives in Berlin and works at the museum.", "Berlin"),
    ("Who works at the bank?", "Tom works at the bank; his sister paints houses.", "Tom"),
    ("What colour is the car?", "The car outside the station is red and very old.", "red"),
    ("When did the shop open?", "The small shop on the corner opened in 1998 after a long delay.", "1998"),
]
#: Filler that makes a context longer than a 64-token window.
FILLER = " ".join(f"Sentence number {i} says nothing at all." for i in range(12))


def row(index: int, long: bool = False) -> dict:
    question, context, answer = FACTS[index % len(FACTS)]
    if long:
        context = f"{FILLER} {context}"
    return {
        "id": str(index),
        "question": question,
        "context": context,
        "answers": {"text": [answer], "answer_start": [context.index(answer)]},
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def qa_files(tmp_path: Path) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "train.jsonl", [row(i, long=i % 2 == 0) for i in range(16)])
    validation = write_jsonl(tmp_path / "validation.jsonl", [row(i, long=i % 2 == 1) for i in range(6)])
    return train, validation


def finetune(tmp_path: Path, train: Path, validation: Path, *overrides: str, out: str = "out"):
    import llmkit

    return llmkit.finetune(
        {"task": "question-answering", "model": "tiny-bert"},
        [
            f"data.train={train}",
            f"data.validation={validation}",
            "data.max_length=64",  # the long contexts need several windows
            "data.doc_stride=16",
            "training.max_steps=3",
            f"output_dir={tmp_path / out}",
            *overrides,
        ],
    )


# -- pieces ---------------------------------------------------------------------------------------------
def test_squad_metric_values() -> None:
    from llmkit.metrics import load_metrics

    squad = load_metrics("squad")
    assert squad.compute(predictions=["the Broncos"], references=[["Broncos", "x"]])["exact_match"] == 100.0
    assert squad.compute(predictions=["Paris"], references=[["Paris France"]])["f1"] == pytest.approx(
        100 * 2 / 3
    )
    assert squad.compute(predictions=[""], references=[[]])["exact_match"] == 100.0


def test_best_span_stays_in_the_context_and_within_max_answer_length() -> None:
    import numpy as np

    from llmkit.tasks.question_answering import NO_SPAN, best_span

    offsets = [NO_SPAN, NO_SPAN, (0, 4), (5, 9), (10, 14), (15, 19), NO_SPAN]
    start = np.array([9.0, 8.0, 1.0, 3.0, 0.0, 0.0, 0.0])  # the question token 1 is best, then token 3
    end = np.array([9.0, 0.0, 0.0, 0.0, 0.0, 2.0, 9.0])
    span = best_span(start, end, offsets, n_best=20, max_answer_length=30)
    assert (span.start, span.end) == (5, 19) and 0 < span.probability < 1
    short = best_span(start, end, offsets, n_best=20, max_answer_length=2)
    assert (short.start, short.end) == (5, 14)  # tokens 3-4: the best span of at most 2 tokens


def test_gold_positions_scored_through_the_evaluation_give_back_the_answers(real_data_dir: Path) -> None:
    """The evaluation's window -> question -> character mapping, on 300 real SQuAD dev questions: logits that
    point at each window's training positions must come back as the gold answers (a scrambled mapping would
    score near 0 while the loss still fell)."""
    import numpy as np
    from datasets import Dataset

    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.metrics import load_metrics
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks.question_answering import QuestionAnsweringTask

    lines = (real_data_dir / "squad" / "validation.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    dev = [json.loads(line) for line in lines]
    task = QuestionAnsweringTask({**COMMON_DATA_DEFAULTS, **QuestionAnsweringTask.data_defaults})
    windows = task.encode(Dataset.from_list(dev), load_tokenizer(resolve_model("minilm-l6")))
    assert len(windows) > len(dev)  # some contexts are longer than one window
    width = max(len(ids) for ids in windows["input_ids"])
    start_logits = np.full((len(windows), width), -100.0)  # the Trainer pads batches' logits with -100
    end_logits = np.full((len(windows), width), -100.0)
    for index, window in enumerate(windows):
        start_logits[index, : len(window["input_ids"])] = 0.0
        end_logits[index, : len(window["input_ids"])] = 0.0
        if window["start_positions"]:  # 0: the answer is not in this window ([CLS])
            start_logits[index, window["start_positions"]] = 10.0
            end_logits[index, window["end_positions"]] = 10.0
    answers, gold = task.answers_for_rows(dev, windows, start_logits, end_logits)
    scores = load_metrics("squad").compute(predictions=answers, references=gold)
    assert scores["exact_match"] > 95  # the rest: answers the uncased tokenizer cannot spell (ü -> u)
    assert answers[:3] == ["Denver Broncos", "Carolina Panthers", "Santa Clara, California"]


def test_answer_positions_point_at_cls_when_the_window_lacks_the_answer() -> None:
    from llmkit.tasks.question_answering import NO_SPAN, answer_positions

    offsets = [NO_SPAN, (0, 4), (5, 9), (10, 14), NO_SPAN]
    assert answer_positions(offsets, {"text": ["ef"], "answer_start": [6]}) == (2, 2)
    assert answer_positions(offsets, {"text": ["xyz"], "answer_start": [30]}) == (0, 0)


# -- a run ----------------------------------------------------------------------------------------------
def test_qa_scores_the_same_from_a_warm_tokenization_cache(
    tmp_path: Path, qa_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run gets every split from the cache (encode never runs) and still maps windows back."""
    from llmkit.models.resolve import resolve_model
    from llmkit.tasks.question_answering import QuestionAnsweringTask

    resolve_model("tiny-bert")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(Path(os.environ["LLMKIT_CACHE"]) / "models")
    monkeypatch.setenv("LLMKIT_CACHE", str(cache))
    cold = finetune(tmp_path, *qa_files, out="cold")
    assert cold.metrics["validation_windows"] > 6  # the long contexts took several windows

    def no_encoding(*args, **kwargs):
        raise AssertionError("a warm cache must not encode again")

    monkeypatch.setattr(QuestionAnsweringTask, "encode", no_encoding)
    warm = finetune(tmp_path, *qa_files, out="warm")
    assert {"eval_exact_match", "eval_f1"} <= set(warm.metrics)
    for key in ("eval_exact_match", "eval_f1", "eval_loss"):
        assert warm.metrics[key] == pytest.approx(cold.metrics[key]), key


def test_qa_predict_and_answer_and_the_folder_loads_in_transformers(
    tmp_path: Path, qa_files: tuple[Path, Path], run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForQuestionAnswering
    from transformers.pipelines import SUPPORTED_TASKS

    out = finetune(tmp_path, *qa_files, out="runs/qa").output_dir
    assert type(AutoModelForQuestionAnswering.from_pretrained(out)).__name__ == "BertForQuestionAnswering"
    # docs/tasks/question-answering.md: transformers 5 ships no question-answering pipeline; `llmkit answer`
    # serves the folder
    assert "question-answering" not in SUPPORTED_TASKS

    questions = write_jsonl(
        tmp_path / "questions.jsonl", [{"question": q, "context": c} for q, c, _ in FACTS]
    )
    printed = run_cli("predict", "-m", out, "-i", questions)
    assert printed.exit_code == 0, printed.stderr
    for line in printed.stdout.splitlines():
        result = json.loads(line)
        assert (
            result["context"][result["predicted_start"] : result["predicted_end"]]
            == result["predicted_answer"]
        )
        assert 0 <= result["predicted_score"] <= 1

    context_file = tmp_path / "context.txt"
    context_file.write_text(FACTS[0][1])
    monkeypatch.chdir(tmp_path)
    answered = run_cli("answer", FACTS[0][0], "--context-file", context_file, "--json")  # the newest run
    assert answered.exit_code == 0, answered.stderr
    assert "llmkit: runs/qa answers (the newest question-answering run under ./runs)" in answered.stderr
    result = json.loads(answered.stdout)
    assert FACTS[0][1][result["start"] : result["end"]] == result["answer"]
    inline = run_cli("answer", FACTS[0][0], "--context", FACTS[0][1], "--model", out, "--json")
    assert json.loads(inline.stdout) == result

    neither = run_cli("answer", "Who?", "--model", out)
    assert (
        neither.exit_code == 2
        and "give the context as --context TEXT or --context-file FILE" in neither.stderr
    )
    untrained = run_cli("answer", "Who?", "--context", "Tom.", "--model", "tiny-bert")
    assert untrained.exit_code == 2 and "has no trained question-answering head" in untrained.stderr


def test_unanswerable_questions_with_version_2(tmp_path: Path, qa_files: tuple[Path, Path]) -> None:
    records = [row(i) for i in range(8)]
    records[3]["answers"] = {"text": [], "answer_start": []}
    train = write_jsonl(tmp_path / "v2.jsonl", records)
    with pytest.raises(
        LlmkitError, match=r"line 4: column 'answers' \(data.answers\): no answer; .*version_2"
    ):
        finetune(tmp_path, train, qa_files[1], "data.validation_split=0")
    result = finetune(tmp_path, train, qa_files[1], "data.version_2_with_negative=true", out="v2")
    assert "eval_f1" in result.metrics


class LogitsByToken:
    """A stand-in question-answering model: each token's start and end logit is a fixed score of its id."""

    def __init__(self, scores: dict[int, float], vocabulary: int) -> None:
        import torch

        self.device = torch.device("cpu")
        self.table = torch.zeros(vocabulary)
        for token, score in scores.items():
            self.table[token] = score

    def __call__(self, input_ids, **inputs):
        from types import SimpleNamespace

        logits = self.table[input_ids]
        return SimpleNamespace(start_logits=logits, end_logits=logits)


def test_predict_chooses_as_the_evaluation_does_and_abstains_with_version_2() -> None:
    """One span search, window choice and no-answer rule: a lone strong span in a crowded window beats a
    clearer but weaker one elsewhere (start + end logits, not each window's softmax), and where [CLS]
    scores higher than every span, SQuAD 2.0 leaves the question unanswered in predict as in evaluation."""
    import numpy as np
    from datasets import Dataset

    from llmkit.data.section import COMMON_DATA_DEFAULTS
    from llmkit.models.resolve import load_tokenizer, resolve_model
    from llmkit.tasks.question_answering import QuestionAnsweringTask

    tokenizer = load_tokenizer(resolve_model("tiny-bert"))
    museum, city, park = tokenizer.convert_tokens_to_ids(["museum", "city", "park"])
    crowded = "museum " + "city " * 8 + "old " * 30 + "park"  # two windows: museum among cities; park
    rows = [
        {"question": "Where?", "context": crowded, "answers": {"text": ["museum"], "answer_start": [0]}},
        {"question": "Where?", "context": "old city old", "answers": {"text": [], "answer_start": []}},
    ]
    for version_2, cls_score, expected in [
        (False, 0.0, ["museum", "city"]),
        (True, 0.0, ["museum", "city"]),
        (True, 4.5, ["museum", ""]),  # [CLS] 9 beats city's 8, not museum's 10
        (True, 6.0, ["", ""]),
        (False, 6.0, ["museum", "city"]),
    ]:
        settings = {"max_length": 32, "doc_stride": 8, "version_2_with_negative": version_2}
        task = QuestionAnsweringTask(
            {**COMMON_DATA_DEFAULTS, **QuestionAnsweringTask.data_defaults, **settings}
        )
        scores = {museum: 5.0, city: 4.0, park: 4.5, tokenizer.cls_token_id: cls_score}
        model = LogitsByToken(scores, len(tokenizer))
        predicted = task.predict(model, tokenizer, rows)
        assert [p["predicted_answer"] for p in predicted] == expected, (version_2, cls_score)
        windows = task.encode(Dataset.from_list(rows), tokenizer)
        assert len(windows) == 3  # the crowded context takes two windows
        width = max(len(ids) for ids in windows["input_ids"])
        input_ids = np.array([ids + [0] * (width - len(ids)) for ids in windows["input_ids"]])
        logits = model(input_ids).start_logits.numpy()
        assert task.answers_for_rows(rows, windows, logits, logits)[0] == expected
        for prediction in predicted:
            if not prediction["predicted_answer"]:
                assert prediction["predicted_start"] is None and prediction["predicted_score"] == 0.0
        if expected[0]:  # reported: its probability in its window, where eight cities compete
            assert (predicted[0]["predicted_start"], predicted[0]["predicted_end"]) == (0, 6)
            assert 0 < predicted[0]["predicted_score"] < 0.5


def test_squad_2_predictions_on_the_validation_file_reproduce_the_eval_scores(
    tmp_path: Path, run_cli
) -> None:
    """`llmkit predict` on the dev file, scored with SQuAD 2.0's EM/F1 (an empty answer is right only for an
    unanswerable question), gives the run's eval scores; `llmkit answer` abstains where predict does."""
    from llmkit.metrics import load_metrics

    def unanswerable(index: int) -> dict:
        record = row(index)
        return {**record, "question": FACTS[(index + 1) % 4][0], "answers": {"text": [], "answer_start": []}}

    train = write_jsonl(tmp_path / "train.jsonl", [row(i) if i % 4 else unanswerable(i) for i in range(32)])
    dev_rows = [row(i, long=i % 4 == 1) if i % 3 else unanswerable(i) for i in range(8)]
    dev = write_jsonl(tmp_path / "validation.jsonl", dev_rows)
    result = finetune(
        tmp_path, train, dev, "data.version_2_with_negative=true", "training.max_steps=20",
        "training.learning_rate=3e-4",
        "training.precision=fp32",  # predict runs in fp32; a bf16 evaluation could differ in a near tie
    )  # fmt: skip
    printed = run_cli("predict", "-m", result.output_dir, "-i", dev)
    assert printed.exit_code == 0, printed.stderr
    predicted = [json.loads(line) for line in printed.stdout.splitlines()]
    answers = [p["predicted_answer"] for p in predicted]
    assert "" in answers and any(answers), answers  # the model abstains on some questions, not all
    scores = load_metrics("squad").compute(
        predictions=answers, references=[r["answers"]["text"] for r in dev_rows]
    )
    assert scores["exact_match"] == pytest.approx(result.metrics["eval_exact_match"], abs=1e-9)
    assert scores["f1"] == pytest.approx(result.metrics["eval_f1"], abs=1e-9)

    samples = json.loads((result.output_dir / "run_stats.json").read_text())["samples"]
    for sample, answer in zip(samples, answers, strict=False):  # the report shows the same choice
        assert (
            sample["prediction"] == "(no answer)" if not answer else sample["prediction"].startswith(answer)
        )

    abstained = next(p for p in predicted if not p["predicted_answer"])
    assert (abstained["predicted_start"], abstained["predicted_end"], abstained["predicted_score"]) == (
        None, None, 0.0,
    )  # fmt: skip
    question = ["answer", abstained["question"], "-c", abstained["context"], "-m", result.output_dir]
    assert run_cli(*question).stdout.strip() == "(no answer in the context)"
    answered = json.loads(run_cli(*question, "--json").stdout)
    assert (answered["answer"], answered["start"], answered["end"]) == ("", None, None)


# -- bad input ------------------------------------------------------------------------------------------
def test_answer_not_at_its_answer_start_fails_or_is_skipped_and_counted(
    tmp_path: Path, qa_files: tuple[Path, Path], run_cli
) -> None:
    records = [row(i) for i in range(10)]
    records[4]["answers"]["answer_start"] = [2]
    train = write_jsonl(tmp_path / "bad.jsonl", records)
    args = ["finetune", "task=question-answering", "model=tiny-bert", f"data.train={train}"]
    args += [f"data.validation={qa_files[1]}", "training.max_steps=2", f"output_dir={tmp_path}/o"]
    result = run_cli(*args)
    assert result.exit_code == 2
    assert (
        f"data.train {train} line 5: column 'answers' (data.answers): answer 'Berlin' is not at "
        f"answer_start 2 (it occurs at 14); fix it, or set data.skip_bad_answers=true" in result.stderr
    )
    assert not (tmp_path / "o").exists()
    skipped = run_cli(*args, "data.skip_bad_answers=true")
    assert skipped.exit_code == 0, skipped.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["train_skipped_bad_answers"] == 1


@pytest.mark.parametrize("column", ["question", "context"])
def test_empty_question_or_context(tmp_path: Path, qa_files: tuple[Path, Path], run_cli, column: str) -> None:
    records = [row(i) for i in range(6)]
    records[2][column] = "  "
    train = write_jsonl(tmp_path / "bad.jsonl", records)
    result = run_cli(
        "finetune", "task=question-answering", "model=tiny-bert", f"data.train={train}",
        f"data.validation={qa_files[1]}", f"output_dir={tmp_path}/o",
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"data.train {train} line 3: column '{column}' (data.{column}) is empty" in result.stderr


def test_doc_stride_must_be_below_max_length(tmp_path: Path, qa_files: tuple[Path, Path]) -> None:
    with pytest.raises(
        LlmkitError, match=r"data.doc_stride \(64\) must be smaller than data.max_length \(64\)"
    ):
        finetune(tmp_path, *qa_files, "data.doc_stride=64")


# -- the real model -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_answers_real_squad_questions(tmp_path: Path, run_cli, real_data_dir: Path) -> None:
    """MiniLM-L6 on 300 SQuADShifts questions for 30 steps, scored on 30 SQuAD dev questions."""
    import llmkit

    result = llmkit.finetune(
        "qa-squad",
        [
            f"data.train={real_data_dir / 'squad' / 'train.jsonl'}",
            f"data.validation={real_data_dir / 'squad' / 'validation.jsonl'}",
            "data.max_train_samples=300",
            "data.max_eval_samples=30",
            "data.max_length=256",
            "training.max_steps=30",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    assert result.metrics["eval_f1"] > 0  # SQuAD F1 in percent; a window head at random scores ~0-2
    context = "The Eiffel Tower was completed in 1889 in Paris for the World's Fair."
    answered = run_cli(
        "answer", "When was the tower completed?", "-c", context, "-m", result.output_dir, "--json"
    )
    assert answered.exit_code == 0, answered.stderr
    found = json.loads(answered.stdout)
    assert context[found["start"] : found["end"]] == found["answer"] and found["answer"]


def test_a_test_split_with_answers_is_scored(tmp_path: Path, qa_files: tuple[Path, Path]) -> None:
    """Answers are start/end positions, not `labels`: the spine asks the task which columns are targets."""
    test = write_jsonl(tmp_path / "test.jsonl", [row(i, long=True) for i in range(4)])
    result = finetune(tmp_path, *qa_files, f"data.test={test}")
    assert {"test_exact_match", "test_f1"} <= set(result.metrics)
    assert not (result.output_dir / "test_predictions.jsonl").exists()
