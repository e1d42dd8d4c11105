"""The one exception type users see.

Anything the user can fix (a bad recipe, a missing file, a wrong column) is raised as
``LlmkitError`` with a one-line message that names the thing and what to do. The CLI turns
it into ``error: <message>`` on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmkitError(Exception):
    """A problem with the user's input, reported as one line (exit code 2 in the CLI)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, carrying the one line that says what was saved and how to continue.

    Still a KeyboardInterrupt (the Python API stops as on any Ctrl-C); the CLI prints its message.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def install_hint(package: str, extra: str | None = None) -> str:
    """How to install an optional package, in one phrase every "needs X" error ends with: the package
    itself, and llmkit's extra that pins it where there is one (from the clone: llmkit is not on PyPI)."""
    hint = f"`pip install {package}`"
    return f"{hint} (or llmkit's extra: `pip install -e '.[{extra}]'`)" if extra else hint


def missing_package(what: str, package: str, extra: str | None = None) -> LlmkitError:
    """The one-line error for an optional package that is not installed: what needs it and how to get it."""
    return LlmkitError(f"{what} needs the {package} package; install it with {install_hint(package, extra)}")
