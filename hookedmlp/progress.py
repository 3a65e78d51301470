"""One progress display over a whole job of unequal steps: a bar with an ETA on a terminal, else a line now and then.

Imports no torch: the ``hookedmlp`` command shows it before it imports anything heavy.
"""

import os
import sys
import time
from collections.abc import Callable
from typing import Any, Optional, TextIO

from tqdm import tqdm

__all__ = ["JobProgress"]

_BAR = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, about {remaining} left{postfix}"


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and rows (0, 0 if it does not say)."""
    try:
        return tuple(os.get_terminal_size(stream.fileno()))
    except (AttributeError, OSError, ValueError):
        return 0, 0


class JobProgress:
    """A job's progress on ``stream`` (default: stderr), shown from the moment it is made.

    ``update(done, total, what)`` moves it, ``done`` and ``total`` in any unit roughly
    proportional to time (the ETA is the average rate so far, applied to what is left);
    ``log(print)`` is ``print`` writing its lines above the bar; ``close()`` erases the bar, so
    that the job's own last line stays the last line. On a stream that is not a terminal, a
    line with the same numbers at the job's first update, then at most every ``every`` seconds,
    and at the end.

    Args:
        desc: what the job is, e.g. ``"hookedmlp reproduce"``.
        what: what it does first.
        stream: where the bar goes.
        every: seconds between status lines when ``stream`` is not a terminal.
    """

    def __init__(self, desc: str, what: str = "starting", stream: Optional[TextIO] = None, every: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.desc, self.every = desc, every
        self.start = time.monotonic()
        self.done, self.total, self.what = 0.0, 1.0, what
        self._printed_at: Optional[float] = None
        self._bar: Any = None
        if self.live:  # drawn at once; erased by close(), so a one-line error stays one line
            sized = min(_size(self.stream)) > 0  # a terminal that reports no size (some ptys): 100 x 24
            self._bar = tqdm(
                total=1.0,
                desc=desc,
                file=self.stream,
                bar_format=_BAR,
                smoothing=0,
                leave=False,
                dynamic_ncols=sized,
                ncols=None if sized else 100,
                nrows=None if sized else 24,  # tqdm hides a bar below row 0 of a 0-row screen
                delay=1e-9,  # drawn first by update() below, with what runs
            )
            self.update(0.0, 1.0, what)

    def update(self, done: float, total: float, what: Optional[str] = None) -> None:
        """``done`` of ``total`` units finished; ``what`` is running now."""
        self.done, self.total = min(float(done), float(total)), float(total)
        self.what = what if what is not None else self.what
        if self._bar is not None:
            self._bar.total, self._bar.n = self.total, self.done
            self._bar.set_postfix_str(self.what, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if self._printed_at is None or now - self._printed_at >= self.every or self.done >= self.total:
            self._printed_at = now
            print(self.status(), file=self.stream, flush=True)

    def status(self) -> str:
        """The progress in words: share done, time elapsed, time left and what is running."""
        elapsed = time.monotonic() - self.start
        left = (self.total - self.done) * elapsed / self.done if self.done > 0 else None
        return (
            f"{self.desc}: {self.done / self.total:.0%} after {tqdm.format_interval(elapsed)}, about "
            f"{tqdm.format_interval(left) if left is not None else '?'} left: {self.what}"
        )

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` writing its lines above the bar."""
        if self._bar is None:
            return log

        def write(line: str) -> None:
            with tqdm.external_write_mode(file=self.stream):
                log(line)

        return write

    def close(self) -> None:
        """Erase the bar (nothing to do without one); safe to call twice."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
