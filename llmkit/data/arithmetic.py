"""Arithmetic word problems with exact integer answers: a verifiable task that ships with llmkit.

GRPO (``task: grpo``) learns from rewards that check an answer, and llmkit runs offline, so it brings its own
task: short word problems of one or two operations on small numbers, each with its integer answer. The rows
are ``{prompt, answer, expression}``; the prompt asks for the result on a last line ``Answer: N``, the
format that the ``format`` reward checks and the ``answer`` reward reads.

Splits come from seeds: the training and held-out problems are drawn with different seeds, and a held-out
problem whose expression is also in the training split is drawn again, so the held-out split measures
problems the model has not been rewarded on. `llmkit data arithmetic` writes them; the sample
``sample:arithmetic/{train,test}.jsonl`` is that command's output with its defaults.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmkit.core.errors import LlmkitError

#: The line every prompt ends with: the answer format the rewards check.
ANSWER_INSTRUCTION = "Think briefly, then give the result on the last line as 'Answer: <number>'."
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kofi", "Lena")
THINGS = ("apples", "books", "marbles", "stickers", "coins", "pencils", "cookies", "stamps", "shells")
#: The seed offset of the held-out split: the test problems never come from the training seed's stream.
TEST_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, its exact answer and the expression it was built from."""

    question: str
    answer: int
    expression: str

    def row(self) -> dict[str, str | int]:
        return {
            "prompt": f"{self.question}\n{ANSWER_INSTRUCTION}",
            "answer": self.answer,
            "expression": self.expression,
        }


def _gain(rng: random.Random, top: int) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, top), rng.randint(2, top)
    question = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
    return Problem(question, a + b, f"{a} + {b}")


def _loss(rng: random.Random, top: int) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a = rng.randint(3, top + 2)
    b = rng.randint(1, a - 1)
    question = f"{name} had {a} {thing} and gave {b} away. How many {thing} does {name} have left?"
    return Problem(question, a - b, f"{a} - {b}")


def _groups(rng: random.Random, top: int) -> Problem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 9), rng.randint(2, max(3, top // 2))
    question = f"{name} has {a} boxes with {b} {thing} in each box. How many {thing} is that in total?"
    return Problem(question, a * b, f"{a} * {b}")


def _two_steps(rng: random.Random, top: int) -> Problem:
    first, second = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    a, b = rng.randint(2, top), rng.randint(2, top)
    c = rng.randint(1, a + b - 1)
    question = (
        f"{first} has {a} {thing}. {second} gives {first} {b} more, and then {first} uses {c} of them. "
        f"How many {thing} does {first} have now?"
    )
    return Problem(question, a + b - c, f"{a} + {b} - {c}")


KINDS: dict[str, Callable[[random.Random, int], Problem]] = {
    "gain": _gain,
    "loss": _loss,
    "groups": _groups,
    "two_steps": _two_steps,
}


def problems(count: int, seed: int, max_number: int = 20, avoid: set[str] | None = None) -> list[Problem]:
    """``count`` distinct problems drawn with ``seed`` (the same seed gives the same problems); a problem
    whose expression is in ``avoid`` (another split's) is drawn again."""
    if max_number < 3:
        raise LlmkitError(f"--max-number must be at least 3, got {max_number}")
    rng = random.Random(seed)
    seen = set(avoid or ())
    drawn: list[Problem] = []
    attempts = 0
    while len(drawn) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise LlmkitError(
                f"only {len(drawn)} distinct problems with numbers up to {max_number}; ask for fewer rows or "
                f"raise --max-number"
            )
        problem = KINDS[rng.choice(list(KINDS))](rng, max_number)
        if problem.expression in seen:
            continue
        seen.add(problem.expression)
        drawn.append(problem)
    return drawn


def splits(train: int, test: int, seed: int, max_number: int = 20) -> dict[str, list[Problem]]:
    """Training and held-out problems from two seeds, no expression in both."""
    if train < 1 or test < 0:
        raise LlmkitError(f"--train must be at least 1 and --test at least 0, got {train} and {test}")
    training = problems(train, seed, max_number)
    held_out = problems(test, seed + TEST_SEED_OFFSET, max_number, {p.expression for p in training})
    return {"train": training, "test": held_out}


def write_splits(out: Path, train: int, test: int, seed: int, max_number: int = 20) -> list[Path]:
    """``out/train.jsonl`` and ``out/test.jsonl`` (JSON lines: prompt, answer, expression)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for role, rows in splits(train, test, seed, max_number).items():
        path = out / f"{role}.jsonl"
        text = "".join(json.dumps(problem.row(), ensure_ascii=False) + "\n" for problem in rows)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
