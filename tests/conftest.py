"""Shared fixtures: offline hub, a private llmkit cache, small data files, and an in-process CLI runner."""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["tests.recipe_matrix_plugin"]  # the recipe x command matrix table
os.environ["HF_HUB_OFFLINE"] = "1"  # a hub lookup must fail fast, never retry for half a minute
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

POSITIVE = [
    "a wonderful film with a great cast",
    "i loved every minute of it",
    "the food was delicious and fresh",
    "friendly staff and a lovely room",
    "brilliant, funny and moving",
    "the best concert i have seen",
    "a great read from start to finish",
    "excellent value and fast delivery",
    "the app works perfectly",
    "a charming and clever story",
]
NEGATIVE = [
    "a dull film with a weak cast",
    "i hated every minute of it",
    "the food was cold and bland",
    "rude staff and a dirty room",
    "boring, slow and pointless",
    "the worst concert i have seen",
    "a tedious read from start to finish",
    "poor value and late delivery",
    "the app crashes constantly",
    "a clumsy and predictable story",
]


@pytest.fixture(scope="session", autouse=True)
def llmkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models are built into a per-session cache, so every test run builds them fresh."""
    cache = tmp_path_factory.mktemp("llmkit-cache")
    os.environ["LLMKIT_CACHE"] = str(cache)
    return cache


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def sentiment_files(tmp_path: Path) -> tuple[Path, Path]:
    """train.csv (16 rows) and validation.csv (4 rows) with string labels."""
    rows = [[t, "positive"] for t in POSITIVE] + [[t, "negative"] for t in NEGATIVE]
    train = rows[:8] + rows[10:18]
    validation = rows[8:10] + rows[18:20]
    return (
        write_csv(tmp_path / "train.csv", ["text", "label"], train),
        write_csv(tmp_path / "validation.csv", ["text", "label"], validation),
    )


@pytest.fixture
def finetune_tiny(sentiment_files: tuple[Path, Path], tmp_path: Path):
    """``llmkit.finetune`` of the default recipe on tiny-bert and the sentiment files, into tmp_path/out."""
    import llmkit

    train, validation = sentiment_files

    def run(*overrides: str):
        return llmkit.finetune(
            None,
            [
                "model=tiny-bert",
                f"data.train={train}",
                f"data.validation={validation}",
                f"output_dir={tmp_path / 'out'}",
                *overrides,
            ],
        )

    return run


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Run the real console entry point (llmkit.cli.main) in-process and capture its exit code and output."""
    from llmkit.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["llmkit", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
