"""Quieting the libraries' own progress bars and warnings around short, internal steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_library_progress(errors_only: bool = False) -> Iterator[None]:
    """Hide the per-step bars of datasets.map and weight loading/saving (short, and noisy in logs).

    ``errors_only`` also lowers transformers' logging to errors, for loads whose warnings llmkit
    replaces with one line of its own (a new head, a converted checkpoint).
    """
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_were_on = datasets.is_progress_bar_enabled()
    transformers_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if datasets_were_on:
            datasets.enable_progress_bars()
        if transformers_were_on:
            hf_logging.enable_progress_bar()
