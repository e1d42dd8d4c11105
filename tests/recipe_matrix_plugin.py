"""Collects the recipe x command matrix (tests/test_recipe_matrix.py) and prints it after the test run.

Each test records its cells in its own matrix, sent with the test's report (``user_properties``), so the cells
of tests run by pytest-xdist workers reach the process that prints the summary, where they are merged."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

#: The matrix's columns, in the order a recipe runs them.
COLUMNS = (
    "validate as written",
    "validate",
    "finetune",
    "infer",
    "export",
    "report",
    "evaluate",
    "sweep",
    "resume",
    "lora",
    "overwrite->lora",
    "infer lora",
    "export lora",
    "merge",
    "overwrite->full",
)
PASSED, FAILED, NOT_RUN, NOT_APPLICABLE = "pass", "FAIL", "-", "n/a"


@dataclass
class Matrix:
    """Cells (recipe, column) -> pass/FAIL/n/a/-, each failure with its one-line reason."""

    cells: dict[tuple[str, str], str] = field(default_factory=dict)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    entries: list[list] = field(default_factory=list)  # each record's arguments, as a report carries them

    def record(self, recipe: str, column: str, status: str, reason: str = "", seconds: float = 0.0) -> None:
        if column not in COLUMNS:
            raise ValueError(f"unknown matrix column {column!r}; add it to COLUMNS")
        self.entries.append([recipe, column, status, reason, seconds])
        self.cells[(recipe, column)] = status
        self.seconds[recipe] = self.seconds.get(recipe, 0.0) + seconds
        if reason:
            self.reasons[(recipe, column)] = reason

    def table(self) -> list[str]:
        recipes = sorted({recipe for recipe, _ in self.cells})
        names = [f"{recipe} [{self.labels.get(recipe, '?')}]" for recipe in recipes]
        width = max(len(name) for name in names)
        lines = [" | ".join([f"{'recipe [inference command]':<{width}}", *COLUMNS, "seconds"])]
        lines.append("-" * len(lines[0]))
        for recipe, name in zip(recipes, names, strict=True):
            cells = [f"{self.cells.get((recipe, column), NOT_RUN):<{len(column)}}" for column in COLUMNS]
            lines.append(" | ".join([f"{name:<{width}}", *cells, f"{self.seconds.get(recipe, 0):.0f}"]))
        failures = [
            f"  {recipe} / {column}: {reason}" for (recipe, column), reason in sorted(self.reasons.items())
        ]
        return lines + (["", "why each cell failed (or was not run):", *failures] if failures else [])

    def sent(self) -> dict:
        """What a test's report carries: lists and strings, which pytest-xdist sends between processes."""
        return {"entries": self.entries, "labels": self.labels}

    def merge(self, sent: dict) -> None:
        for entry in sent["entries"]:
            self.record(*entry)
        self.labels.update(sent["labels"])


MATRIX_KEY = pytest.StashKey[Matrix]()
MATRIX_PROPERTY = "recipe_matrix"


@pytest.fixture
def recipe_matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    """The test's cells, sent with its teardown report to the session's matrix, which the summary prints."""
    matrix = Matrix()
    yield matrix
    request.node.user_properties.append((MATRIX_PROPERTY, matrix.sent()))


class MatrixCollector:
    """In the process that prints the summary (the only one, or pytest-xdist's controller): merges each
    test's cells from its report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, value in report.user_properties:
            if name == MATRIX_PROPERTY:
                self.config.stash.setdefault(MATRIX_KEY, Matrix()).merge(value)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # not a pytest-xdist worker
        config.pluginmanager.register(MatrixCollector(config), "recipe-matrix-collector")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    matrix = config.stash.get(MATRIX_KEY, None)
    if matrix is None or not matrix.cells:
        return
    terminalreporter.write_sep("=", "recipe x command matrix (tests/test_recipe_matrix.py)")
    for line in matrix.table():
        terminalreporter.write_line(line)
