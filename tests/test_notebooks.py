"""Every notebook in notebooks/ runs top to bottom in a fresh kernel (a cell that errors fails the suite),
and is stored without outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import REAL_DATA_ENV, REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: The notebooks with a branch for the real data sets (without the data, a notebook writes or ships its own).
ON_REAL_DATA = [path for path in NOTEBOOKS if "SHARED / " in path.read_text(encoding="utf-8")]
#: Per-cell limit. Each notebook takes about a minute on 2 idle CPU cores; the margin is for busy ones.
CELL_TIMEOUT_S = 600


def test_every_task_has_a_notebook() -> None:
    """notebooks/<task>.ipynb for every registered task (a new task comes with its notebook)."""
    from llmkit.tasks import task_names

    missing = {"quickstart", *task_names()} - {path.stem for path in NOTEBOOKS}
    assert not missing, f"add notebooks/{sorted(missing)[0]}.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear its outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh clone: no real data sets, the notebook writes or ships its own."""
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path / "no-data"))
    run_notebook(path, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("path", ON_REAL_DATA, ids=[path.stem for path in ON_REAL_DATA])
def test_notebook_runs_on_real_data(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_data_dir: Path
) -> None:
    monkeypatch.setenv(REAL_DATA_ENV, str(real_data_dir))
    run_notebook(path, tmp_path, monkeypatch)


def run_notebook(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    # the kernel inherits this environment: this checkout's llmkit, runs in a temp folder, the test cache
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LLMKIT_NOTEBOOK_RUNS", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 3, f"{path.name} shows no plots"  # loss, learning rate, the task metric
