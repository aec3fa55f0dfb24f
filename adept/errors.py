"""The failures the harness reports as one line instead of a traceback.

Every failure caused by the input (a file, a config, a flag) or by the machine (a full disk, a
read-only folder, a run folder in use) reaches the user as

    error: <what> (<file>): <how to fix>

printed by the CLI's top level (adept.cli.main), which keeps the traceback for `--debug` or
ADEPT_DEBUG=1. Code raises `UserError(what, file, fix)` (or a subclass) where it knows the three
parts; `describe_os_error` gives an OSError from the file system the same shape.
"""
from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """A failure caused by the input or the machine, with what went wrong, the file, and the fix.

    A ValueError so that callers catching bad input the usual way (`except ValueError`) keep working.
    """

    def __init__(self, what: str, file: str | os.PathLike | None = None, fix: str | None = None):
        self.what, self.file, self.fix = what, None if file is None else str(file), fix
        super().__init__(format_error(what, self.file, fix))


class DiskFullError(UserError):
    """No space left (or quota exceeded) while writing a file; the previous version of the file is intact."""


class DivergenceError(UserError, RuntimeError):
    """Training produced NaN/inf; the message names the step, the values and whether a checkpoint exists."""


def format_error(what: str, file: str | None = None, fix: str | None = None) -> str:
    """`<what> (<file>): <fix>` on one line (newlines in the parts are folded into spaces)."""
    text = what + (f" ({file})" if file else "") + (f": {fix}" if fix else "")
    return " ".join(text.split())


# What to do about an OSError from the file system, by errno.
_OS_FIXES = {
    errno.ENOSPC: ("disk full", "free space on that file system (or choose an output folder on another one) and "
                                "rerun the same command: the previous files are intact and a training run resumes "
                                "from its last checkpoint"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota (or write elsewhere) and rerun the same "
                                          "command: the previous files are intact"),
    errno.EACCES: ("permission denied", "choose an output folder you can write (e.g. --out-dir under your home or "
                                        "scratch) or fix the folder's permissions"),
    errno.EPERM: ("operation not permitted", "choose an output folder you can write or fix its permissions"),
    errno.EROFS: ("read-only file system", "choose an output folder on a writable file system"),
    errno.EEXIST: ("a file is in the way", "the path must be a folder (or not exist yet): choose another path or "
                                           "move the file away"),
    errno.ENOTDIR: ("a parent of the path is a file, not a folder", "choose another path or move the file away"),
    errno.EISDIR: ("is a folder, not a file", "pass the path of a file"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}


def describe_os_error(err: OSError) -> str:
    """One line for an OSError raised while reading or writing a file."""
    what, fix = _OS_FIXES.get(err.errno, (err.strerror or str(err), None))
    files = " -> ".join(str(f) for f in (err.filename, getattr(err, "filename2", None)) if f is not None)
    if err.errno not in _OS_FIXES and not files:
        return format_error(str(err))
    return format_error(what, files or None, fix)


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library wrapped it (torch's zip writer raises RuntimeError)."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    return False


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
