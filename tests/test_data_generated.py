"""Locally generated D4RL-recipe datasets (source=generated)."""
import math

import h5py
import numpy as np
import pytest

from adept.data import CorruptFileError, generate, load_dataset, load_file
from adept.data.generated import RECIPES, collect_transitions, generated_path, get_recipe, register_recipe
from adept.data.hdf5 import array_sha256, read_d4rl_hdf5, write_d4rl_hdf5
from adept.envs import get_env_spec, make_env


@pytest.fixture(scope="module")
def halfcheetah_path(tmp_path_factory):
    return generate("halfcheetah", "random", seed=0, size=2_500, out=tmp_path_factory.mktemp("hc") / "hc.hdf5", progress=False)


def test_random_dataset_contents(tiny_random_dataset_path):
    data = load_dataset("hopper", "random", "generated", path=tiny_random_dataset_path)
    assert (len(data), data.source) == (5_000, "generated")
    assert data.actions.min() >= -1 and data.actions.max() <= 1 and data.actions.std() == pytest.approx(1 / math.sqrt(3), rel=0.02)
    np.testing.assert_array_equal(data.infos["action_log_probs"], np.float32(-3 * math.log(2)))
    assert data.terminals.sum() > 100 and not data.timeouts.any()  # random hopper falls within ~25 steps
    assert not (data.terminals & data.timeouts).any()
    meta = data.metadata
    assert meta["generator"] == "adept.data.generated" and meta["env_id"] == "Hopper-v4"
    assert (meta["seed"], meta["size"], meta["dataset"]) == (0, 5_000, "random")
    assert meta["policy"]["type"] == "uniform" and set(meta["versions"]) >= {"gymnasium", "mujoco"}
    arrays, _ = read_d4rl_hdf5(tiny_random_dataset_path)
    assert len(arrays) == 9  # 6 D4RL keys + infos/qpos, infos/qvel, infos/action_log_probs
    for key, array in arrays.items():
        group, _, name = key.rpartition("/")
        assert (meta["sha256"][group][name] if group else meta["sha256"][name]) == array_sha256(array)


def replay_from_infos(data, indices):
    """Set the simulator to infos/qpos, infos/qvel of transition t and check obs, step, reward, next obs."""
    env = make_env(data.env)
    env.reset(seed=0)
    sim = env.unwrapped
    nq = sim.model.nq
    for t in indices:
        qpos, qvel = data.infos["qpos"][t], data.infos["qvel"][t]
        sim.set_state(qpos, qvel)
        # the v4 observation layout: positions without the x coordinate, then velocities
        # (hopper and walker2d clip velocities to [-10, 10], halfcheetah does not)
        velocities = qvel if data.env == "halfcheetah" else np.clip(qvel, -10, 10)
        np.testing.assert_array_equal(data.observations[t], np.concatenate([qpos[1:], velocities]).astype(np.float32))
        assert qpos.shape == (nq,)
        next_obs, reward, terminated, _, _ = sim.step(data.actions[t])
        np.testing.assert_array_equal(data.next_observations[t], next_obs.astype(np.float32))
        assert data.rewards[t] == np.float32(reward) and data.terminals[t] == terminated


def test_infos_reproduce_observations_and_transitions(tiny_random_dataset_path, halfcheetah_path, tmp_path):
    hopper = load_dataset("hopper", "random", "generated", path=tiny_random_dataset_path)
    replay_from_infos(hopper, np.r_[np.flatnonzero(hopper.terminals)[:5], 0, 1, 777, 4_999])
    replay_from_infos(load_file(halfcheetah_path), [0, 998, 999, 1000, 2_499])
    walker = load_dataset("walker2d", "random", "generated", data_dir=tmp_path, size=300)
    replay_from_infos(walker, np.r_[0:300:37, np.flatnonzero(walker.terminals)])


def test_timeouts_cut_episodes_at_1000_steps(halfcheetah_path):
    data = load_dataset("halfcheetah", "random", "generated", path=halfcheetah_path)
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [999, 1999])
    assert not data.terminals.any()  # halfcheetah never terminates
    np.testing.assert_array_equal(data.episode_lengths(), [1000, 1000, 500])
    assert data.num_episodes == 3 and data.episode_returns().shape == (3,)


