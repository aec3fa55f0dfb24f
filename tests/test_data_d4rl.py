"""External datasets: D4RL v2 files (exact layout, bad files, downloads from a local HTTP server that
misbehaves on purpose, no-network errors) and the Minari conversion."""
import http.server
import importlib.util
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request

import h5py
import numpy as np
import pytest

import adept.data.d4rl as d4rl
from adept.data import CorruptFileError, load_dataset, load_file
from adept.data.d4rl import d4rl_filename, d4rl_url, d4rl_urls, fetch_d4rl, part_path
from adept.data.dataset import OfflineDataset
from adept.data.minari_source import episodes_to_arrays, minari_dataset_id


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No internet in tests: urlopen refuses every host but this machine's loopback (the test servers)."""
    real_urlopen = urllib.request.urlopen

    def loopback_only(url, *args, **kwargs):
        full_url = url.full_url if isinstance(url, urllib.request.Request) else url
        if urllib.parse.urlsplit(full_url).hostname != "127.0.0.1":
            raise urllib.error.URLError("network disabled in tests")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", loopback_only)
    monkeypatch.setattr(d4rl, "RESUME_DELAY_S", 0.0)
    monkeypatch.delenv(d4rl.MIRRORS_ENV, raising=False)


def read_raw(path):
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in ("observations", "actions", "rewards", "next_observations",
                                             "terminals", "timeouts", "infos/qpos", "infos/qvel", "infos/action_log_probs")}


def test_reads_d4rl_v2_layout_with_metadata(d4rl_layout_file):
    path = d4rl_layout_file(env="hopper")
    raw = read_raw(path)
    data = load_dataset("hopper", "medium", "d4rl", path=path)
    assert isinstance(data, OfflineDataset) and (data.env, data.dataset, data.source) == ("hopper", "medium", "d4rl")
    assert len(data) == 100 and data.obs_dim == 11 and data.act_dim == 3
    np.testing.assert_array_equal(data.observations, raw["observations"])
    np.testing.assert_array_equal(data.next_observations, raw["next_observations"])
    assert data.observations.dtype == np.float32 and data.rewards.shape == (100,)
    assert data.terminals.dtype == bool and data.timeouts.dtype == bool
    np.testing.assert_array_equal(data.infos["action_log_probs"], raw["infos/action_log_probs"])
    assert data.infos["qpos"].shape == (100, 6) and data.infos["qvel"].shape == (100, 6)
    assert data.metadata["algorithm"] == "SAC" and data.metadata["iteration"] == 1000
    assert data.metadata["policy"]["output_distribution"] == "tanh_gaussian"
    assert data.metadata["policy"]["fc0"]["weight"].shape == (256, 11)


def test_episode_boundaries_and_returns(d4rl_layout_file):
    # synthetic episodes of 40 (timeout), 25 (terminal), 35 (cut by the end of the file) steps
    data = load_dataset("hopper", "medium", path=d4rl_layout_file())
    assert data.num_episodes == 3
    np.testing.assert_array_equal(np.flatnonzero(data.episode_ends), [39, 64, 99])
    np.testing.assert_array_equal(data.episode_lengths(), [40, 25, 35])
    assert data.timeouts[39] and data.terminals[64] and not data.terminals[39]
    expected = [data.rewards[:40].sum(), data.rewards[40:65].sum(), data.rewards[65:].sum()]
    np.testing.assert_allclose(data.episode_returns(), expected, rtol=1e-6)
    # transitions never cross an episode: s' is the file's next observation, not the next row
    assert not np.array_equal(data.next_observations[39], data.observations[40])
    assert data.unflagged_boundaries.sum() == 0


