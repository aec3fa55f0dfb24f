"""Theorem 4.4 estimates: policy TV distance, model errors, the bound C and the bundled report."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from adept.data import OfflineDataset
from adept.diagnostics import model_errors, policy_tv_distance, return_gap_bound, return_gap_report
from adept.world_model import WorldModel, WorldModelConfig
from baselines.replay import Batch

OBS_DIM, ACT_DIM = 3, 2


class ShiftedGaussianPolicy:
    """pi(a|s) = N(mean + 0.1 * s_0, std^2) per action dimension (no squashing, so TV has a closed form)."""

    def __init__(self, mean: float, std: float = 1.0, seed: int = 0):
        self.mean, self.std = mean, std
        self.generator = torch.Generator().manual_seed(seed)

    def _dist(self, obs):
        return Normal((self.mean + 0.1 * obs[:, :1]).expand(-1, ACT_DIM), self.std)

    def act(self, obs, deterministic=True):
        loc = self._dist(obs).loc
        return loc if deterministic else loc + self.std * torch.randn(loc.shape, generator=self.generator)

    def log_prob(self, obs, actions):
        return self._dist(obs).log_prob(actions).sum(-1)


def gaussian_tv(shift: float, dims: int) -> float:
    """TV(N(0, I), N(shift * 1, I)) = 2 Phi(|delta| / 2) - 1 with |delta| = shift * sqrt(dims)."""
    delta = abs(shift) * math.sqrt(dims)
    return math.erf(delta / (2 * math.sqrt(2)))


def test_policy_tv_distance_matches_the_gaussian_closed_form():
    obs = torch.randn(4000, OBS_DIM)
    for shift in (0.0, 0.3, 1.0):
        tv = policy_tv_distance(ShiftedGaussianPolicy(0.0), ShiftedGaussianPolicy(shift), obs, num_action_samples=4)
        assert tv["eps_pi"].item() == pytest.approx(gaussian_tv(shift, ACT_DIM), abs=0.01)
        assert tv["eps_pi_max"] >= tv["eps_pi"]


def test_return_gap_bound_is_eq9():
    eps_r, eps_m, eps_pi, r_max, gamma = 0.01, 0.02, 0.005, 3.0, 0.9
    expected = 2 * r_max * ((eps_r + 2 * eps_pi) / (1 - gamma) + gamma * (2 * eps_pi + eps_m) / (1 - gamma) ** 2)
    assert return_gap_bound(eps_r, eps_m, eps_pi, r_max, gamma) == pytest.approx(expected)
    assert expected == pytest.approx(2 * 3.0 * (0.2 + 0.9 * 0.03 / 0.01))
    with pytest.raises(ValueError, match="gamma"):
        return_gap_bound(0.1, 0.1, 0.1, 1.0, 1.0)


@pytest.fixture(scope="module")
def model_and_batch():
    rng = np.random.default_rng(0)
    n = 512
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act = np.clip(rng.normal(size=(n, ACT_DIM)), -1, 1).astype(np.float32)
    next_obs = (obs + 0.1 * act.sum(1, keepdims=True)).astype(np.float32)
    rewards = next_obs[:, 0].copy()
    data = OfflineDataset(observations=obs, actions=act, rewards=rewards, next_observations=next_obs,
                          terminals=np.zeros(n, bool), timeouts=np.zeros(n, bool), env="toy", dataset="synthetic",
                          source="test")
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(hidden_dim=32, depth=1, reward_hidden_dim=16,
                                                           reward_depth=1, diffusion_steps=3, time_embedding_dim=8))
    batch = Batch(*(torch.as_tensor(x, dtype=torch.float32) for x in (obs, act, rewards, next_obs, np.zeros(n))))
    return model, batch


def test_model_errors_are_weighted_mean_squared_one_step_errors(model_and_batch):
    model, batch = model_and_batch
    obs, act, rew, next_obs, _ = batch
    uniform = model_errors(model, obs, act, rew, next_obs, generator=torch.Generator().manual_seed(0))
    pred_next, pred_reward, _ = model.step(obs, act, torch.Generator().manual_seed(0))
    state_error = (model.normalize_obs(pred_next) - model.normalize_obs(next_obs)).square().mean(-1)
    reward_error = ((pred_reward - rew) / model.reward_std).square()
    torch.testing.assert_close(uniform["eps_m"], state_error.mean())
    torch.testing.assert_close(uniform["eps_r"], reward_error.mean())
    one_hot = torch.zeros(len(obs))
    one_hot[7] = 5.0  # unnormalized weights are fine
    single = model_errors(model, obs, act, rew, next_obs, one_hot, torch.Generator().manual_seed(0))
    torch.testing.assert_close(single["eps_m"], state_error[7])
    torch.testing.assert_close(single["eps_r"], reward_error[7])


def test_return_gap_report_bundles_everything_as_floats(model_and_batch):
    model, batch = model_and_batch
    policy, behavior = ShiftedGaussianPolicy(0.2, seed=1), ShiftedGaussianPolicy(0.0, seed=2)
    report = return_gap_report(model, policy, batch, gamma=0.9, horizon=4, behavior_policy=behavior,
                               previous_policy=ShiftedGaussianPolicy(0.1, seed=3),
                               generator=torch.Generator().manual_seed(0))
    expected_keys = {"eps_r", "eps_m", "eps_pi", "eps_pi_max", "r_max", "bound_C", "J_hat", "J_hat_minus_C",
                     "is_ess_fraction", "is_clipped_fraction"}
    assert set(report) == expected_keys
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.values())
    assert report["r_max"] == pytest.approx(batch.rewards.abs().max().item())
    assert report["bound_C"] == pytest.approx(return_gap_bound(report["eps_r"], report["eps_m"], report["eps_pi"],
                                                               report["r_max"], 0.9), rel=1e-5)
    assert report["J_hat_minus_C"] == pytest.approx(report["J_hat"] - report["bound_C"], rel=1e-5, abs=1e-5)
    assert report["eps_pi"] == pytest.approx(gaussian_tv(0.1, ACT_DIM), abs=0.05)
    assert 0.0 < report["is_ess_fraction"] < 1.0
    plain = return_gap_report(model, policy, batch, horizon=2)
    assert plain["eps_pi"] == 0.0 and "is_ess_fraction" not in plain
