"""External datasets: D4RL v2 files (exact layout, bad files, no-network errors) and the Minari conversion."""
import importlib.util
import io

import urllib.error
import urllib.request

import h5py
import numpy as np
import pytest

from adept.data import CorruptFileError, load_dataset, load_file
from adept.data.d4rl import d4rl_filename, d4rl_url
from adept.data.dataset import OfflineDataset
from adept.data.minari_source import episodes_to_arrays, minari_dataset_id


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


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
    assert d4rl_url("walker2d", "medium-replay") in message
    assert f"place it in {tmp_path}/" in message
    assert "source=generated" in message and "python -m adept datasets generate --env walker2d --dataset medium-replay" in message
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


class FakeResponse(io.BytesIO):
    """What urlopen returns, serving `body` but announcing `length` bytes."""

    def __init__(self, body: bytes, length: int):
        super().__init__(body)
        self.headers = {"Content-Length": str(length)}


def test_download_is_atomic(tmp_path, monkeypatch, d4rl_layout_file):
    body = d4rl_layout_file().read_bytes()
    requested = []

    def serve(url, timeout):
        requested.append(url)
        return FakeResponse(body[:1000], len(body))  # the connection drops early

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    with pytest.raises(FileNotFoundError, match=r"connection closed after 1000 of \d+ bytes"):
        load_dataset("hopper", "medium", data_dir=tmp_path)
    assert requested == [d4rl_url("hopper", "medium")] and list(tmp_path.iterdir()) == []

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(body, len(body)))
    data = load_dataset("hopper", "medium", data_dir=tmp_path)
    assert data.path == tmp_path / "hopper_medium-v2.hdf5" and len(data) == 100
    assert [p.name for p in tmp_path.iterdir()] == ["hopper_medium-v2.hdf5"]


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
