"""Atomic output files: nothing the harness writes is ever left half-written.

Every writer goes to a temporary file in the destination directory and renames it over the target
(`os.replace` is atomic on POSIX), so an interrupted job leaves either the old file or the new one.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it to `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give results the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # lazily: the dataset CLI should not pay torch's import time

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class CsvLog:
    """A CSV file of rows keyed by `step`, rewritten atomically on every append.

    Columns are the union of the rows' keys in order of first appearance (metrics may appear late,
    e.g. synthetic-data statistics after the first epoch). Logs are small (one row per
    log/eval interval), so rewriting the file is cheap and keeps it valid at every moment.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._rows: list[dict[str, Any]] = []

    def reset(self) -> None:
        self._rows = []
        if self.path.exists():
            self.path.unlink()

    def truncate_after(self, step: int) -> None:
        """Reload the file and drop rows logged after `step` (work lost in an interruption)."""
        self._rows = [row for row in read_csv(self.path) if row["step"] <= step] if self.path.exists() else []
        self._write()

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(dict(row))
        self._write()

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def _write(self) -> None:
        columns: list[str] = []
        for row in self._rows:
            columns.extend(k for k in row if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self.path, buffer.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows with numbers parsed (int for `step`, float elsewhere, '' kept as None)."""
    with open(path, newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if value in ("", None):
                    row[key] = None
                elif key == "step":
                    row[key] = int(float(value))
                else:
                    try:
                        row[key] = float(value)
                    except ValueError:
                        row[key] = value
            rows.append(row)
        return rows
