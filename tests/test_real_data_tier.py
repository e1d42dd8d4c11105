"""The real-data tier (tests/conftest.py): without the data its tests are skipped and counted in one line,
LLMKIT_REQUIRE_REAL_DATA turns that into failures, and the folder is shared/data beside the repository or
LLMKIT_TEST_DATA. Each case runs pytest on a copy of the conftest in a temporary "repository"."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL_DATA_ENV, REPO, REQUIRE_REAL_DATA_ENV

TESTS = """
import pytest


def test_default_tier() -> None:
    assert True


def test_reads_real_data(real_data_dir) -> None:
    assert (real_data_dir / "rows.txt").read_text() == "rows"


@pytest.mark.real_data
def test_marked_real_data() -> None:
    assert True
"""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """tmp_path/repo with this conftest, pyproject and three tests; nothing at tmp_path/shared/data yet."""
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", repo)
    shutil.copy(REPO / "tests" / "conftest.py", repo / "tests")
    (repo / "tests" / "test_tiny.py").write_text(TESTS, encoding="utf-8")
    return repo


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "rows.txt").write_text("rows", encoding="utf-8")
    return folder


def pytest_in(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in (REAL_DATA_ENV, REQUIRE_REAL_DATA_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=repo,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_data_the_real_data_tests_are_skipped_in_one_summary_line(repository: Path) -> None:
    run = pytest_in(repository)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    folder = repository.parent / "shared" / "data"
    assert lines[-2] == (
        f"2 real-data tests skipped: no test data at {folder}; set LLMKIT_TEST_DATA=DIR (docs/development.md)"
    )
    assert lines[-1].startswith("1 passed, 2 real-data skipped in ")
    assert "SKIPPED" not in run.stdout  # not one line per test


def test_required_real_data_that_is_missing_fails(repository: Path) -> None:
    run = pytest_in(repository, **{REQUIRE_REAL_DATA_ENV: "1"})
    assert run.returncode == 1
    assert "LLMKIT_REQUIRE_REAL_DATA is set, and this real-data test was skipped: no test data" in run.stdout
    assert run.stdout.strip().splitlines()[-1].startswith("1 passed, 2 errors in ")  # errors: in set-up


def test_the_data_beside_the_repository_runs_the_real_data_tests(repository: Path) -> None:
    write_data(repository.parent / "shared" / "data")
    run = pytest_in(repository, **{REQUIRE_REAL_DATA_ENV: "1"})
    assert run.returncode == 0, run.stdout
    assert run.stdout.strip().splitlines()[-1].startswith("3 passed in ")


def test_llmkit_test_data_names_the_folder_and_the_marker_selects_the_tier(
    repository: Path, tmp_path: Path
) -> None:
    data = write_data(tmp_path / "elsewhere")
    run = pytest_in(repository, "-m", "real_data", **{REAL_DATA_ENV: str(data)})
    assert run.returncode == 0, run.stdout
    # the 2 real-data tests ran, the default-tier one did not (pytest-xdist leaves "1 deselected" out)
    assert re.match(r"2 passed(, 1 deselected)? in ", run.stdout.strip().splitlines()[-1])


def test_a_named_folder_that_is_not_there_is_an_error(repository: Path, tmp_path: Path) -> None:
    run = pytest_in(repository, **{REAL_DATA_ENV: str(tmp_path / "typo")})
    assert run.returncode == 4
    assert f"{REAL_DATA_ENV}={tmp_path / 'typo'}: no such folder" in run.stderr
