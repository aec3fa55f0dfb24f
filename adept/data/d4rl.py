"""The official D4RL v2 gym-mujoco hdf5 files, read with h5py (the d4rl package is not needed).

Files are looked up as `{dir}/{env}_{dataset with - -> _}-v2.hdf5` (D4RL's own names), where dir is
`data_dir`, else `$D4RL_DATASET_DIR`, else `~/.d4rl/datasets` (D4RL's default), and downloaded when
missing: from D4RL's server first, then from the mirrors (`d4rl_urls`). The bytes go to
`{name}.part` beside the target; a dropped connection is resumed with an HTTP Range request (also by
the next fetch, from what the .part file holds), and the file is renamed to its real name only once
it is complete and reads back as a valid D4RL file of its env. The data folder never holds a
partial or invalid file under a dataset's name.
"""
from __future__ import annotations

import fcntl
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from adept.data.dataset import OfflineDataset
from adept.data.hdf5 import CorruptFileError, read_d4rl_hdf5
from adept.data.schema import check_names, validate_layout, validate_values

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{filename}"
# The Internet Archive's captures of the official URLs. `id_` asks the Wayback Machine for the
# captured bytes unmodified (no archive banner or rewritten links); a partial timestamp resolves to
# the capture nearest to it. The layout check rejects anything that is not the D4RL file.
ARCHIVE_URL = "https://web.archive.org/web/2022id_/" + D4RL_URL
# More mirrors, tried after the official server and before the archive: whitespace-separated URL
# templates with {filename}, or folder URLs the file name is appended to.
MIRRORS_ENV = "ADEPT_D4RL_MIRRORS"
DOWNLOAD_TIMEOUT_S = 60   # per socket operation, not for the whole file
MAX_RESUMES = 5           # Range requests per URL after a dropped connection that made progress
RESUME_DELAY_S = 2.0      # wait before each resume (times the attempt number)
CHUNK_BYTES = 1 << 20


def d4rl_filename(env: str, dataset: str) -> str:
    return f"{env}_{dataset.replace('-', '_')}-v2.hdf5"


def d4rl_url(env: str, dataset: str) -> str:
    """The official URL of a file (D4RL's `d4rl/infos.py`)."""
    return D4RL_URL.format(filename=d4rl_filename(env, dataset))


def d4rl_urls(env: str, dataset: str) -> list[str]:
    """Where a file is downloaded from, in order: the official server, $ADEPT_D4RL_MIRRORS, the Internet Archive."""
    filename = d4rl_filename(env, dataset)
    templates = [D4RL_URL, *os.environ.get(MIRRORS_ENV, "").split(), ARCHIVE_URL]
    urls = [t.format(filename=filename) if "{filename}" in t else f"{t.rstrip('/')}/{filename}" for t in templates]
    return list(dict.fromkeys(urls))


def d4rl_dir(data_dir: str | Path | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def fetch_d4rl(env: str, dataset: str, *, path: str | Path | None = None, data_dir: str | Path | None = None,
               download: bool = True, urls: list[str] | None = None, progress: bool = True) -> Path:
    """Return the local path of a D4RL file, downloading it first when missing and `download` is set.

    `urls` replaces `d4rl_urls(env, dataset)`; each is tried in turn until one gives a valid file.
    """
    spec = check_names(env, dataset, "d4rl")
    path = Path(path).expanduser() if path is not None else d4rl_dir(data_dir) / d4rl_filename(env, dataset)
    if path.is_file():
        return path
    urls = list(urls) if urls is not None else d4rl_urls(env, dataset)
    if not download:
        raise FileNotFoundError(f"D4RL file {path} does not exist and download is off. {_how_to_get(env, dataset, urls[0], path)}")
    failures = []
    for url in urls:
        try:
            _download(url, path, spec, progress)
            return path
        except DownloadError as err:
            failures.append(f"{url} ({err})")
    raise FileNotFoundError(f"could not download {path.name} from any of its {len(urls)} URLs: {'; '.join(failures)}. "
                            f"{_how_to_get(env, dataset, urls[0], path)}")


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


class DownloadError(Exception):
    """One URL did not give a valid file; the message says why, in a few words."""


def part_path(path: Path) -> Path:
    """Where the bytes of `path` collect while it downloads."""
    return path.with_name(path.name + ".part")


def _download(url: str, path: Path, spec, progress: bool) -> None:
    """Download `url` into the .part file (resuming it), check it, then rename it to `path`."""
    part = part_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with part.open("ab") as lock:  # held for the whole download: one writer per .part file
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"another process is downloading {path.name} (it holds {part})") from None
        except OSError:  # a file system without flock: download without the lock
            locked = False
        else:
            locked = True
        try:
            _receive(url, part, progress)
        finally:
            if part.exists() and part.stat().st_size == 0:
                part.unlink()  # nothing received: leave nothing behind
        if not part.exists():
            raise DownloadError("the server sent an empty file")
        # Shared from here on: HDF5 takes a shared flock to read the file, and other downloaders
        # asking for an exclusive one are still turned away.
        if locked:
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            arrays, _ = read_d4rl_hdf5(part, header_check=lambda datasets: validate_layout(datasets, spec, "the file"))
            validate_values(arrays, "the file")
        except (CorruptFileError, ValueError) as err:
            size = part.stat().st_size
            part.unlink()  # bad bytes: the next attempt starts from zero
            reason = _short(str(err).replace(str(part), "the file"))
            raise DownloadError(f"the {size} bytes received are not a valid D4RL {spec.name} file: {reason}") from None
        os.replace(part, path)


def _receive(url: str, part: Path, progress: bool) -> None:
    """Append the rest of `url` to `part`, resuming with Range requests while the connection keeps dropping."""
    for attempt in range(MAX_RESUMES + 1):
        have = part.stat().st_size
        if attempt:
            time.sleep(RESUME_DELAY_S * attempt)
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # nothing after `have`: the .part file already holds all of it
                return
            raise DownloadError(f"HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise DownloadError(_short(getattr(err, "reason", err))) from None
        with response:
            start, total = _content_range(response, have)
            received = _stream(response, part, start, total, progress)
        if total is None or received >= total:
            return
        if received == have:  # no progress since the last attempt: give up on this URL
            break
    raise DownloadError(f"connection closed after {received} of {total} bytes, {attempt} resume(s) tried")


def _content_range(response, have: int) -> tuple[int, int | None]:
    """(offset the body starts at, size of the whole file or None) of a response to a request from `have`."""
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != have:
            raise DownloadError(f"the server answered a request from byte {have} with Content-Range "
                                f"{response.headers.get('Content-Range')!r}")
        return have, None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length")  # a 200: the whole file, from byte 0
    return 0, int(length) if length else None


def _stream(response, part: Path, start: int, total: int | None, progress: bool) -> int:
    """Write the body to `part` from byte `start`; return the size of `part` when the body ends or breaks."""
    with part.open("r+b") as out, tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5],
                                       disable=not progress, mininterval=1.0) as bar:
        out.truncate(start)
        out.seek(start)
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException):
                break  # a reset or timed-out connection: what arrived is kept and the caller resumes
            if not chunk:
                break
            out.write(chunk)  # a full disk raises here, as itself
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


def _short(err: object) -> str:
    """An exception as a few words on one line."""
    if isinstance(err, socket.timeout):
        return f"no answer within {DOWNLOAD_TIMEOUT_S} s"
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