def test_unflagged_episode_boundary_is_detected(d4rl_layout_file):
    path = d4rl_layout_file(overrides={"timeouts": np.zeros(100, bool)})  # the 40-step episode loses its flag
    data = load_dataset("hopper", "medium", path=path)
    assert data.unflagged_boundaries[39] and data.num_episodes == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": ["next_observations"]}, r"missing required key\(s\) \['next_observations'\]"),
        ({"overrides": {"actions": np.zeros((100, 6), np.float32)}}, r"actions has shape \(100, 6\), expected \(100, 3\)"),
        ({"overrides": {"rewards": np.zeros(99, np.float32)}}, r"rewards has shape \(99,\)"),
        ({"overrides": {"infos/qpos": np.zeros((7, 6))}}, r"infos/qpos has shape \(7, 6\), expected 100 rows"),
        ({"overrides": {"observations": np.full((100, 11), np.nan, np.float32)}}, r"observations contains NaN"),
        ({"overrides": {"terminals": np.full(100, 2, np.int64)}}, r"terminals must hold only 0/1"),
        ({"overrides": {"actions": np.zeros((100, 3), np.int64)}}, r"actions has dtype int64, expected a float"),
    ],
)
def test_bad_layouts_are_rejected(d4rl_layout_file, change, message):
    path = d4rl_layout_file(**change)
    with pytest.raises(ValueError, match=message):
        load_dataset("hopper", "medium", path=path)


def test_file_of_another_env_is_rejected(d4rl_layout_file):
    path = d4rl_layout_file(env="halfcheetah")
    with pytest.raises(ValueError, match=r"observations has shape \(100, 17\), expected \(100, 11\).*hopper"):
        load_dataset("hopper", "medium", path=path)


def test_truncated_and_garbage_files_say_delete_and_redownload(d4rl_layout_file, tmp_path):
    good = d4rl_layout_file().read_bytes()
    truncated = tmp_path / "truncated" / d4rl_filename("hopper", "medium")
    truncated.parent.mkdir()
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage" / d4rl_filename("hopper", "medium")
    garbage.parent.mkdir()
    garbage.write_bytes(b"<html>404 not found</html>")
    for path in (truncated, garbage):
        with pytest.raises(CorruptFileError, match=r"truncated or corrupt.*Delete it and download it again.*datasets fetch"):
            load_dataset("hopper", "medium", data_dir=path.parent)


def test_missing_file_without_network_explains_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("walker2d", "medium-replay", "d4rl", data_dir=tmp_path)
    message = str(info.value)
    assert d4rl_url("walker2d", "medium-replay") == (
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/walker2d_medium_replay-v2.hdf5")
    assert all(f"{url} (network disabled in tests)" in message for url in d4rl_urls("walker2d", "medium-replay"))
    assert f"place it in {tmp_path}/" in message
    assert "source=generated" in message and "python -m adept datasets generate --env walker2d --dataset medium-replay" in message
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


class D4RLServer(http.server.ThreadingHTTPServer):
    """A local HTTP server of one file, `body`, at /<mode>/<any name>; the mode says how it misbehaves:

    ok: the file, with Range requests (206) as real servers answer them; missing: 404;
    drop: the connection closes after half the body (Content-Length announces all of it), once;
    later requests are answered as by ok; drop-always: every response stops after `drop_after` bytes;
    norange: like drop, but Range is ignored (200 and the whole file again); truncated: half the body,
    announced as complete (a server holding a truncated copy).
    `requests` logs (mode, Range header, bytes sent) per request.
    """

    def __init__(self, body: bytes):
        super().__init__(("127.0.0.1", 0), ServeD4RL)
        self.body, self.requests, self.dropped, self.drop_after = body, [], set(), 1000
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, mode: str, name: str = "hopper_medium-v2.hdf5") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}/{name}"


