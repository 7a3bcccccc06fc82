"""Plain-text progress for long loops, in a bounded number of lines.

Hand-written (no lesson generates this file). Jupyter turns each refresh of a progress bar
(tqdm.auto, tqdm.notebook) or each print() into a kernel output message, and nbval, which runs
the lessons under `make test`, loses the kernel's final "idle" message when one cell sends a few
thousand of them ("Timeout of 5 seconds exceeded waiting for output"). StepProgress therefore
prints at most `max_lines` lines however many steps the loop has, so a cell of any length sends
only a few dozen messages (tests/test_notebook_messages.py measures them in a real kernel).

    with StepProgress(len(steps), desc="train") as progress:
        for step in range(1, len(steps) + 1):
            losses = train_step()
            progress.update(step, losses)   # losses: {name: float or 0-d tensor}

prints lines such as

    train: 150/3000 (5%) | elapsed 12 s, 12.5 it/s, ETA 3 min 48 s | G_GAN 1.23 G_L1 30.1
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Mapping, TextIO

__all__ = ["StepProgress", "reporting_interval"]


def reporting_interval(total: int, max_lines: int) -> int:
    """Steps between two progress lines so that `total` steps print at most `max_lines` lines:
    ceil(total / max_lines), and never less than 1 (whatever odd total or max_lines it is given)."""
    try:
        total, max_lines = int(total), int(max_lines)
    except (TypeError, ValueError, OverflowError):
        return 1
    return max(1, -(-total // max(1, max_lines)))


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 04 min."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _number(value: Any) -> str:
    """A float or 0-d tensor (or anything float() takes) as .3g; anything else as str()."""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return str(value)


class StepProgress:
    """Reports a loop of `total` steps in at most `max_lines` lines (default 20) of plain text.

    update(step, values) is called once per step (or less often) with the 1-based number of the
    step just finished; a line is printed each time `step` crosses the next multiple of
    reporting_interval(total, max_lines), and at step == total. After a resume, the first update may
    come at any step: the count starts there (the steps before it count neither as done in this
    run's rate nor as lines). Values are only read (float(), which waits for a GPU tensor) when a
    line is printed. close(), or leaving the `with` block, prints a last line if the loop stopped
    between two lines; it is idempotent. `file=None` writes to sys.stdout as it is at each line (so
    Jupyter's and pytest's capture see it); enabled=False prints nothing.
    """

    def __init__(self, total: int, desc: str = "", max_lines: int = 20, file: TextIO | None = None,
                 enabled: bool = True):
        try:
            self.total = max(0, int(total))
        except (TypeError, ValueError, OverflowError):
            self.total = 0
        try:
            self.max_lines = max(1, int(max_lines))
        except (TypeError, ValueError, OverflowError):
            self.max_lines = 20
        self.desc = str(desc) if desc else ""
        self.file = file
        self.enabled = bool(enabled)
        self.interval = reporting_interval(self.total, self.max_lines)
        self.lines = 0  # lines printed so far
        self.closed = False
        self._start_time = time.perf_counter()
        self._start_step: int | None = None  # the step before the first update (0 unless resumed)
        self._step: int | None = None  # the last step seen
        self._values: Mapping[str, Any] | None = None
        self._bucket = 0  # step // interval at the last line
        self._reported: int | None = None  # the step of the last line
        self._done = False  # the line at total is out

    def __enter__(self) -> "StepProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, step: int, values: Mapping[str, Any] | None = None) -> None:
        """Step `step` (1-based) is done; `values` ({name: float or 0-d tensor}) go on its line."""
        if not self.enabled or self.closed:
            return
        step = int(step)
        if self._start_step is None:
            self._start_step = step - 1
            self._start_time = time.perf_counter()  # time this run from its first step
            self._bucket = max(0, step - 1) // self.interval
        self._step = step
        if values is not None:
            self._values = values
        if self._done:
            return  # past total: the final line is out already
        bucket = max(0, step) // self.interval
        if step >= self.total:
            self._done = True
            self._print(step)
        elif bucket > self._bucket:
            self._print(step)
        self._bucket = max(self._bucket, bucket)

    def close(self) -> None:
        """A last line if steps were made since the last one; then nothing more. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.enabled and self._step is not None and self._step != self._reported and not self._done:
            self._print(self._step)

    def _print(self, step: int) -> None:
        if self.lines >= self.max_lines:
            return  # never more than max_lines, even if fed steps past total
        self.lines += 1
        self._reported = step
        elapsed = time.perf_counter() - self._start_time
        done = step - (self._start_step or 0)
        if self.total > 0:
            position = f"{step}/{self.total} ({100 * step / self.total:.0f}%)"
        else:
            position = f"{step}"
        timing = [f"elapsed {_duration(elapsed)}"]
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            timing.append(f"{rate:.3g} it/s")
            if step < self.total:
                timing.append(f"ETA {_duration((self.total - step) / rate)}")
        parts = [position, ", ".join(timing)]
        if self._values:
            parts.append(" ".join(f"{name} {_number(value)}" for name, value in self._values.items()))
        line = (f"{self.desc}: " if self.desc else "") + " | ".join(parts)
        out = sys.stdout if self.file is None else self.file
        try:
            print(line, file=out, flush=True)
        except (OSError, ValueError):
            pass  # a closed or broken stream must not stop the training loop
