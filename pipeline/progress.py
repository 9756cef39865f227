"""Progress of long work: a live bar on a terminal, a plain line now and then in a log, nothing when quiet.

Nothing here imports MONAI or torch, so a command can report progress before either is loaded.
"""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

# Away from a terminal, a line is written each time another tenth of the work is done, and at least this often.
PLAIN_LINES = 10
PLAIN_INTERVAL_S = 30.0


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where progress goes) is a terminal, so a live bar can redraw itself."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def duration_text(seconds: float) -> str:
    """``1h 05m``, ``4m 07s``: a duration as the progress lines and the training log print it."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


class Progress:
    """Report how much of ``total`` units of work is done, as it advances.

    On a terminal: a tqdm bar with the count, the rate and the time left. Elsewhere (a log file, a pipe): one
    plain line each time another tenth of ``total`` is done or ``PLAIN_INTERVAL_S`` seconds have passed since the
    last line, e.g. ``segmenting: 40/116 slices, 1.9 slices/s, about 0m 40s left``, and one line at the end,
    ``segmenting: 116 slices in 1m 03s``. With ``quiet``, nothing. Use it as a context manager, or call
    :meth:`close` when the work ends.

    Args:
        total: the units of work to do; ``None`` when unknown (then no time left is given).
        unit: what one unit is, plural (``"slices"``).
        description: what the work is (``"segmenting"``), the start of every line.
        quiet: report nothing (nor is anything reported when ``total`` is 0).
        stream: where to write (default: stderr).
    """

    def __init__(
        self,
        total: int | None,
        unit: str,
        description: str = "progress",
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.unit, self.description = total, unit, description
        self.done = 0
        self._stream = sys.stderr if stream is None else stream
        self._quiet = quiet or total == 0  # no work, nothing to report
        self._every = math.ceil(total / PLAIN_LINES) if total else None
        self._started_at = self._last_line_at = time.monotonic()
        self._last_line_done = 0
        self._closed = False
        self._bar = None
        if not self._quiet and on_terminal(self._stream):
            self._bar = tqdm(total=total, unit=f" {unit}", desc=description, file=self._stream, dynamic_ncols=True)

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more units done, and report them."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif not self._quiet and self._line_due():
            self._write(self._running_line())

    def advance_to(self, done: int, total: int | None = None) -> None:
        """Count ``done`` units done in all, of ``total`` when it has become known (a scan's slices once it is
        read), and report them."""
        if total is not None and total != self.total:
            self.total, self._every = total, math.ceil(total / PLAIN_LINES) if total else None
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
        if done > self.done:
            self.advance(done - self.done)

    def close(self, finished: bool = True) -> None:
        """End the report: the bar is closed, or the last plain line written (not when the work did not
        ``finish``: the error that stopped it is the last word). Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif not self._quiet and self.done and finished:
            elapsed = time.monotonic() - self._started_at
            self._write(f"{self.description}: {self.done} {self.unit} in {duration_text(elapsed)}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(finished=kind is None)

    def _line_due(self) -> bool:
        if self.total is not None and self.done >= self.total:
            return False  # the closing line says it
        now = time.monotonic()
        by_count = self._every is not None and self.done - self._last_line_done >= self._every
        return by_count or now - self._last_line_at >= PLAIN_INTERVAL_S

    def _running_line(self) -> str:
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        line = f"{self.description}: {count} {self.unit}, {rate:.3g} {self.unit}/s"
        if self.total is not None and rate > 0:
            line += f", about {duration_text((self.total - self.done) / rate)} left"
        return line

    def _write(self, line: str) -> None:
        self._last_line_at, self._last_line_done = time.monotonic(), self.done
        print(line, file=self._stream, flush=True)
