"""The docs step of CI (.ci/docs_blocks.py): which README blocks it runs, and how a failure is reported."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def docs_blocks():
    spec = importlib.util.spec_from_file_location("docs_blocks", REPO / ".ci" / "docs_blocks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_blocks"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_only_marked_blocks_run_in_order_and_a_failure_names_its_line(docs_blocks, tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n\n```bash\nexit 3\n```\n\n<!-- runnable -->\n```bash\necho one > one.txt\n```\n\n"
        "<!-- runnable -->\n```python\nfrom pathlib import Path\nassert Path('one.txt').exists()\n```\n\n"
        "<!-- runnable -->\n```bash\ntrue\nfalse\necho never\n```\n"
    )
    blocks = docs_blocks.runnable_blocks(readme.read_text())
    assert [(b.line, b.language) for b in blocks] == [(8, "bash"), (13, "python"), (19, "bash")]
    assert docs_blocks.main(["--readme", str(readme)]) == 1  # the third block stops at `false`
    captured = capsys.readouterr()
    assert "README.md line 19: the bash block failed (exit code 1)" in captured.err
    assert "block at line 13: ok" in captured.out and "never" not in captured.out


def test_a_whole_run_reports_its_time_and_the_machine_load(docs_blocks, tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- runnable -->\n```bash\ntrue\n```\n")
    assert docs_blocks.main(["--readme", str(readme)]) == 0
    summary = r"docs: 1 README blocks ran in \d+ s \(\d+ CPU s; load average [\d.]+, [\d.]+, [\d.]+: "
    assert re.search(summary, capsys.readouterr().out)


def test_the_readme_marks_blocks_that_run_offline_from_a_fresh_folder(docs_blocks) -> None:
    blocks = docs_blocks.runnable_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 12
    for block in blocks:  # nothing installs or reaches for the network; nothing reads beside the checkout
        assert "pip install" not in block.code and "../" not in block.code, block.line


def test_a_block_past_its_time_is_stopped_with_what_it_started(docs_blocks, tmp_path, capsys) -> None:
    import time

    late = tmp_path / "late.txt"
    readme = tmp_path / "README.md"
    readme.write_text(f"<!-- runnable -->\n```bash\nbash -c 'sleep 3; touch {late}' &\nwait\n```\n")
    assert docs_blocks.main(["--readme", str(readme), "--timeout", "1"]) == 1
    assert "README.md line 2: the bash block failed (ran past 1 s)" in capsys.readouterr().err
    time.sleep(3.5)
    assert not late.exists()  # the command the block started was stopped with it


def test_blocks_run_torch_on_one_thread_unless_told_otherwise(docs_blocks, tmp_path, monkeypatch) -> None:
    for name, threads, expected in (("default", None, "1"), ("told", "2", "2")):
        folder = tmp_path / name
        folder.mkdir()
        if threads is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", threads)
        assert docs_blocks.prepare_folder(folder)["OMP_NUM_THREADS"] == expected