class ServeD4RL(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server, mode = self.server, self.path.split("/")[1]
        body, wanted = server.body, self.headers.get("Range")
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and mode != "norange" else 0
        if mode == "missing":
            self.send_error(404)
            server.requests.append((mode, wanted, 0))
            return
        if mode == "truncated":
            body = body[: len(body) // 2]
        send = body[start:]
        if mode == "drop-always" or (mode in ("drop", "norange") and mode not in server.dropped):
            server.dropped.add(mode)
            send = send[: server.drop_after if mode == "drop-always" else len(body) // 2]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(send)
        server.requests.append((mode, wanted, len(send)))

    def log_message(self, *args):
        pass


@pytest.fixture
def d4rl_server(d4rl_layout_file):
    server = D4RLServer(d4rl_layout_file().read_bytes())
    yield server
    server.shutdown()
    server.server_close()


def test_download_urls_official_first_then_mirrors(monkeypatch):
    monkeypatch.setenv(d4rl.MIRRORS_ENV, "https://a.example.org/d4rl/ https://b.example.org/get?f={filename}")
    assert d4rl_urls("hopper", "medium-replay") == [
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium_replay-v2.hdf5",
        "https://a.example.org/d4rl/hopper_medium_replay-v2.hdf5",
        "https://b.example.org/get?f=hopper_medium_replay-v2.hdf5",
        "https://web.archive.org/web/2022id_/http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/"
        "hopper_medium_replay-v2.hdf5",
    ]


def test_dead_server_then_404_then_a_working_mirror(tmp_path, monkeypatch, d4rl_server):
    # the official server is unreachable (no network), the first mirror answers 404, the second works
    monkeypatch.setenv(d4rl.MIRRORS_ENV, f"{d4rl_server.url('missing', '')} {d4rl_server.url('ok', '')}")
    data = load_dataset("hopper", "medium", data_dir=tmp_path)
    assert data.path == tmp_path / "hopper_medium-v2.hdf5" and len(data) == 100
    assert data.path.read_bytes() == d4rl_server.body
    assert d4rl_server.requests == [("missing", None, 0), ("ok", None, len(d4rl_server.body))]
    assert [p.name for p in tmp_path.iterdir()] == ["hopper_medium-v2.hdf5"]


@pytest.mark.parametrize("mode", ["drop", "norange"])
def test_dropped_connection_is_resumed(tmp_path, d4rl_server, mode):
    """The connection closes halfway; the second request asks for the rest (Range) and gets it, or,
    from a server that ignores Range, the whole file again."""
    path = fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[d4rl_server.url(mode)])
    body, half = d4rl_server.body, len(d4rl_server.body) // 2
    assert path.read_bytes() == body
    resent = len(body) if mode == "norange" else len(body) - half
    assert d4rl_server.requests == [(mode, None, half), (mode, f"bytes={half}-", resent)]
    assert [p.name for p in tmp_path.iterdir()] == ["hopper_medium-v2.hdf5"]


def test_truncated_body_is_rejected_and_leaves_nothing(tmp_path, d4rl_server):
    with pytest.raises(FileNotFoundError, match=r"truncated/hopper_medium-v2.hdf5 \(the \d+ bytes received are not a "
                                                r"valid D4RL hopper file: .*truncated or corrupt"):
        fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[d4rl_server.url("truncated")])
    assert list(tmp_path.iterdir()) == []
    path = fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[d4rl_server.url("truncated"), d4rl_server.url("ok")])
    assert path.read_bytes() == d4rl_server.body


def test_file_of_another_env_is_rejected_before_the_rename(tmp_path, d4rl_layout_file):
    server = D4RLServer(d4rl_layout_file(env="walker2d").read_bytes())
    try:
        with pytest.raises(FileNotFoundError, match=r"not a valid D4RL hopper file: the file: observations has shape "
                                                    r"\(100, 17\), expected \(100, 11\)"):
            fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[server.url("ok")])
    finally:
        server.shutdown()
        server.server_close()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_continues_in_the_next_fetch(tmp_path, monkeypatch, d4rl_server):
    monkeypatch.setattr(d4rl, "MAX_RESUMES", 1)
    with pytest.raises(FileNotFoundError, match=r"connection closed after 2000 of \d+ bytes, 1 resume\(s\) tried"):
        fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[d4rl_server.url("drop-always")])
    part = part_path(tmp_path / "hopper_medium-v2.hdf5")
    assert [p.name for p in tmp_path.iterdir()] == [part.name] and part.stat().st_size == 2000
    with pytest.raises(FileNotFoundError, match="download is off"):  # a .part file is never taken for the dataset
        load_dataset("hopper", "medium", data_dir=tmp_path, download=False)

    path = fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[d4rl_server.url("ok")], progress=False)
    assert path.read_bytes() == d4rl_server.body and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert d4rl_server.requests[-1] == ("ok", "bytes=2000-", len(d4rl_server.body) - 2000)


def test_error_names_every_url_and_why_it_failed(tmp_path, d4rl_server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hopper_medium-v2.hdf5"
    urls = [d4rl_server.url("missing"), closed, d4rl_server.url("truncated")]
    with pytest.raises(FileNotFoundError) as info:
        fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=urls)
    message = str(info.value)
    assert "\n" not in message and message.startswith("could not download hopper_medium-v2.hdf5 from any of its 3 URLs: ")
    assert f"{urls[0]} (HTTP 404 Not Found)" in message
    assert f"{urls[1]} (" in message and "refused" in message.split(urls[1], 1)[1].split(")", 1)[0]
    assert f"{urls[2]} (the " in message and "not a valid D4RL hopper file" in message
    assert f"place it in {tmp_path}/" in message and list(tmp_path.iterdir()) == []


