"""Collects the recipe x command matrix (tests/test_recipe_matrix.py) and prints it after the test run."""

from __future__ import annotations

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

    def record(self, recipe: str, column: str, status: str, reason: str = "", seconds: float = 0.0) -> None:
        if column not in COLUMNS:
            raise ValueError(f"unknown matrix column {column!r}; add it to COLUMNS")
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


MATRIX_KEY = pytest.StashKey[Matrix]()


@pytest.fixture(scope="session")
def recipe_matrix(request: pytest.FixtureRequest) -> Matrix:
    """The session's matrix: tests record their cells in it, the terminal summary prints it."""
    return request.config.stash.setdefault(MATRIX_KEY, Matrix())


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    matrix = config.stash.get(MATRIX_KEY, None)
    if matrix is None or not matrix.cells:
        return
    terminalreporter.write_sep("=", "recipe x command matrix (tests/test_recipe_matrix.py)")
    for line in matrix.table():
        terminalreporter.write_line(line)
