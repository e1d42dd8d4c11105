"""Installed library versions: what a run folder, a cache key and `llmkit env` record."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def library_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