def test_second_downloader_of_the_same_file_is_turned_away(tmp_path, d4rl_server):
    import fcntl

    part = part_path(tmp_path / "hopper_medium-v2.hdf5")
    with part.open("ab") as held:  # another process in the middle of the download
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FileNotFoundError, match=r"another process is downloading hopper_medium-v2.hdf5"):
            fetch_d4rl("hopper", "medium", data_dir=tmp_path, urls=[d4rl_server.url("ok")])
    assert d4rl_server.requests == []


def test_d4rl_dir_from_environment_and_download_off(tmp_path, monkeypatch, d4rl_layout_file):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"download is off.*hopper_medium-v2.hdf5"):
        load_dataset("hopper", "medium", download=False)
    (tmp_path / "hopper_medium-v2.hdf5").write_bytes(d4rl_layout_file().read_bytes())
    assert len(load_dataset("hopper", "medium", download=False)) == 100


def test_load_file_infers_env_and_dataset_from_d4rl_name(d4rl_layout_file):
    data = load_file(d4rl_layout_file(env="walker2d", filename="walker2d_medium_replay-v2.hdf5"))
    assert (data.env, data.dataset, data.source) == ("walker2d", "medium-replay", "d4rl")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ant", "medium"), r"unknown env 'ant'; valid envs are \['halfcheetah', 'hopper', 'walker2d'\]"),
        (("hopper", "expert"), r"unknown dataset 'expert'; valid datasets are \['random', 'medium', 'medium-replay'\]"),
        (("hopper", "medium", "hf"), r"unknown source 'hf'; valid sources are \['d4rl', 'generated', 'minari'\]"),
    ],
)
def test_unknown_names_list_the_valid_ones(args, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(*args)


def fake_minari_episode(rng, steps, terminated):
    """A dict shaped like minari.EpisodeData: T + 1 observations, T of everything else."""
    return {"id": 0, "observations": rng.normal(size=(steps + 1, 11)), "actions": rng.uniform(-1, 1, (steps, 3)),
            "rewards": rng.normal(size=steps), "terminations": np.eye(steps, dtype=bool)[-1] & terminated,
            "truncations": np.eye(steps, dtype=bool)[-1] & (not terminated), "infos": {}}


def test_minari_episodes_convert_to_the_d4rl_layout():
    rng = np.random.default_rng(0)
    episodes = [fake_minari_episode(rng, 3, terminated=True), fake_minari_episode(rng, 2, terminated=False)]
    arrays = episodes_to_arrays(episodes)
    np.testing.assert_array_equal(arrays["observations"][3:], episodes[1]["observations"][:-1].astype(np.float32))
    np.testing.assert_array_equal(arrays["next_observations"][:3], episodes[0]["observations"][1:].astype(np.float32))
    np.testing.assert_array_equal(arrays["terminals"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(arrays["timeouts"], [0, 0, 0, 0, 1])
    data = OfflineDataset.from_arrays(arrays, env="hopper", dataset="medium", source="minari")
    np.testing.assert_array_equal(np.flatnonzero(data.episode_ends), [2, 4])
    assert data.unflagged_boundaries.sum() == 0 and data.rewards.dtype == np.float32

    broken = fake_minari_episode(rng, 3, terminated=True)
    broken["observations"] = broken["observations"][:-1]
    with pytest.raises(ValueError, match="Minari episode 0: expected 4 observations"):
        episodes_to_arrays([broken])


def test_minari_ids_and_missing_package():
    assert minari_dataset_id("walker2d", "medium") == "mujoco/walker2d/medium-v0"
    with pytest.raises(ValueError, match=r"Minari has no dataset matching D4RL 'random'.*offers \['medium'\]"):
        load_dataset("hopper", "random", "minari")
    if importlib.util.find_spec("minari") is None:
        with pytest.raises(ValueError, match=r"needs the optional package minari: pip install"):
            load_dataset("hopper", "medium", "minari")
