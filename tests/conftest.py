"""Shared fixtures: offline hub, a private llmkit cache, small data files, an in-process CLI runner, and the
real-data tier.

Two tiers: the default one needs only what the repository holds or builds (tiny models, data the tests
write). Tests that read the real data sets (SST-2, SQuAD, CoNLL-2003, ...) take the ``real_data_dir``
fixture, which puts them in the ``real_data`` tier (``pytest -m real_data`` runs it alone). Without the data
folder they are skipped, counted in one line at the end; with LLMKIT_REQUIRE_REAL_DATA=1 (CI) a real-data
test that does not run fails instead.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmkit.core.devices import usable_cores  # imports no torch: the threads are set before

pytest_plugins = ["tests.recipe_matrix_plugin"]  # the recipe x command matrix table
#: Tests that launch several processes (torch.distributed's rendezvous on one fixed port) run in one
#: pytest-xdist worker, one after another (`--dist loadgroup`, pyproject.toml): they never race for the port.
LAUNCHES_PROCESSES = pytest.mark.xdist_group("launches-processes")
#: pytest-xdist's ``-n auto`` (pyproject.toml): a worker a core, at most this many (each loads its models).
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(MAX_WORKERS, usable_cores()))


def share_cores_among_workers() -> None:
    """A pytest-xdist worker computes on its share of the cores: torch's default (every core) in each of N
    workers makes N times the threads the machine has, and they wait on each other (several times slower).
    A thread count the user set is kept. Set before any test imports torch, and inherited by subprocesses."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or "OMP_NUM_THREADS" in os.environ:
        return
    threads = str(max(1, usable_cores() // int(workers)))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


share_cores_among_workers()
os.environ["HF_HUB_OFFLINE"] = "1"  # a hub lookup must fail fast, never retry for half a minute
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
#: The folder of real data sets: LLMKIT_TEST_DATA, or shared/data beside the repository.
REAL_DATA_ENV = "LLMKIT_TEST_DATA"
DEFAULT_REAL_DATA = REPO.parent / "shared" / "data"
#: Set (not 0) in CI: a real-data test that is skipped fails, so nothing drops out silently.
REQUIRE_REAL_DATA_ENV = "LLMKIT_REQUIRE_REAL_DATA"
#: The real-data tests' status in pytest's closing line when there is no data.
REAL_DATA_SKIPPED = "real-data skipped"

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


# -- the real-data tier ------------------------------------------------------------------------------------
def real_data_folder() -> Path:
    named = os.environ.get(REAL_DATA_ENV)
    return Path(named).expanduser().resolve() if named else DEFAULT_REAL_DATA


#: Read once: the notebook tests change LLMKIT_TEST_DATA for their kernels.
REAL_DATA = real_data_folder()
REAL_DATA_REQUIRED = os.environ.get(REQUIRE_REAL_DATA_ENV, "") not in ("", "0")
NO_REAL_DATA = f"no test data at {REAL_DATA}; set {REAL_DATA_ENV}=DIR (docs/development.md)"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(REAL_DATA_ENV) and not REAL_DATA.is_dir():
        raise pytest.UsageError(f"{REAL_DATA_ENV}={os.environ[REAL_DATA_ENV]}: no such folder")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes real_data_dir is in the real_data tier (before `-m` selects by marker)."""
    for item in items:
        if "real_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_data") and not REAL_DATA.is_dir():
        pytest.skip(NO_REAL_DATA)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With LLMKIT_REQUIRE_REAL_DATA, a real-data test that was skipped (no data, a missing extra) fails."""
    report = yield
    if report.skipped and REAL_DATA_REQUIRED and item.get_closest_marker("real_data"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_REAL_DATA_ENV} is set, and this real-data test was skipped: {reason}"
    return report


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    """Real-data tests skipped for want of data get a status of their own: one summary line, not one each."""
    if report.skipped and "real_data" in report.keywords and not REAL_DATA.is_dir():
        return REAL_DATA_SKIPPED, "s", "SKIPPED (no real data)"
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter):
    yield
    skipped = len(terminalreporter.stats.get(REAL_DATA_SKIPPED, []))
    if skipped:
        terminalreporter.write_line(f"{skipped} real-data tests skipped: {NO_REAL_DATA}")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data sets (sst2/, squad/, conll2003/, ...); taking it puts a test in the real_data tier."""
    return REAL_DATA
