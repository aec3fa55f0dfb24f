import numpy as np
import pytest
import torch

from adept.envs import get_env_spec, make_env, normalized_score
from adept.evaluation import EvalResult, evaluate, random_policy, torch_policy


def linear_policy(env: str):
    """Deterministic, row-independent policy (elementwise ops only, so batch size cannot change results)."""
    spec = get_env_spec(env)
    weights = np.random.default_rng(0).normal(scale=0.5, size=(spec.obs_dim, spec.act_dim)).astype(np.float32)
    return lambda obs: np.tanh((obs[:, :, None] * weights).sum(axis=1))


def evaluate_sequentially(policy, env, n_episodes, seed):
    returns, lengths = [], []
    for i in range(n_episodes):
        single = make_env(env)
        obs, _ = single.reset(seed=seed + i)
        total, steps, done = 0.0, 0, False
        while not done:
            action = policy(obs[None].astype(np.float32))[0]
            obs, reward, terminated, truncated, _ = single.step(action)
            total += reward
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
    return np.array(returns), np.array(lengths)


@pytest.mark.parametrize(("env", "n_episodes", "num_envs"), [("hopper", 5, 2), ("hopper", 5, None), ("halfcheetah", 2, None)])
def test_vectorized_equals_sequential(env, n_episodes, num_envs):
    policy = linear_policy(env)
    result = evaluate(policy, env, n_episodes, seed=7, num_envs=num_envs)
    returns, lengths = evaluate_sequentially(policy, env, n_episodes, seed=7)
    np.testing.assert_array_equal(result.lengths, lengths)
    np.testing.assert_allclose(result.returns, returns, rtol=1e-12)
    if env == "hopper":
        assert len(set(lengths)) > 1 and lengths.max() < 1000  # episodes of different lengths: finished envs ignored
    else:
        assert np.all(lengths == 1000)  # halfcheetah only ends at the time limit


def test_eval_result_statistics():
    result = evaluate(random_policy(3, seed=0), "hopper", n_episodes=4, seed=0)
    assert isinstance(result, EvalResult) and result.returns.shape == result.lengths.shape == (4,)
    np.testing.assert_allclose(result.scores, normalized_score("hopper", result.returns))
    assert result.return_mean == pytest.approx(result.returns.mean())
    assert result.score_std == pytest.approx(result.scores.std())
    assert set(result.summary()) == {"return_mean", "return_std", "score_mean", "score_std", "episode_length_mean"}


def test_different_seeds_give_different_episodes():
    policy = linear_policy("hopper")
    first = evaluate(policy, "hopper", 3, seed=0)
    np.testing.assert_array_equal(first.returns, evaluate(policy, "hopper", 3, seed=0).returns)
    assert not np.array_equal(first.returns, evaluate(policy, "hopper", 3, seed=100).returns)


def test_random_policy_is_reproducible_and_bounded():
    obs = np.zeros((4, 11), np.float32)
    a, b = random_policy(3, seed=1)(obs), random_policy(3, seed=1)(obs)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 3) and a.dtype == np.float32 and np.abs(a).max() <= 1


def test_torch_policy_adapter():
    seen = []

    def act(obs: torch.Tensor) -> torch.Tensor:
        seen.append((obs.dtype, obs.device.type, tuple(obs.shape)))
        return torch.tanh(obs[:, :3])

    result = evaluate(torch_policy(act, "cpu"), "hopper", n_episodes=2, seed=0)
    numpy_result = evaluate(lambda obs: np.tanh(obs[:, :3]), "hopper", n_episodes=2, seed=0)
    np.testing.assert_allclose(result.returns, numpy_result.returns, rtol=1e-6)
    assert seen[0] == (torch.float32, "cpu", (2, 11)) and len(seen) == result.lengths.max()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate(random_policy(3, 0), "hopper", 0, seed=0)
    with pytest.raises(ValueError, match=r"actions of shape \(2, 6\), expected \(2, 3\)"):
        evaluate(random_policy(6, 0), "hopper", 2, seed=0)
