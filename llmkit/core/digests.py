"""Content digests of files: what a cache key or a run's manifest records of the files it depends on."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_digest(files: list[Path], relative_to: Path | None = None) -> str:
    """sha256 over the names and contents of ``files`` (in name order)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(relative_to) if relative_to else Path(path.name)
        digest.update(name.as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:20]
