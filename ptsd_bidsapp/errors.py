"""Exception types and exit codes shared by every layer; imports nothing of ours.

Exit codes recommended by the BIDS App execution specification: 0 success, 1 failure,
16 input dataset failed BIDS validation, 17 unknown analysis level, 18 entity filtering
selected no files, and the BSD sysexits 64 USAGE, 65 DATAERR, 66 NOINPUT, 73 CANTCREAT,
74 IOERR. Lower layers raise :class:`InputError` carrying one of these codes;
:mod:`ptsd_bidsapp.cli` returns it as the process exit code.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SUCCESS",
    "FAILURE",
    "INVALID_BIDS",
    "UNKNOWN_LEVEL",
    "NO_MATCH",
    "USAGE",
    "DATAERR",
    "NOINPUT",
    "CANTCREAT",
    "IOERR",
    "InputError",
]

SUCCESS = 0
FAILURE = 1
INVALID_BIDS = 16
UNKNOWN_LEVEL = 17
NO_MATCH = 18
USAGE = 64
DATAERR = 65
NOINPUT = 66
CANTCREAT = 73
IOERR = 74


class InputError(Exception):
    """A missing or inconsistent input; ``path`` names the file, ``exit_code`` the BIDS App code."""

    def __init__(self, message: str, path: Path | str | None = None, exit_code: int = NOINPUT):
        self.path = Path(path) if path is not None else None
        self.exit_code = exit_code
        super().__init__(message)