def test_next_observations_never_cross_episodes(tiny_random_dataset_path, halfcheetah_path):
    for path in (tiny_random_dataset_path, halfcheetah_path):
        data = load_file(path)
        inside = ~data.episode_ends[:-1]
        np.testing.assert_array_equal(data.next_observations[:-1][inside], data.observations[1:][inside])
        # after an episode end the next row starts from a reset state, not from next_observations[t]
        starts = data.episode_starts[1:]
        assert not np.isclose(data.next_observations[starts - 1], data.observations[starts]).all(axis=1).any()
        assert data.unflagged_boundaries.sum() == 0


def test_generation_is_deterministic_given_the_seed(tmp_path):
    def checksums(seed, name):
        path = generate("hopper", "random", seed=seed, size=400, out=tmp_path / name, progress=False)
        return read_d4rl_hdf5(path)[1]["sha256"]

    first, again, other = checksums(1, "a.hdf5"), checksums(1, "b.hdf5"), checksums(2, "c.hdf5")
    assert first == again
    assert first["observations"] != other["observations"] and first["actions"] != other["actions"]


def test_default_location_and_generate_on_first_load(tmp_path, monkeypatch):
    monkeypatch.setenv("ADEPT_DATA_DIR", str(tmp_path))
    expected = tmp_path / "generated" / "hopper-random-seed3-n200.hdf5"
    assert generated_path("hopper", "random", seed=3, size=200) == expected
    data = load_dataset("hopper", "random", "generated", size=200, seed=3)
    assert data.path == expected and expected.is_file() and len(data) == 200
    assert [p.name for p in expected.parent.iterdir()] == [expected.name]  # the temporary file was renamed
    assert load_dataset("hopper", "random", "generated", size=200, seed=3).metadata["sha256"] == data.metadata["sha256"]


def test_file_generated_for_another_env_is_rejected(halfcheetah_path):
    with pytest.raises(ValueError, match=r"generated for env 'halfcheetah', not 'walker2d'"):
        load_dataset("walker2d", "random", "generated", path=halfcheetah_path)


def test_checksum_mismatch_is_reported_as_corrupt(tmp_path):
    spec = get_env_spec("hopper")
    arrays = {"observations": np.zeros((5, spec.obs_dim), np.float32), "actions": np.zeros((5, 3), np.float32),
              "rewards": np.zeros(5, np.float32), "next_observations": np.zeros((5, spec.obs_dim), np.float32),
              "terminals": np.zeros(5, bool), "timeouts": np.zeros(5, bool)}
    path = write_d4rl_hdf5(tmp_path / "x.hdf5", arrays, {"env": "hopper", "dataset": "random"})
    with h5py.File(path, "r+") as f:
        f["rewards"][2] = 1.0
    with pytest.raises(CorruptFileError, match=r"checksum of rewards.*Delete it and generate it again.*--out"):
        load_dataset("hopper", "random", "generated", path=path)


def test_unregistered_dataset_says_what_exists(monkeypatch):
    get_recipe("random")  # import any recipe modules first, then hide medium if someone registered it
    monkeypatch.delitem(RECIPES, "medium", raising=False)
    with pytest.raises(ValueError, match=r"no generator recipe for dataset 'medium'; source=generated can make \[.*'random'"):
        load_dataset("hopper", "medium", "generated", size=10)
    with pytest.raises(ValueError, match="cannot register recipe 'expert'"):
        register_recipe("expert", lambda *args: None)
    with pytest.raises(ValueError, match="size must be a positive"):
        generate("hopper", "random", size=0)


def test_registered_recipe_is_used_with_its_metadata(tmp_path, monkeypatch):
    monkeypatch.setitem(RECIPES, "medium", RECIPES.get("medium"))  # restore whatever was there afterwards

    def still_policy(spec, size, seed, progress):
        arrays = collect_transitions(spec, lambda obs: (np.zeros(spec.act_dim), None), size or 50, seed, progress)
        return arrays, {"policy": {"type": "zero-action"}}

    register_recipe("medium", still_policy)
    data = load_dataset("hopper", "medium", "generated", data_dir=tmp_path, size=30, seed=5)
    assert data.metadata["policy"] == {"type": "zero-action"} and data.metadata["recipe"] == "medium"
    assert "action_log_probs" not in data.infos and np.all(data.actions == 0)
    assert data.path == tmp_path / "generated" / "hopper-medium-seed5-n30.hdf5"
