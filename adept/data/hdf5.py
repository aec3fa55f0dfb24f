"""Read and write the D4RL hdf5 layout.

Layout (as in D4RL's v2 gym-mujoco files): top-level datasets `observations, actions, rewards,
next_observations, terminals, timeouts`, per-transition extras under `infos/` (`qpos`, `qvel`,
`action_log_probs`) and free-form data under `metadata/` (strings, numbers and arrays, nested in
groups, e.g. `metadata/policy/fc0/weight`). Files written here add `metadata/sha256/<key>`, the
checksum of every array, which the reader verifies.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from adept.outputs import atomic_path


class CorruptFileError(ValueError):
    """The file exists but cannot be read back (truncated download, disk error, checksum mismatch)."""


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_d4rl_hdf5(path: str | Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> Path:
    """Write `arrays` (keys like "observations" or "infos/qpos") and nested `metadata` atomically.

    The file appears at `path` only once it is complete (adept.outputs.atomic_path), so an
    interrupted run never leaves a half-written dataset behind.
    """
    path = Path(path)
    checksums = {key: array_sha256(np.asarray(array)) for key, array in arrays.items()}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, array in arrays.items():
            f.create_dataset(key, data=np.asarray(array), compression="gzip")
        _write_metadata(f.require_group("metadata"), {**metadata, "sha256": checksums})
    return path


def read_d4rl_hdf5(path: str | Path, *, header_check=None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a D4RL-layout file -> (arrays keyed like "observations", "infos/qpos"; nested metadata dict).

    `header_check(datasets)` runs on the open h5py datasets before any array is read, so a file with
    the wrong layout fails fast. Unreadable files and checksum mismatches raise CorruptFileError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            arrays = {key: ds for key, ds in _datasets(f).items() if not key.startswith("metadata/")}
            if header_check is not None:
                header_check(arrays)
            arrays = {key: ds[()] for key, ds in arrays.items()}
            metadata = _read_metadata(f["metadata"]) if "metadata" in f else {}
    except OSError as err:
        raise CorruptFileError(f"{path} is not a readable HDF5 file ({err}); it is probably truncated or corrupt") from err
    expected = flatten_nested(metadata.get("sha256", {}))
    for key, digest in expected.items():
        if key in arrays and array_sha256(arrays[key]) != digest:
            raise CorruptFileError(f"{path}: checksum of {key} does not match metadata/sha256/{key}; the file is corrupt")
    return arrays, metadata


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, item) -> None:  # visititems stops at the first non-None return
        if isinstance(item, h5py.Dataset):
            found[name] = item

    f.visititems(visit)
    return found


def _write_metadata(group: h5py.Group, metadata: Mapping[str, Any]) -> None:
    for key, value in metadata.items():
        if isinstance(value, Mapping):
            _write_metadata(group.require_group(key), value)
        elif value is None:
            raise TypeError(f"metadata value for {key!r} is None; hdf5 cannot store None, leave the key out")
        else:
            # str -> variable-length UTF-8, numbers -> scalars; a/b keys create the intermediate group a
            group.create_dataset(key, data=value)


def _read_metadata(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_metadata(item)
            continue
        value = item[()]
        if isinstance(value, bytes):  # D4RL stores strings as np.bytes_, h5py returns UTF-8 strings as bytes
            value = value.decode("utf-8")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def flatten_nested(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"infos": {"qpos": x}} -> {"infos/qpos": x}."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(flatten_nested(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
