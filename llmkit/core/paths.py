"""Where llmkit's shipped files live (a leaf module: anything may import it)."""

from __future__ import annotations

from pathlib import Path

#: The installed ``llmkit`` package folder (its source files; ``recipes/`` inside a wheel).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Small data files shipped with the package (``sample:NAME`` in a recipe; the tiny models' vocabularies).
SAMPLES_DIR = PACKAGE_DIR / "samples"


def looks_like_path(name: str) -> bool:
    """A path is anything that exists, starts like a path, or has more than one '/' (hub ids have one)."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
    )
