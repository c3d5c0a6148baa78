"""Exception types and exit codes shared by every layer; imports nothing of ours.

Exit codes recommended by the BIDS App execution specification: 0 success, 1 failure,
16 input dataset failed BIDS validation, 17 unknown analysis level, 18 entity filtering
selected no files, and the BSD sysexits 64 USAGE, 65 DATAERR, 66 NOINPUT, 73 CANTCREAT,
74 IOERR. Lower layers raise :class:`InputError` carrying one of these codes;
:mod:`ptsd_bidsapp.cli` returns it as the process exit code.
"""

from __future__ import annotations

import errno
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
    "os_error_exit_code",
    "describe_os_error",
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


#: ``errno`` values meaning "this output cannot be created here" (EX_CANTCREAT): permission,
#: read-only file system, a path component that is a regular file, a name that is a folder.
_CANTCREAT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                     errno.ENAMETOOLONG}


def os_error_exit_code(err: OSError) -> int:
    """Exit code of an operating-system error: 73 (CANTCREAT) when the file cannot be created
    there (permission, read-only file system, a parent that is a regular file), 65 (DATAERR) for
    a symbolic-link loop, 74 (IOERR) otherwise (disk full, I/O error)."""
    if isinstance(err, (PermissionError, NotADirectoryError, IsADirectoryError)) or err.errno in _CANTCREAT_ERRNOS:
        return CANTCREAT
    if err.errno == errno.ELOOP:
        return DATAERR
    return IOERR


def describe_os_error(err: OSError) -> str:
    """One line naming the file and the problem of an operating-system error (no traceback)."""
    where = err.filename if err.filename is not None else "a file"
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    reason = err.strerror or str(err) or type(err).__name__
    hints = {errno.EROFS: " (the file system is mounted read-only: choose a writable output/work dir)",
             errno.ENOTDIR: " (a component of the path is a regular file, not a folder)",
             errno.ENOSPC: " (the disk is full)", errno.EACCES: " (no write permission)"}
    return f"cannot write {where}: {reason}{hints.get(err.errno, '')}"
