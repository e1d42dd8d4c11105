"""The docs step of CI (.ci/docs_blocks.py): which blocks of the README and the docs it runs, in which
order, and how a failure is reported."""

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
    assert docs_blocks.main(["--root", str(tmp_path)]) == 1  # the third block stops at `false`
    captured = capsys.readouterr()
    assert "README.md line 19: the bash block failed (exit code 1)" in captured.err
    assert "block at README.md line 13: ok" in captured.out and "never" not in captured.out


def test_the_readme_runs_first_then_the_pages_in_nav_order_in_one_folder(
    docs_blocks, tmp_path, capsys
) -> None:
    (tmp_path / "README.md").write_text("<!-- runnable -->\n```bash\necho readme > state.txt\n```\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\nnav:\n  - Home: index.md\n  - Part:\n      - b.md\n      - A page: a.md\n"
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# no blocks\n")
    (docs / "b.md").write_text(
        "# b\n\n<!-- runnable -->\n```bash\ngrep readme state.txt\necho b >> state.txt\n```\n"
    )
    (docs / "a.md").write_text(
        "# a\n\n<!-- runnable -->\n```python\nfrom pathlib import Path\n"
        "assert Path('state.txt').read_text().split() == ['readme', 'b']\n```\n\n"
        "<!-- runnable -->\n```bash\nexit 4\n```\n"
    )
    blocks = docs_blocks.page_blocks(docs_blocks.pages(tmp_path), tmp_path)
    assert [(b.page, b.line) for b in blocks] == [
        ("README.md", 2),
        ("docs/b.md", 4),
        ("docs/a.md", 4),
        ("docs/a.md", 10),
    ]
    assert docs_blocks.main(["--root", str(tmp_path)]) == 1  # state flows README -> b.md -> a.md; then exit 4
    captured = capsys.readouterr()
    assert "block at docs/a.md line 4: ok" in captured.out
    assert "docs: docs/a.md line 10: the bash block failed (exit code 4)" in captured.err
    assert docs_blocks.main(["--root", str(tmp_path), "--list"]) == 0
    assert "docs/b.md line 4 (bash): grep readme state.txt" in capsys.readouterr().out


def test_a_nav_page_that_does_not_exist_is_an_error(docs_blocks, tmp_path) -> None:
    (tmp_path / "mkdocs.yml").write_text("site_name: t\nnav:\n  - gone.md\n")
    with pytest.raises(SystemExit, match=r"the nav names gone\.md"):
        docs_blocks.pages(tmp_path)


def test_a_whole_run_reports_its_time_and_the_machine_load(docs_blocks, tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- runnable -->\n```bash\ntrue\n```\n")
    assert docs_blocks.main(["--root", str(tmp_path)]) == 0
    summary = r"docs: 1 blocks ran in \d+ s \(\d+ CPU s; load average [\d.]+, [\d.]+, [\d.]+: "
    assert re.search(summary, capsys.readouterr().out)


def test_the_readme_and_the_docs_mark_blocks_that_run_offline_from_a_fresh_folder(docs_blocks) -> None:
    blocks = docs_blocks.page_blocks(docs_blocks.pages(REPO), REPO)
    assert len(blocks) >= 12
    assert blocks[0].page == "README.md"  # the quick tour writes what later pages' blocks use
    assert {block.page for block in blocks} >= {"README.md", "docs/lora.md", "docs/evaluate.md"}
    for block in blocks:  # nothing installs or reaches for the network; nothing reads beside the checkout
        where = f"{block.page} line {block.line}"
        assert "pip install" not in block.code and "../" not in block.code, where


def test_blocks_that_use_runs_come_after_the_blocks_that_make_them(docs_blocks) -> None:
    """One folder for all pages: a run folder a block reads was written by an earlier block."""
    import re

    made: set[str] = set()
    for block in docs_blocks.page_blocks(docs_blocks.pages(REPO), REPO):
        used = set(re.findall(r"runs/[\w-]+", block.code))
        # output_dir=runs/x, "output_dir": "runs/x", or a command's --output runs/x (export)
        made_here = set(re.findall(r"(?:output_dir\W{1,4}|--output\s+)(runs/[\w-]+)", block.code))
        if re.search(r"llmkit finetune(\s*$|\s+#)", block.code, re.M):
            made_here.add("runs/classification")  # the default recipe's output_dir
        missing = used - made - made_here
        assert not missing, f"{block.page} line {block.line} reads {sorted(missing)} before a block writes it"
        made |= made_here


def test_a_block_past_its_time_is_stopped_with_what_it_started(docs_blocks, tmp_path, capsys) -> None:
    import time

    late = tmp_path / "late.txt"
    readme = tmp_path / "README.md"
    readme.write_text(f"<!-- runnable -->\n```bash\nbash -c 'sleep 3; touch {late}' &\nwait\n```\n")
    assert docs_blocks.main(["--root", str(tmp_path), "--timeout", "1"]) == 1
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
