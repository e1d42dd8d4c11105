"""The docs: a short README, the MkDocs site (every page in the nav, a strict build), the generated references
equal to what docs/generate.py writes, and every repository path a page names present."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"
#: A repository path in a code span: `recipes/x.yaml`, `python benchmarks/x.py --steps 3`, `notebooks/x.ipynb`
REPO_PATH = re.compile(r"(?<![\w./-])((?:recipes|notebooks|benchmarks|tests|docs|\.ci)/[^\s'\"()\[\]]*)")
#: Paths that stand for several files, for files a script writes, or for one of the user's: globs, braces
#: (`benchmarks/results/gpu_check.{json,md}`), placeholders (`notebooks/<name>.ipynb`, `...-PART.md`).
NOT_A_PATH = re.compile(r"[*{}<>]|\b[A-Z]{3,}\b")


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for entry in nav for page in nav_pages(entry)]


def mkdocs_config() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))


def markdown_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_the_committed_references_are_the_generated_ones() -> None:
    generate = load("docs_generate", DOCS / "generate.py")
    pages = generate.generated()
    assert {path.name for path in pages} == {"cli.md", "recipes.md"}
    for path, text in pages.items():
        committed = path.read_text(encoding="utf-8") if path.exists() else ""
        assert committed == text, f"{path.relative_to(REPO)} is stale; {generate.STALE_HINT}"


def test_the_recipe_reference_page_has_every_task_and_the_cli_page_every_command() -> None:
    from typer.main import get_command

    from llmkit.cli import app
    from llmkit.tasks import task_names

    recipes = (DOCS / "reference" / "recipes.md").read_text(encoding="utf-8")
    for task in task_names():
        assert f"\n## {task}\n\n```yaml\n# Recipe reference for task {task}:" in recipes, task
    cli = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    for name in get_command(app).commands:
        assert f"\n## llmkit {name}\n" in cli, name


def test_generate_check_names_a_stale_page(tmp_path: Path, monkeypatch, capsys) -> None:
    generate = load("docs_generate_check", DOCS / "generate.py")
    monkeypatch.setattr(generate, "REFERENCE", tmp_path / "reference")
    monkeypatch.setattr(generate, "REPO", tmp_path)
    assert generate.main(["--check"]) == 1  # nothing written yet
    assert "reference/cli.md is stale; regenerate: python docs/generate.py" in capsys.readouterr().err
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    (tmp_path / "reference" / "recipes.md").write_text("edited by hand\n")
    assert generate.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "reference/recipes.md is stale" in err and "cli.md" not in err


def test_every_nav_entry_exists_and_every_page_is_in_the_nav() -> None:
    nav = nav_pages(mkdocs_config()["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav lists pages that do not exist: {missing}"
    unlisted = [path.relative_to(DOCS).as_posix() for path in markdown_pages()]
    unlisted = [page for page in unlisted if page not in nav]
    assert not unlisted, f"pages missing from mkdocs.yml's nav: {unlisted}"


def test_the_readme_is_short_and_starts_with_the_set_up_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move text into docs/"
    first = lines[:30]
    assert any(line.startswith("pip install ") and line.endswith("&& llmkit finetune") for line in first)
    tests = [line for line in lines if re.match(r"^pip install .*python -m pytest", line)]
    assert len(tests) == 1 and tests[0] in first  # .ci/run reads this one line


def test_the_readme_links_every_docs_page() -> None:
    readme = README.read_text(encoding="utf-8")
    for page in nav_pages(mkdocs_config()["nav"]):
        assert f"](docs/{page})" in readme, f"README.md does not link docs/{page}"


def test_every_repository_path_the_docs_name_exists() -> None:
    missing = []
    for path in [README, *markdown_pages()]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for span in re.findall(r"`([^`]+)`", line):
                for found in REPO_PATH.findall(span):
                    found = found.rstrip(".,;:")
                    if not NOT_A_PATH.search(found) and not (REPO / found).exists():
                        missing.append(f"{path.relative_to(REPO)} line {number}: {found}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def test_links_to_files_outside_docs_are_code_spans() -> None:
    """The site holds docs/ only: a link to ../recipes/x.yaml would be broken there (strict mode refuses)."""
    for path in markdown_pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(DOCS.resolve()), f"{path.relative_to(REPO)} links {target}"


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()


def test_every_bundled_recipe_has_a_row_in_the_results_table() -> None:
    """Issue 31: a bundled recipe is a promise, so each states what it reached (or that it is unmeasured)."""
    results = (DOCS / "results.md").read_text(encoding="utf-8")
    table = results.split("## Every bundled recipe against its anchor", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([\w.-]+\.yaml)`", table, flags=re.MULTILINE))
    bundled = {path.name for path in (REPO / "recipes").glob("*.yaml")}
    assert not bundled - rows, f"docs/results.md has no row for {sorted(bundled - rows)}"
    assert not rows - bundled, f"docs/results.md has rows for recipes that are gone: {sorted(rows - bundled)}"
