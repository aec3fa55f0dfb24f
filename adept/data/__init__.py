"""The dataset layer: `load_dataset(env, dataset, source)` -> OfflineDataset.

Sources: `d4rl` (official D4RL v2 files, downloaded when missing), `generated` (D4RL-recipe data made
locally with the gymnasium v4 envs, generated when missing), `minari` (optional; not comparable
with D4RL scores). See docs/notes/datasets-and-envs.md.
"""
from __future__ import annotations

import re
from pathlib import Path

from adept.data.d4rl import fetch_d4rl, load_d4rl
from adept.data.dataset import OfflineDataset
from adept.data.generated import generate, load_generated
from adept.data.hdf5 import CorruptFileError, read_d4rl_hdf5
from adept.data.schema import DATASET_NAMES, SOURCE_NAMES, check_names
from adept.envs import ENV_NAMES

__all__ = [
    "DATASET_NAMES", "SOURCE_NAMES", "CorruptFileError", "OfflineDataset",
    "fetch_d4rl", "generate", "load_dataset", "load_file",
]

_D4RL_FILENAME = re.compile(r"^(?P<env>[a-z0-9]+)_(?P<dataset>[a-z_]+)-v2\.hdf5$")


def load_dataset(env: str, dataset: str, source: str = "d4rl", *, path: str | Path | None = None,
                 data_dir: str | Path | None = None, download: bool = True, size: int | None = None,
                 seed: int = 0) -> OfflineDataset:
    """Load one offline dataset.

    path: the file to read (default: the source's own location under `data_dir`).
    data_dir: folder for d4rl files (else $D4RL_DATASET_DIR or ~/.d4rl/datasets) or generated files
        (else $ADEPT_DATA_DIR or ~/.adept/datasets).
    download: d4rl only, fetch a missing file from D4RL's server (minari: from Minari's server).
    size, seed: generated only, number of transitions (default: the recipe's, 1M for random) and the
        generator seed; they are part of the generated file's name.
    """
    check_names(env, dataset, source)
    if source == "generated":
        return load_generated(env, dataset, path=path, data_dir=data_dir, size=size, seed=seed)
    if size is not None:
        raise ValueError(f"size applies to source=generated only; source={source} datasets have a fixed size")
    if source == "d4rl":
        return load_d4rl(env, dataset, path=path, data_dir=data_dir, download=download)
    if path is not None or data_dir is not None:
        raise ValueError("source=minari reads Minari's own dataset store; path and data_dir do not apply")
    from adept.data.minari_source import load_minari

    return load_minari(env, dataset, download=download)


def load_file(path: str | Path, env: str | None = None) -> OfflineDataset:
    """Read and validate any D4RL-layout file; `env` defaults to the file's metadata or its D4RL file name."""
    path = Path(path).expanduser()
    arrays, metadata = read_d4rl_hdf5(path)
    d4rl_name = _D4RL_FILENAME.match(path.name)
    env = env or metadata.get("env") or (d4rl_name["env"] if d4rl_name else None)
    if env is None:
        raise ValueError(f"cannot tell which env {path} belongs to; pass --env (one of {list(ENV_NAMES)})")
    if metadata.get("generator") == "adept.data.generated":
        source, dataset = "generated", metadata.get("dataset", "unknown")
    elif d4rl_name:
        source, dataset = "d4rl", d4rl_name["dataset"].replace("_", "-")
    else:
        source, dataset = "file", "unknown"
    return OfflineDataset.from_arrays(arrays, env=env, dataset=dataset, source=source, metadata=metadata, path=path)
