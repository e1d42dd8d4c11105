"""Extractive question answering (SQuAD v1.1 format; SQuAD 2.0's unanswerable questions on request).

Rows hold a question, a context and ``answers`` = {text: [...], answer_start: [...]} (character offsets
into the context). A context longer than ``data.max_length`` is cut into overlapping windows
(``data.doc_stride`` tokens shared by neighbours); a window that does not hold the answer learns to point
at the first token ([CLS]). Evaluation searches the ``n_best_size`` best starts and ends of every window of
a question for the best span of at most ``max_answer_length`` tokens, maps it back to the context by the
tokenizer's offsets and scores the texts with SQuAD exact match and F1 (percentages). ``predict`` (and with
it `llmkit predict`, `llmkit answer` and test_predictions.jsonl) chooses each answer in the same place
(``_chosen_spans``): the same span search, window choice and SQuAD 2.0 no-answer.

Windows and offsets come from ``encode``, which a warm tokenization cache skips: the window-to-question
mapping and the offsets are stored as columns of the encoded split, and ``prepare_evaluation`` (called for
every split, cached or not) takes them out before the Trainer sees the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llmkit.core.errors import LlmkitError
from llmkit.data.files import Split, column_values, require_columns, require_text, shown_value
from llmkit.tasks.base import AuditColumns, Task

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PREDICT_BATCH_SIZE = 32
#: Bookkeeping columns of an encoded split: the row each window comes from and each token's character span
#: in the context ((-1, -1) for question and special tokens).
EXAMPLE_INDEX, OFFSETS = "example_index", "context_offsets"
NO_SPAN = (-1, -1)
PREDICTED_ANSWER, PREDICTED_START, PREDICTED_END, PREDICTED_SCORE = (
    "predicted_answer",
    "predicted_start",
    "predicted_end",
    "predicted_score",
)


@dataclass
class Span:
    """The best answer found for a question: its score (start + end logit), characters and probability."""

    score: float
    start: int | None
    end: int | None
    probability: float


@dataclass
class Evaluation:
    """What scoring one encoded split needs besides the logits: its windows' rows and offsets, the gold."""

    role: str
    bookkeeping: Dataset  # EXAMPLE_INDEX and OFFSETS per window, in the Trainer's order
    contexts: list[str]
    gold: list[list[str]]


