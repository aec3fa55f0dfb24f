"""Atomic output files: nothing the harness writes is ever left half-written.

Every writer goes to a temporary file in the destination directory and renames it over the target
(`os.replace` is atomic on POSIX), so an interrupted job leaves either the old file or the new one;
a full disk raises DiskFullError and leaves the old one. `load_torch_file` reads such files back and
turns a corrupt, truncated or foreign file into a one-line error (adept.errors).
"""
from __future__ import annotations

import csv
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from adept.errors import DiskFullError, UserError, is_disk_full


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
    except Exception as err:
        if is_disk_full(err):  # the previous `path` is untouched: say so, not "errno 28"
            raise DiskFullError(f"disk full while writing {path.name}", path.parent,
                                f"free space on that file system and rerun the same command: the previous "
                                f"{path.name} is intact (a training run resumes from its last checkpoint)") from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch  # lazily: the dataset CLI should not pay torch's import time

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # Through a Python file object, so that a full disk raises OSError(ENOSPC) (torch's own file
        # writer turns it into an opaque RuntimeError); fsync so the rename never exposes a file whose
        # data is still in flight (network file systems report write errors only at flush).
        torch.save(_canonical(obj), f)
        f.flush()
        os.fsync(f.fileno())


def _canonical(obj: Any) -> Any:
    """`obj` with its containers rebuilt and its strings interned, so that its pickle depends on its
    values only, not on which objects happen to be shared: a resumed run's optimizer state, read back
    from a checkpoint, then saves to the same bytes as the uninterrupted run's."""
    import collections
    import sys

    if type(obj) is str:
        return sys.intern(obj)
    if type(obj) in (dict, collections.OrderedDict):
        copy = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        for name, value in vars(obj).items() if type(obj) is collections.OrderedDict else ():
            setattr(copy, name, _canonical(value))  # e.g. a state_dict's _metadata
        return copy
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def load_torch_file(path: str | os.PathLike, what: str, fix: str, *, fmt: str | None = None,
                    required: tuple[str, ...] = (), map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """Read back a file the harness wrote with torch.save, or raise a one-line UserError naming it.

    `what` names what the file should be ("world model saved by WorldModel.save"). A missing,
    empty, truncated or corrupt file, a file torch did not write, one holding objects no harness
    file holds, and one with another `format` tag (`fmt`) or without the `required` keys all end in
    UserError("not a <what>: <why>", path, `fix`). Torch's own message is not repeated: it advises
    loading with weights_only=False, i.e. running whatever code a foreign file holds.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file (expected a {what})" if not path.exists()
                        else f"a folder, not a file (expected a {what})", path, fix)
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise UserError(f"not a {what}: the file is empty (0 bytes)", path, fix)
    if head != _ZIP_MAGIC:
        raise UserError(f"not a {what}: not a PyTorch file", path, fix)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise UserError(f"not a {what}: it holds Python objects that no harness file holds", path, fix) from None
        raise UserError(f"not a readable {what}: the file is truncated or corrupt", path, fix) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError, ImportError) as err:
        if isinstance(err, OSError) and is_disk_full(err):
            raise
        raise UserError(f"not a readable {what}: the file is truncated or corrupt", path, fix) from None
    tag = payload.get("format") if isinstance(payload, dict) else None
    if fmt is not None and tag != fmt:
        found = f"its format tag is {tag!r}" if tag else "it has no harness format tag"
        raise UserError(f"not a {what} ({found}, expected {fmt!r})", path, fix)
    missing = [key for key in required if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise UserError(f"not a {what} (it lacks {missing})", path, fix)
    return payload


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container; the harness never writes the legacy format


def non_finite_entries(tree: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested dict/list/tuple that hold NaN or inf.

    One host read per device for the whole tree: meant for checkpoints (rare), never the hot loop.
    """
    import torch

    found: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}

    def walk(node: Any, name: str) -> None:
        if torch.is_tensor(node):
            if node.is_floating_point() or node.is_complex():
                found.setdefault(node.device, []).append((name, torch.isfinite(node).all()))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{name}.{key}" if name else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{name}[{i}]")

    walk(tree, prefix)
    bad = []
    for entries in found.values():
        finite = torch.stack([flag for _, flag in entries]).cpu().tolist()
        bad += [name for (name, _), ok in zip(entries, finite) if not ok]
    return bad


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
