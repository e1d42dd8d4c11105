"""Run every code block of README.md and docs/ marked runnable, in order, as a new user would: CI's docs step.

A block is runnable when the line just before its opening fence is ``<!-- runnable -->`` (an HTML comment:
GitHub and the docs site show nothing). The pages are read in one order: README.md first, then the pages of
``mkdocs.yml``'s ``nav`` as listed, and all blocks run in one folder, so a block may use what an earlier one
wrote (the LoRA page predicts on the quick tour's reviews.csv). ``bash`` blocks run under
``bash -e -o pipefail``, ``python`` blocks under the Python running this script. The commands are written for
the repository root, so the blocks run in a fresh temporary folder that holds links to the repository's
``recipes/`` and ``benchmarks/``: relative paths resolve as they would there, while ``runs/`` and every file a
block writes start out absent. The folder has its own llmkit cache (``LLMKIT_CACHE``: no earlier run is "the
newest one"), the Hugging Face hub is offline (``HF_HUB_OFFLINE=1``), and this checkout's llmkit is imported
(``PYTHONPATH``). torch runs one thread a process unless ``OMP_NUM_THREADS`` says otherwise: on shared CI
cores, two threads spin waiting for each other (SmolLM2's ``llmkit generate`` took 62 CPU s with two threads,
9 with one, at load average 5). Blocks that need the network or a GPU are left unmarked.

    python .ci/docs_blocks.py                 # run them all; stops at the first failure, naming page and line
    python .ci/docs_blocks.py --list          # which blocks would run, page by page
    python .ci/docs_blocks.py docs/lora.md    # only these pages' blocks (what earlier pages write is absent)
    python .ci/docs_blocks.py --keep          # keep the temporary folder (its path is printed)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
LANGUAGES = {"bash": ["bash", "-e", "-o", "pipefail"], "python": [sys.executable]}
LINKED = ("recipes", "benchmarks")


@dataclass
class Block:
    line: int  # the opening fence's line number in the file (1-based)
    language: str
    code: str
    page: str = "README.md"  # the file, as messages name it (relative to the repository root)


def nav_pages(nav: object) -> list[str]:
    """The Markdown files of an mkdocs ``nav``, in order: an entry is a file, {title: file} or a list."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    if isinstance(nav, list):
        return [page for entry in nav for page in nav_pages(entry)]
    return []


def pages(root: Path) -> list[Path]:
    """README.md, then every page of mkdocs.yml's nav under its docs_dir (default docs/), in nav order."""
    found = [root / "README.md"] if (root / "README.md").exists() else []
    config_file = root / "mkdocs.yml"
    if config_file.exists():
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        docs = root / config.get("docs_dir", "docs")
        for page in nav_pages(config.get("nav", [])):
            if "://" in page:
                continue
            if not (docs / page).exists():
                raise SystemExit(f"mkdocs.yml: the nav names {page}, which is not in {docs}")
            found.append(docs / page)
    return found


def page_blocks(paths: list[Path], root: Path) -> list[Block]:
    """Every runnable block of the pages, page by page, each named by its path relative to ``root``."""
    blocks = []
    for path in paths:
        name = (
            path.resolve().relative_to(root.resolve()).as_posix()
            if path.resolve().is_relative_to(root.resolve())
            else str(path)
        )
        blocks += runnable_blocks(path.read_text(encoding="utf-8"), name)
    return blocks


def runnable_blocks(markdown: str, page: str = "README.md") -> list[Block]:
    """The fenced blocks right after a ``<!-- runnable -->`` line; an unknown language is an error."""
    lines = markdown.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = lines[index + 1] if index + 1 < len(lines) else ""
        language = fence.strip().removeprefix("```")
        if not fence.strip().startswith("```") or language not in LANGUAGES:
            raise SystemExit(
                f"{page} line {index + 1}: {MARKER} must be followed by a ```bash or ```python fence"
            )
        end = next(i for i in range(index + 2, len(lines)) if lines[i].strip() == "```")
        blocks.append(Block(index + 2, language, "\n".join(lines[index + 2 : end]) + "\n", page))
    return blocks


def prepare_folder(folder: Path) -> dict[str, str]:
    """Links to the repository's recipes and benchmarks, and the environment the blocks run with."""
    for name in LINKED:
        (folder / name).symlink_to(REPO / name, target_is_directory=True)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "LLMKIT_CACHE": str(folder / ".llmkit-cache"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def run_block(command: list[str], folder: Path, env: dict[str, str], timeout: int) -> int | None:
    """Run one block in its own process group, so a timeout stops what it started too; None: timed out."""
    process = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def cpu_seconds() -> float:
    """CPU time (user + system) of the finished blocks and everything they ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_blocks(blocks: list[Block], folder: Path, env: dict[str, str], timeout: int) -> int:
    """Run the blocks in order; the first that fails (or runs past ``timeout``) stops the run."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for number, block in enumerate(blocks, start=1):
        script = folder / f".block-{number}.{'sh' if block.language == 'bash' else 'py'}"
        script.write_text(block.code, encoding="utf-8")
        where = f"{block.page} line {block.line}"
        print(f"--- block {number}/{len(blocks)}: {where} ({block.language})", flush=True)
        began, cpu_began = time.perf_counter(), cpu_seconds()
        status = run_block([*LANGUAGES[block.language], str(script)], folder, env, timeout)
        if status != 0:
            why = f"ran past {timeout} s" if status is None else f"exit code {status}"
            print(
                f"docs: {where}: the {block.language} block failed ({why})",
                file=sys.stderr,
            )
            return 1
        wall, cpu = time.perf_counter() - began, cpu_seconds() - cpu_began
        print(f"--- block at {where}: ok in {wall:.1f} s ({cpu:.0f} CPU s)", flush=True)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"docs: {len(blocks)} blocks ran in {wall:.0f} s ({cpu:.0f} CPU s; load average {load}: "
        "other jobs on the machine stretch the wall time)",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "pages", nargs="*", type=Path, help="only these Markdown files (default: README.md, then the nav)"
    )
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the repository whose README.md and mkdocs.yml are read"
    )
    parser.add_argument("--list", action="store_true", help="list the runnable blocks and stop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a block may take (default 600)")
    args = parser.parse_args(argv)
    blocks = page_blocks(args.pages or pages(args.root), args.root)
    if args.list:
        for block in blocks:
            print(f"{block.page} line {block.line} ({block.language}): {block.code.splitlines()[0]}")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="llmkit-docs-"))
    try:
        return run_blocks(blocks, folder, prepare_folder(folder), args.timeout)
    finally:
        if args.keep:
            print(f"docs: the blocks ran in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