class QuestionAnsweringTask(Task):
    name = "question-answering"
    default_model = "minilm-l6"
    # transformers 5 no longer ships this pipeline (docs/tasks/question-answering.md); the folder is a
    # standard AutoModelForQuestionAnswering folder and `llmkit answer` serves it.
    pipeline_task = "question-answering"
    headline_metric = "f1"
    prediction_keys = (PREDICTED_ANSWER, PREDICTED_START, PREDICTED_END, PREDICTED_SCORE)
    target_columns = ("start_positions", "end_positions")
    data_defaults: ClassVar[dict[str, Any]] = {
        "question": "question",
        "context": "context",
        "answers": "answers",
        "max_length": 384,
        "doc_stride": 128,
        "max_answer_length": 30,
        "n_best_size": 20,
        "version_2_with_negative": False,
        "null_score_diff_threshold": 0.0,
        "skip_bad_answers": False,
    }
    training_defaults: ClassVar[dict[str, Any]] = {
        "train_sampling_strategy": "group_by_length",
    }

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.skipped: dict[str, int] = {}  # role -> rows dropped by data.skip_bad_answers
        self.evaluations: dict[str, Evaluation] = {}  # fingerprint of the Trainer's split -> its bookkeeping
        self.evaluating: Any = None  # the split the Trainer evaluates now

    # -- data -------------------------------------------------------------------------------------
    def audit_columns(self) -> AuditColumns:
        """A row is its question and context; the answers are compared whole (no distribution)."""
        return AuditColumns((self.data["question"], self.data["context"]))

    def check_inputs(self, split: Split) -> None:
        require_columns(split, {"question": self.data["question"], "context": self.data["context"]})
        require_text(split, self.data["question"], "question")
        require_text(split, self.data["context"], "context")

    def check_data(self, splits: dict[str, Split]) -> None:
        self._check_settings()
        answers = self.data["answers"]
        for split in splits.values():
            self.check_inputs(split)
            if split.role != "test" or answers in split.dataset.column_names:
                require_columns(split, {"answers": answers})
                self._check_answers(split)

    def _check_settings(self) -> None:
        for key in ("max_length", "doc_stride", "max_answer_length", "n_best_size"):
            value = self.data[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LlmkitError(f"data.{key} must be a positive number of tokens, got {value!r}")
        if self.data["doc_stride"] >= self.data["max_length"]:
            raise LlmkitError(
                f"data.doc_stride ({self.data['doc_stride']}) must be smaller than data.max_length "
                f"({self.data['max_length']}): it is the overlap of neighbouring windows"
            )

    def _check_answers(self, split: Split) -> None:
        """Every answer text must sit at its answer_start; bad rows fail, or are dropped and counted."""
        context, answers = self.data["context"], self.data["answers"]
        good = []
        for index, (text, value) in enumerate(
            zip(column_values(split.dataset, context), column_values(split.dataset, answers), strict=True)
        ):
            problem = self._answer_problem(text, value)
            if problem is None:
                good.append(index)
            elif not (self.data["skip_bad_answers"] and problem.startswith("answer")):
                fix = "; fix it, or set data.skip_bad_answers=true to skip such rows"
                raise LlmkitError(
                    f"{split.origin} {split.where(index)}: column '{answers}' (data.answers): {problem}"
                    f"{fix if problem.startswith('answer') else ''}"
                )
        if len(good) < len(split.dataset):
            self.skipped[split.role] = len(split.dataset) - len(good)
            split.keep_rows(good)
            if not good:
                raise LlmkitError(f"{split.origin}: every row has an answer that is not in its context")

    def _answer_problem(self, context: str, value: Any) -> str | None:
        shown = shown_value(value, limit=60)
        if not isinstance(value, dict) or not {"text", "answer_start"} <= set(value):
            return f"expected {{text: [...], answer_start: [...]}} as in SQuAD, got {shown}"
        texts, starts = value["text"], value["answer_start"]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            return f"text and answer_start must be lists of the same length, got {shown}"
        if not texts and not self.data["version_2_with_negative"]:
            return "no answer; SQuAD 2.0 style unanswerable questions need data.version_2_with_negative=true"
        for text, start in zip(texts, starts, strict=True):
            if not isinstance(text, str) or not text.strip():
                return f"answer text {text!r} is empty; give the answer's words"
            if (
                not isinstance(start, int)
                or isinstance(start, bool)
                or context[start : start + len(text)] != text
            ):
                found = context.find(text) if isinstance(text, str) else -1
                hint = f" (it occurs at {found})" if found >= 0 else " (it is not in the context)"
                return f"answer {text!r} is not at answer_start {start!r}{hint}"
        return None

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not tokenizer.is_fast:
            raise LlmkitError(
                "question answering needs a fast tokenizer (character offsets map answers to tokens); "
                "use a model folder with a tokenizer.json"
            )

    def encoding_state(self) -> dict[str, Any]:
        """Nothing derived from other splits changes the windows (skipped rows change the rows' digest)."""
        return {}

    def encode(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
        answers = self.data["answers"]
        has_answers = answers in dataset.column_names

        def encode_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            encoded = self._windows(tokenizer, batch[self.data["question"]], batch[self.data["context"]])
            rows = encoded.pop("overflow_to_sample_mapping")
            offsets = encoded.pop("offset_mapping")
            columns: dict[str, list] = {**encoded, EXAMPLE_INDEX: [], OFFSETS: []}
            if has_answers:
                columns["start_positions"], columns["end_positions"] = [], []
            context_id = _context_sequence(tokenizer)
            for window, row in enumerate(rows):
                context_offsets = _context_offsets(encoded, window, offsets[window], context_id)
                columns[EXAMPLE_INDEX].append(indices[row])
                columns[OFFSETS].append(context_offsets)
                if has_answers:
                    start, end = answer_positions(context_offsets, batch[answers][row])
                    columns["start_positions"].append(start)
                    columns["end_positions"].append(end)
            return columns

        return dataset.map(
            encode_batch,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            keep_in_memory=True,
        )

    def _windows(self, tokenizer, questions: list[str], contexts: list[str]):
        """Question + context windows (context first for a tokenizer that pads on the left, as run_qa)."""
        questions = [question.lstrip() for question in questions]  # leading spaces only waste the window
        right = tokenizer.padding_side == "right"
        return tokenizer(
            questions if right else contexts,
            contexts if right else questions,
            truncation="only_second" if right else "only_first",
            max_length=self.data["max_length"],
            stride=self.data["doc_stride"],
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )

    def encoding_metrics(self, role: str, dataset: Dataset) -> dict[str, int]:
        counts = {f"{role}_windows": len(dataset)}
        if role in self.skipped:
            counts[f"{role}_skipped_bad_answers"] = self.skipped[role]
        return counts

    def prepare_evaluation(self, role: str, split: Split, encoded: Dataset) -> Dataset:
        """Keep the windows' rows and offsets for scoring (cached or not); the Trainer gets model inputs."""
        bookkeeping = [column for column in (EXAMPLE_INDEX, OFFSETS) if column in encoded.column_names]
        trainer_rows = encoded.remove_columns(bookkeeping)
        if role != "train" and "start_positions" in encoded.column_names:
            self.evaluations[trainer_rows._fingerprint] = Evaluation(
                role,
                encoded.select_columns(bookkeeping),
                column_values(split.dataset, self.data["context"]),
                [list(answers["text"]) for answers in column_values(split.dataset, self.data["answers"])],
            )
        return trainer_rows

    def collator(self, tokenizer: PreTrainedTokenizerBase):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def describe_example(self, batch: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> list[str]:
        lines = super().describe_example(batch, tokenizer)
        if "start_positions" in batch:
            start, end = int(batch["start_positions"][0]), int(batch["end_positions"][0])
            shown = (
                tokenizer.decode(batch["input_ids"][0][start : end + 1]) if start else "(not in this window)"
            )
            lines.append(f"answer tokens {start}..{end}: {shown!r}")
        return lines

    # -- model ------------------------------------------------------------------------------------
    def peft_task_type(self) -> str | None:
        return "QUESTION_ANS"  # peft then trains and saves the new head in full

    def auto_class(self) -> type:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def loss_targets(self) -> tuple[str, ...]:
        return ("start_positions",)  # a mean over windows

    # -- evaluation ---------------------------------------------------------------------------------
    def trainer_class(self) -> type:
        """The Trainer, telling compute_metrics which split it scores (their windows differ)."""
        from transformers import Trainer

        task = self

        class QuestionAnsweringTrainer(Trainer):
            def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
                task.evaluating = eval_dataset if eval_dataset is not None else self.eval_dataset
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

        return QuestionAnsweringTrainer

    def compute_metrics(self):
        from llmkit.metrics import load_metrics

        metric = load_metrics("squad")

        def compute(eval_prediction) -> dict[str, float]:
            evaluation = self._evaluation_for(len(eval_prediction.predictions[0]))
            start_logits, end_logits = eval_prediction.predictions[:2]
            spans = self._chosen_spans(
                bookkept_windows(evaluation.bookkeeping), len(evaluation.contexts), start_logits, end_logits
            )
            return metric.compute(
                predictions=answer_texts(evaluation.contexts, spans), references=evaluation.gold
            )

        return compute

    def _evaluation_for(self, windows: int) -> Evaluation:
        evaluation = self.evaluations.get(getattr(self.evaluating, "_fingerprint", None))
        if evaluation is None:  # a split the Trainer got some other way: the one with as many windows
            evaluation = next((e for e in self.evaluations.values() if len(e.bookkeeping) == windows), None)
        if evaluation is None or len(evaluation.bookkeeping) != windows:
            raise LlmkitError(f"question answering: no evaluation split with {windows} windows was prepared")
        return evaluation

    def answers_for_rows(
        self, rows: list[dict[str, Any]], windows: Dataset, start_logits, end_logits
    ) -> tuple[list[str], list[list[str]]]:
        """Each row's best answer from its windows' logits (``windows``: ``encode(rows)``, logits in the
        windows' order), and the rows' gold answers: the evaluation's scoring, for rows at hand."""
        contexts = [row[self.data["context"]] for row in rows]
        spans = self._chosen_spans(bookkept_windows(windows), len(rows), start_logits, end_logits)
        return answer_texts(contexts, spans), [list(row[self.data["answers"]]["text"]) for row in rows]

    def _chosen_spans(
        self, windows: Iterable[tuple[int, list]], questions: int, start_logits, end_logits
    ) -> list[Span | None]:
        """Each question's answer: the best span (start + end logits) over its windows, or None when there
        is none or SQuAD 2.0's no-answer wins. ``windows`` gives each window's question and offsets, in the
        logits' order. Evaluation and ``predict`` both choose here, so predictions reproduce the scores."""
        best: dict[int, Span] = {}
        null: dict[int, float] = {}
        for window, (row, offsets) in enumerate(windows):
            span = self._best_span(start_logits[window], end_logits[window], offsets)
            null[row] = min(
                null.get(row, float("inf")), float(start_logits[window][0] + end_logits[window][0])
            )
            if span.start is not None and (row not in best or span.score > best[row].score):
                best[row] = span
        chosen: list[Span | None] = []
        for row in range(questions):
            span = best.get(row)
            abstains = span is None or self._no_answer_wins(null.get(row, float("-inf")), span)
            chosen.append(None if abstains else span)
        return chosen

    def _no_answer_wins(self, null_score: float, span: Span) -> bool:
        if not self.data["version_2_with_negative"]:
            return False
        return null_score > span.score + self.data["null_score_diff_threshold"]

    def _best_span(self, start_logits, end_logits, offsets) -> Span:
        return best_span(
            start_logits, end_logits, offsets, self.data["n_best_size"], self.data["max_answer_length"]
        )

    # -- inference ----------------------------------------------------------------------------------
    def predict(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each row's answer as evaluation chooses it (``_chosen_spans``): its text, character start and end
        in the context and its probability in its window; "", None, None and 0.0 where the model abstains
        (SQuAD 2.0's no-answer wins) or no window holds any of the context."""
        import torch

        question, context = self.data["question"], self.data["context"]
        results = []
        for first in range(0, len(rows), PREDICT_BATCH_SIZE):
            batch = rows[first : first + PREDICT_BATCH_SIZE]
            contexts = [r[context] for r in batch]
            encoded = self._windows(tokenizer, [r[question] for r in batch], contexts)
            rows_of = encoded.pop("overflow_to_sample_mapping")
            offsets = encoded.pop("offset_mapping")
            context_id = _context_sequence(tokenizer)
            spans = [_context_offsets(encoded, w, offsets[w], context_id) for w in range(len(rows_of))]
            inputs = tokenizer.pad(dict(encoded), return_tensors="pt").to(model.device)
            with torch.no_grad():
                output = model(**inputs)
            starts, ends = output.start_logits.float().cpu().numpy(), output.end_logits.float().cpu().numpy()
            chosen = self._chosen_spans(zip(rows_of, spans, strict=True), len(batch), starts, ends)
            results += [prediction(text, span) for text, span in zip(contexts, chosen, strict=True)]
        return results

    def report_samples(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        samples = []
        for row, prediction in zip(rows, self.predict(model, tokenizer, rows), strict=True):
            answer, score = prediction[PREDICTED_ANSWER], prediction[PREDICTED_SCORE]
            sample = {
                "input": row[self.data["question"]],
                "prediction": f"{answer} ({score:.2f})" if answer else "(no answer)",
            }
            gold = row.get(self.data["answers"])
            if isinstance(gold, dict) and isinstance(gold.get("text"), list):
                sample["reference"] = " | ".join(dict.fromkeys(gold["text"])) or "(no answer)"
            samples.append(sample)
        return samples


def bookkept_windows(bookkeeping: Dataset) -> Iterator[tuple[int, list]]:
    """Each window's question and offsets from an encoded split's bookkeeping, read a batch at a time."""
    for batch in bookkeeping.iter(batch_size=512):
        yield from zip(batch[EXAMPLE_INDEX], batch[OFFSETS], strict=True)


def answer_texts(contexts: list[str], spans: list[Span | None]) -> list[str]:
    """The chosen spans' texts ("" for no answer), as the SQuAD metric scores them."""
    return [
        context[span.start : span.end] if span else "" for context, span in zip(contexts, spans, strict=True)
    ]


def prediction(context: str, span: Span | None) -> dict[str, Any]:
    """A row's prediction keys for a chosen span, or for no answer."""
    if span is None:
        return {PREDICTED_ANSWER: "", PREDICTED_START: None, PREDICTED_END: None, PREDICTED_SCORE: 0.0}
    return {
        PREDICTED_ANSWER: context[span.start : span.end],
        PREDICTED_START: span.start,
        PREDICTED_END: span.end,
        PREDICTED_SCORE: round(span.probability, 6),
    }


def _context_sequence(tokenizer) -> int:
    """Which of the pair is the context: the second, or the first where the tokenizer pads on the left."""
    return 1 if tokenizer.padding_side == "right" else 0


def _context_offsets(encoded, window: int, offsets, context_id: int) -> list[tuple[int, int]]:
    """Each token's character span in the context; NO_SPAN for question and special tokens."""
    return [
        tuple(span) if sequence == context_id else NO_SPAN
        for sequence, span in zip(encoded.sequence_ids(window), offsets, strict=True)
    ]


def answer_positions(offsets: list[tuple[int, int]], answers: dict[str, list]) -> tuple[int, int]:
    """The first answer's first and last token in a window, or (0, 0) ([CLS]) when the window lacks it."""
    if not answers["text"]:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context = [index for index, span in enumerate(offsets) if tuple(span) != NO_SPAN]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end


def best_span(start_logits, end_logits, offsets, n_best: int, max_answer_length: int) -> Span:
    """The highest start + end logit span of context tokens in one window, at most ``max_answer_length``
    tokens, among the ``n_best`` best starts and ends; its probability is softmax(start) * softmax(end)
    over the window's context tokens."""
    import numpy as np

    length = len(offsets)
    start_logits = np.asarray(start_logits[:length], dtype=np.float64)
    end_logits = np.asarray(end_logits[:length], dtype=np.float64)
    in_context = np.array([tuple(span) != NO_SPAN for span in offsets])
    if not in_context.any():
        return Span(float("-inf"), None, None, 0.0)
    masked_start = np.where(in_context, start_logits, -np.inf)
    masked_end = np.where(in_context, end_logits, -np.inf)
    best, best_tokens = Span(float("-inf"), None, None, 0.0), (0, 0)
    starts = [i for i in np.argsort(masked_start)[::-1][:n_best] if in_context[i]]
    ends = [i for i in np.argsort(masked_end)[::-1][:n_best] if in_context[i]]
    for start in starts:
        for end in ends:
            if end < start or end - start + 1 > max_answer_length:
                continue
            score = float(start_logits[start] + end_logits[end])
            if score > best.score:
                best = Span(score, int(offsets[start][0]), int(offsets[end][1]), 0.0)
                best_tokens = (start, end)
    if best.start is not None:
        start_p = _softmax(masked_start)[best_tokens[0]]
        end_p = _softmax(masked_end)[best_tokens[1]]
        best.probability = float(start_p * end_p)
    return best


def _softmax(logits):
    import numpy as np

    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()
