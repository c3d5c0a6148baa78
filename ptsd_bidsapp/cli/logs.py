"""Console verbosity and the run log (``<output_dir>/logs/<level>-<timestamp>.log``).

Console: the app's own messages (progress, warnings, the summary) at INFO; other packages'
INFO chatter (bidsschematools, matplotlib, nipype, pybids) only with ``-v``; ``-q`` keeps
warnings and errors, ``-qq`` errors only. The run log records, whatever the console shows,
the command line, the versions of the software that computes, the hash of the resolved
configuration, the app's INFO messages and every warning (Python warnings included).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Mapping

from ptsd_bidsapp.reports.boilerplate import software_versions

APP_LOGGER = "ptsd_bidsapp"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def config_hash(config_text: str) -> str:
    """SHA-256 (hex) of the resolved configuration as saved in ``ptsd_bidsapp_config.yml``."""
    return hashlib.sha256(config_text.encode("utf-8")).hexdigest()


def console_levels(verbose: int, quiet: int) -> tuple[int, int]:
    """(app level, third-party level) of the console for ``-v``/``-q`` counts."""
    if verbose:
        return (logging.DEBUG if verbose > 1 else logging.INFO), (logging.DEBUG if verbose > 1 else logging.INFO)
    if quiet:
        return (logging.ERROR if quiet > 1 else logging.WARNING), logging.ERROR if quiet > 1 else logging.WARNING
    return logging.INFO, logging.WARNING


class _SplitLevelFilter(logging.Filter):
    """Pass the app's records from ``app_level`` and everyone else's from ``other_level``."""

    def __init__(self, app_level: int, other_level: int):
        super().__init__()
        self.app_level, self.other_level = app_level, other_level

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == APP_LOGGER or record.name.startswith(APP_LOGGER + ".")
        return record.levelno >= (self.app_level if own else self.other_level)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stderr`` is at the time of the record (not at set-up)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always follows sys.stderr
        pass


def setup_console_logging(verbose: int = 0, quiet: int = 0) -> None:
    """One stderr handler on the root logger, filtered per source (see module docstring)."""
    app_level, other_level = console_levels(verbose, quiet)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_ptsd_console", False)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_SplitLevelFilter(app_level, other_level))
    handler._ptsd_console = True
    root.addHandler(handler)
    root.setLevel(min(app_level, other_level, logging.INFO))  # INFO always reaches the run log
    logging.getLogger(APP_LOGGER).setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logging.captureWarnings(True)


class RunLog:
    """The run log of one invocation: a file handler on the root and nipype loggers.

    Parameters
    ----------
    output_dir : Path
        Output dataset root; the log is ``logs/<level>-<UTC timestamp>.log`` below it.
    level : str
        Analysis level (``participant``, ``group``), the first part of the name.
    argv : list of str
        The command line as the user typed it.
    config_text : str
        Resolved configuration (YAML as saved), hashed into the header.
    verbose : int
        With ``-v`` other packages' INFO messages enter the log too (their warnings always do).
    """

    def __init__(self, output_dir: Path, level: str, argv: list[str], config_text: str, verbose: int = 0):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = Path(output_dir) / "logs" / f"{level}-{stamp}.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.addFilter(_SplitLevelFilter(logging.DEBUG if verbose > 1 else logging.INFO,
                                                 logging.INFO if verbose else logging.WARNING))
        self.warnings = 0
        self._loggers = [logging.getLogger(), *(logging.getLogger(n) for n in
                                                ("nipype.workflow", "nipype.interface", "nipype.utils"))]
        for logger in self._loggers:
            logger.addHandler(self.handler)
        # the header goes to the log file only (the console shows the app's progress, not this)
        header = logging.getLogger(APP_LOGGER + ".runlog")
        header.propagate = False
        header.setLevel(logging.INFO)
        header.addHandler(self.handler)
        self._loggers.append(header)
        header.info("command line: %s", shlex.join(["ptsd_bidsapp", *argv]))
        header.info("working directory: %s", Path.cwd())
        header.info("software: %s", ", ".join(f"{k} {v}" for k, v in software_versions().items()))
        header.info("platform: %s", platform.platform())
        header.info("configuration sha256: %s", config_hash(config_text))

    def record(self, messages: Mapping[str, list[str]] | list[str], prefix: str = "") -> None:
        """Copy warnings gathered elsewhere (e.g. the subjects' status files) into the log."""
        logger = logging.getLogger(APP_LOGGER + ".runlog")
        items = messages.items() if isinstance(messages, Mapping) else [("", messages)]
        for key, lines in items:
            for line in lines:
                logger.warning("%s%s%s", prefix, f"{key}: " if key else "", line)

    def close(self) -> Path:
        """Detach and close the handler; return the log's path."""
        for logger in self._loggers:
            logger.removeHandler(self.handler)
        self.handler.close()
        return self.path
