"""Where llmkit's shipped files live (a leaf module: anything may import it)."""

from __future__ import annotations

from pathlib import Path

#: Small data files shipped with the package (``sample:NAME`` in a recipe; the tiny models' vocabularies).
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
