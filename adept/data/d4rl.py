"""The official D4RL v2 gym-mujoco hdf5 files, read with h5py (the d4rl package is not needed).

Files are looked up as `{dir}/{env}_{dataset with - -> _}-v2.hdf5` (D4RL's own names), where dir is
`data_dir`, else `$D4RL_DATASET_DIR`, else `~/.d4rl/datasets` (D4RL's default), and downloaded from
D4RL's server when missing.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from adept.data.dataset import OfflineDataset
from adept.data.hdf5 import CorruptFileError, read_d4rl_hdf5
from adept.data.schema import check_names, validate_layout
from adept.outputs import atomic_path

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{filename}"
DOWNLOAD_TIMEOUT_S = 60


def d4rl_filename(env: str, dataset: str) -> str:
    return f"{env}_{dataset.replace('-', '_')}-v2.hdf5"


def d4rl_url(env: str, dataset: str) -> str:
    return D4RL_URL.format(filename=d4rl_filename(env, dataset))


def d4rl_dir(data_dir: str | Path | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def fetch_d4rl(env: str, dataset: str, *, path: str | Path | None = None, data_dir: str | Path | None = None,
               download: bool = True) -> Path:
    """Return the local path of a D4RL file, downloading it first when missing and `download` is set."""
    check_names(env, dataset, "d4rl")
    path = Path(path).expanduser() if path is not None else d4rl_dir(data_dir) / d4rl_filename(env, dataset)
    if path.is_file():
        return path
    url = d4rl_url(env, dataset)
    if not download:
        raise FileNotFoundError(f"D4RL file {path} does not exist and download is off. {_how_to_get(env, dataset, url, path)}")
    try:
        _download(url, path)
    except (urllib.error.URLError, OSError) as err:
        raise FileNotFoundError(f"could not download {url} ({err}). {_how_to_get(env, dataset, url, path)}") from err
    return path


def load_d4rl(env: str, dataset: str, *, path: str | Path | None = None, data_dir: str | Path | None = None,
              download: bool = True) -> OfflineDataset:
    spec = check_names(env, dataset, "d4rl")
    path = fetch_d4rl(env, dataset, path=path, data_dir=data_dir, download=download)
    try:
        arrays, metadata = read_d4rl_hdf5(path, header_check=lambda arrays: validate_layout(arrays, spec, str(path)))
    except CorruptFileError as err:
        raise CorruptFileError(f"{err}. Delete it and download it again with "
                               f"`python -m adept datasets fetch --env {env} --dataset {dataset}`") from err
    return OfflineDataset.from_arrays(arrays, env=env, dataset=dataset, source="d4rl", metadata=metadata, path=path)


def _how_to_get(env: str, dataset: str, url: str, path: Path) -> str:
    return (
        f"Download {url} on a machine with internet access and place it in {path.parent}/ "
        f"(or set D4RL_DATASET_DIR to the folder that holds it). Offline alternative: use "
        f"source=generated, i.e. `python -m adept datasets generate --env {env} --dataset {dataset}`, "
        "a locally generated dataset with the D4RL recipe (its scores are not the paper's D4RL scores)."
    )


def _download(url: str, path: Path) -> None:
    """Stream `url` to a temporary file next to `path` with a progress bar, then rename it into place."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_path(path) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tmp.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
        received = tmp.stat().st_size
        if total is not None and received != total:
            raise OSError(f"connection closed after {received} of {total} bytes")
