import warnings

import mujoco
import numpy as np
import pytest

from adept.envs import ENV_NAMES, get_env_spec, make_env, make_vector_env, normalized_score


def test_specs_match_the_envs():
    for name in ENV_NAMES:
        spec = get_env_spec(name)
        env = make_env(name)
        assert spec.gym_id.endswith("-v4")
        assert env.observation_space.shape == (spec.obs_dim,)
        assert env.action_space.shape == (spec.act_dim,)
        assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
        assert env.spec.max_episode_steps == spec.max_episode_steps == 1000


def test_d4rl_reference_scores():
    assert get_env_spec("halfcheetah").ref_min_score == -280.178953
    assert get_env_spec("hopper").ref_max_score == 3234.3
    assert get_env_spec("walker2d").ref_min_score == 1.629008
    for name in ENV_NAMES:
        spec = get_env_spec(name)
        assert normalized_score(name, spec.ref_min_score) == pytest.approx(0.0, abs=1e-12)
        assert normalized_score(name, spec.ref_max_score) == pytest.approx(100.0)
    mid = (get_env_spec("hopper").ref_min_score + 3234.3) / 2
    assert normalized_score("hopper", mid) == pytest.approx(50.0)


def test_normalized_score_on_arrays_and_floats():
    returns = np.array([-20.272305, 3234.3, 1000.0])
    scores = normalized_score("hopper", returns)
    assert isinstance(scores, np.ndarray) and scores.shape == (3,)
    np.testing.assert_allclose(scores[:2], [0.0, 100.0], atol=1e-9)
    assert isinstance(normalized_score("hopper", 1000.0), float)
    assert normalized_score("hopper", 1000.0) == pytest.approx(scores[2])


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown env 'ant'.*halfcheetah.*hopper.*walker2d"):
        get_env_spec("ant")
    with pytest.raises(ValueError, match="valid envs"):
        normalized_score("Hopper-v4", 0.0)


def test_make_env_is_quiet_and_seeded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo's default warning handler would write MUJOCO_LOG.TXT here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make_env("halfcheetah")
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    # settotalmass is deprecated in MuJoCo 4 but still applied: D4RL's half cheetah weighs 14
    assert mujoco.mj_getTotalmass(env.unwrapped.model) == pytest.approx(14.0)
    first, _ = env.reset(seed=3)
    again, _ = make_env("halfcheetah").reset(seed=3)
    np.testing.assert_array_equal(first, again)


def test_vector_env_seeds_each_copy():
    envs = make_vector_env("hopper", 3, seed=10)
    obs, _ = envs.reset(seed=[10, 11, 12])
    for i in range(3):
        single, _ = make_env("hopper").reset(seed=10 + i)
        np.testing.assert_array_equal(obs[i], single)
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env("hopper", 0)


def test_v4_dynamics_match_d4rl_collection_envs():
    # The properties that separate gym v2/v3 (D4RL's collection envs) and gymnasium v4 from v5.
    walker = make_env("walker2d").unwrapped.model
    friction = {mujoco.mj_id2name(walker, mujoco.mjtObj.mjOBJ_GEOM, i): walker.geom_friction[i, 0] for i in range(walker.ngeom)}
    assert friction["foot_geom"] == pytest.approx(0.9) and friction["foot_left_geom"] == pytest.approx(1.9)
    # hopper: the healthy reward (+1) is paid on the terminal step too
    env = make_env("hopper")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    terminated = False
    while not terminated:
        x_before = env.unwrapped.data.qpos[0]
        action = rng.uniform(-1, 1, 3)
        _, reward, terminated, _, _ = env.step(action)
    forward = (env.unwrapped.data.qpos[0] - x_before) / env.unwrapped.dt
    assert reward == pytest.approx(forward + 1.0 - 1e-3 * np.square(action).sum())
