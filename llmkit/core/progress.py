"""Progress display: quiet library bars around short steps, clear lines around long ones.

In a terminal the Trainer's tqdm bar is the training display (and datasets' bars show tokenization);
anywhere else -- CI, a log file, a notebook -- bars would flood the output, so llmkit prints a few
``llmkit: ...`` lines instead: one when a long step starts and ends, and training progress at most every
``TRAINING_LINE_SECONDS`` (every evaluation is always shown). All of it goes to stderr, main process only.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: A step shorter than this gets a single line (no "done in" line after it).
SHORT_STEP_SECONDS = 2.0
#: Outside a terminal, training progress lines are printed at most this often (evaluations always).
TRAINING_LINE_SECONDS = 10.0


def log(message: str) -> None:
    """Progress for people, on stderr so stdout stays clean for results (main process only)."""
    from llmkit.core.devices import is_main_process

    if is_main_process():
        print(f"llmkit: {message}", file=sys.stderr, flush=True)


def interactive() -> bool:
    """Is stderr a terminal? Then progress bars redraw in place; elsewhere they would flood the log."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


@contextmanager
def timed_step(message: str) -> Iterator[None]:
    """Announce a step that may take a while, and how long it took when that was long enough to matter."""
    start = time.perf_counter()
    log(f"{message} ...")
    yield
    elapsed = time.perf_counter() - start
    if elapsed >= SHORT_STEP_SECONDS:
        log(f"{message}: done in {format_seconds(elapsed)}")


def format_seconds(seconds: float) -> str:
    """'4.2 s', '3 min 05 s', '1 h 02 min' -- short and readable in a log line."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@contextmanager
def quiet_library_progress(errors_only: bool = False, keep_datasets_bars: bool = False) -> Iterator[None]:
    """Hide the per-step bars of datasets.map and weight loading/saving (short, and noisy in logs).

    ``errors_only`` also lowers transformers' logging to errors, for loads whose warnings llmkit
    replaces with one line of its own (a new head, a converted checkpoint). ``keep_datasets_bars`` leaves
    datasets' bars on (tokenizing a large split in a terminal, where a bar redraws in place).
    """
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_were_on = datasets.is_progress_bar_enabled()
    transformers_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    if not keep_datasets_bars:
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


def format_log_line(logs: dict[str, Any], step: int, max_steps: int) -> str | None:
    """One readable line for a Trainer log entry: training (loss, lr) or evaluation (every eval_ metric)."""
    if any(key.startswith("eval_") for key in logs):
        shown = [
            f"{key.removeprefix('eval_')} {_number(value)}"
            for key, value in logs.items()
            if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
        ]
        return f"eval at step {step}: " + ", ".join(shown)
    if "loss" in logs:
        parts = [f"loss {_number(logs['loss'])}"]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if "grad_norm" in logs:
            parts.append(f"grad_norm {_number(logs['grad_norm'])}")
        return f"step {step}/{max_steps}: " + ", ".join(parts)
    return None  # the final train_runtime summary: the run's own lines report it


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def log_lines_callback() -> Any:
    """A TrainerCallback that reports training as throttled stderr lines (the non-terminal display).

    It replaces transformers' PrinterCallback, which prints every log dict to stdout.
    """
    from transformers import TrainerCallback

    class LogLinesCallback(TrainerCallback):
        def __init__(self) -> None:
            self.last_line = -math.inf
            self.last_text = ""
            self.started = time.perf_counter()
            self.first_step = 0
            self.batches = 0  # of the scoring pass under way
            self.scoring_started = self.started

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.first_step = state.global_step  # a resumed run starts past 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            is_eval = any(key.startswith("eval_") for key in logs)
            now = time.perf_counter()
            last_step = state.global_step >= state.max_steps
            if not (is_eval or last_step or now - self.last_line >= TRAINING_LINE_SECONDS):
                return
            line = format_log_line(logs, state.global_step, state.max_steps)
            if line is None or line == self.last_text:  # the evaluation after training may repeat the last
                return
            self.last_text = line
            done = state.global_step - self.first_step
            if not is_eval and done > 0 and state.global_step < state.max_steps:
                per_step = (now - self.started) / done
                line += f" ({format_seconds(per_step * (state.max_steps - state.global_step))} left)"
            self.last_line = now
            print(f"llmkit: {line}", file=sys.stderr, flush=True)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            """A long scoring pass (a large validation split, `llmkit evaluate`): a throttled line."""
            if not state.is_world_process_zero:
                return
            now = time.perf_counter()
            if self.batches == 0:
                self.scoring_started = now
            self.batches += 1
            total = (
                len(eval_dataloader)
                if eval_dataloader is not None and hasattr(eval_dataloader, "__len__")
                else 0
            )
            if total and self.batches < total and now - self.last_line >= TRAINING_LINE_SECONDS:
                left = (now - self.scoring_started) / self.batches * (total - self.batches)
                print(
                    f"llmkit: scoring batch {self.batches}/{total} ({format_seconds(left)} left)",
                    file=sys.stderr,
                    flush=True,
                )
                self.last_line = now

        def on_evaluate(self, args, state, control, **kwargs):
            self.batches = 0

        def on_predict(self, args, state, control, **kwargs):
            self.batches = 0

    return LogLinesCallback()
