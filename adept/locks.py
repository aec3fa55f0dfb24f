"""One writer per output: an advisory lock on a lock file beside what a command writes.

Every command that writes a run folder or a model file (train, world-model, behavior-policy,
collector train) holds `run_folder_lock` / `output_file_lock` for its whole run, so a second process started on
the same output fails at once with a message naming the holder, instead of both writing the same
files. The lock is `fcntl.flock` on the lock file, which the OS releases when the holder's process
ends in any way (exit, exception, SIGKILL, preemption): a lock file left behind by a dead process
holds no lock and never blocks. The file holds the holder's pid, host, start time and command, for
the message; a clean exit removes it. Once the lock is held, temporary files that a killed writer
left behind (atomic writes interrupted by SIGKILL) are removed, so preemptions do not fill the disk.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from adept.errors import UserError

log = logging.getLogger("adept.locks")

# File systems without flock (e.g. Lustre mounted without -o flock) answer with one of these; the
# command then runs without the lock rather than not at all, and says so.
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


class OutputLocked(UserError):
    """Another live process holds the lock of the output this command would write."""


def run_folder_lock(folder: str | os.PathLike, what: str, fix: str):
    """The lock of a run folder (train, collector train): <folder>/.lock."""
    return output_lock(Path(folder) / ".lock", what, fix, leftovers=".*.tmp")


def output_file_lock(path: str | os.PathLike, what: str, fix: str):
    """The lock of an output file and its siblings (model.pt -> model.lock, beside model.csv/.json/.ckpt)."""
    path = Path(path)
    return output_lock(path.with_suffix(".lock"), what, fix, leftovers=f".{path.stem}.*.tmp")


def read_holder(lock_path: str | os.PathLike) -> dict | None:
    """What the lock file says about its (last) holder, or None if it is missing or unreadable."""
    try:
        holder = json.loads(Path(lock_path).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process (it has not written its pid yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    command = f" running `{holder['command']}`" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {started}{command}"


@contextmanager
def output_lock(lock_path: str | os.PathLike, what: str, fix: str, leftovers: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock on `lock_path` (created with its folder) for the body of the `with`.

    Raises OutputLocked at once, naming the holder, if a live process holds it. `what` names the
    output in the message ("run folder results/runs/iql/hopper-random/seed0"), `fix` says what to do.
    Files matching the glob `leftovers` beside the lock (temporary files of atomic writes whose
    writer was killed) are removed once the lock is held: no live process can be writing them.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails here, before any work
    fd = _acquire(lock_path, what, fix)
    if leftovers:
        for stale in lock_path.parent.glob(leftovers):
            stale.unlink(missing_ok=True)
    if fd is None:
        yield lock_path
        return
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": "python " + shlex.join(sys.orig_argv[1:])}  # e.g. python -m adept train ...
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield lock_path
    finally:
        try:  # unlink while still holding the lock; _acquire detects a file unlinked under it
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


def _acquire(lock_path: Path, what: str, fix: str) -> int | None:
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLocked(f"{what} is in use by {describe_holder(read_holder(lock_path))}", lock_path,
                               fix) from None
        except OSError as err:
            os.close(fd)
            if err.errno in _UNSUPPORTED:
                log.warning("file locks are not supported on the file system of %s (%s): running without the "
                            "lock, so make sure no other process writes %s", lock_path, err.strerror, what)
                return None
            raise
        # The previous holder unlinks the file on release: if that happened between our open and our
        # flock, we hold a lock on a file nobody else will open. Lock the file that is there now.
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            return fd
        os.close(fd)
