"""Progress lines for long steps (participant graph, permutations, bootstraps, PEB leave-one-out).

Imports nothing of ours, so every layer may report progress. Lines go to the
``ptsd_bidsapp.progress`` logger at INFO (console by default, the run log always); a bar is
added when stderr is a terminal. Progress reporting never changes a result.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

LOGGER = logging.getLogger("ptsd_bidsapp.progress")


def format_elapsed(seconds: float) -> str:
    """``H:MM:SS`` of a duration in seconds."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def bar(done: int, total: int, width: int = 20) -> str:
    """A text bar such as ``[#########-----------]`` for ``done`` of ``total``."""
    filled = int(round(width * done / total)) if total else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def on_terminal() -> bool:
    """True when stderr (where log lines go) is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Ticker:
    """Report ``done`` of ``total`` items of a step at most every ``interval`` seconds, and at the end.

    Parameters
    ----------
    what : str
        Name of the step, e.g. ``"model all: permutations"``.
    total : int
        Number of items.
    interval : float
        Minimum seconds between two lines (the last item is always reported).
    logger : logging.Logger, optional
        Default ``ptsd_bidsapp.progress``.
    """

    def __init__(self, what: str, total: int, interval: float = 10.0, logger: logging.Logger | None = None):
        self.what, self.total, self.interval = what, int(total), float(interval)
        self.logger = logger or LOGGER
        self.start = self.last = time.monotonic()
        self.lines = 0

    def update(self, done: int) -> bool:
        """Note that ``done`` items are finished; return True when a line was written."""
        now = time.monotonic()
        if done < self.total and now - self.last < self.interval:
            return False
        self.last = now
        self.lines += 1
        prefix = bar(done, self.total) + " " if on_terminal() else ""
        self.logger.info("%s%s: %d/%d done, %s elapsed", prefix, self.what, done, self.total,
                         format_elapsed(now - self.start))
        return True


@contextlib.contextmanager
def still_working(what: str, interval: float = 25.0, logger: logging.Logger | None = None):
    """Write ``"<what>: still working, H:MM:SS elapsed"`` every ``interval`` seconds until the block ends.

    For a long single call that reports nothing itself (pybids indexing a large dataset, building
    the workflow graph), so that the console is never silent for longer than ``interval`` s.

    Parameters
    ----------
    what : str
        Name of the step, e.g. ``"indexing the inputs with pybids"``.
    interval : float
        Seconds between two lines.
    logger : logging.Logger, optional
        Default ``ptsd_bidsapp.progress``.
    """
    logger = logger or LOGGER
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(interval):
            logger.info("%s: still working, %s elapsed", what, format_elapsed(time.monotonic() - start))

    thread = threading.Thread(target=beat, daemon=True, name="ptsd_bidsapp-still-working")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
