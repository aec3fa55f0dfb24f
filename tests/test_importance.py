"""Importance weights pi / pi_D in log space: analytic ratios, self-normalization, clipping, ESS."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from adept.config import ConfigError, from_dict
from adept.importance import ImportanceConfig, importance_weights


def gaussian_log_ratio(a, mu_p, std_p, mu_q, std_q):
    """log N(a; mu_p, std_p) - log N(a; mu_q, std_q), written out by hand."""
    return (math.log(std_q / std_p) - (a - mu_p) ** 2 / (2 * std_p**2) + (a - mu_q) ** 2 / (2 * std_q**2))


def test_weights_equal_the_analytic_gaussian_ratio():
    actions = torch.linspace(-2.0, 2.0, 41)
    log_pi = Normal(0.3, 0.5).log_prob(actions)
    log_pi_b = Normal(-0.2, 1.0).log_prob(actions)
    raw = ImportanceConfig(max_weight=None, self_normalize=False)
    weights, stats = importance_weights(log_pi, log_pi_b, raw)
    expected = torch.exp(gaussian_log_ratio(actions, 0.3, 0.5, -0.2, 1.0))
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=0)
    assert stats["is_clipped_fraction"] == 0.0

    normalized, _ = importance_weights(log_pi, log_pi_b, ImportanceConfig(max_weight=None))
    torch.testing.assert_close(normalized, expected / expected.mean(), rtol=1e-5, atol=0)
    assert normalized.mean().item() == pytest.approx(1.0, rel=1e-6)


def test_multivariate_policies_use_the_joint_log_density():
    torch.manual_seed(0)
    actions = torch.randn(256, 3)
    log_pi = Normal(torch.tensor([0.1, 0.0, -0.3]), 0.8).log_prob(actions).sum(-1)
    log_pi_b = Normal(0.0, 1.0).log_prob(actions).sum(-1)
    weights, _ = importance_weights(log_pi, log_pi_b, ImportanceConfig(max_weight=None, self_normalize=False))
    expected = torch.exp(sum(gaussian_log_ratio(actions[:, i], m, 0.8, 0.0, 1.0)
                             for i, m in enumerate([0.1, 0.0, -0.3])))
    torch.testing.assert_close(weights, expected, rtol=1e-4, atol=0)


def test_extreme_log_ratios_stay_finite_in_log_space():
    log_pi = torch.tensor([-1000.0, -1001.0, -1002.0, -1003.0])
    weights, stats = importance_weights(log_pi, torch.zeros(4), ImportanceConfig(max_weight=None))
    assert torch.isfinite(weights).all() and weights.sum().item() == pytest.approx(4.0, rel=1e-5)
    torch.testing.assert_close(weights[1] / weights[0], torch.tensor(math.exp(-1.0)), rtol=1e-4, atol=0)
    big, _ = importance_weights(torch.tensor([900.0, 0.0]), torch.zeros(2),
                                ImportanceConfig(max_weight=10.0, self_normalize=False))
    assert big[0] == 10.0 and torch.isfinite(big).all()


def test_clipping_bounds_weights_and_counts_clipped_samples():
    log_ratio = torch.log(torch.tensor([100.0, 1.0, 1.0, 1.0, 0.001, 1.0, 1.0, 1.0]))
    config = ImportanceConfig(max_weight=2.0, min_weight=0.05)
    weights, stats = importance_weights(log_ratio, torch.zeros(8), config)
    # self-normalized first: mean of the raw ratios is ~13.4, so 100 -> 7.47 (clipped to 2), 1 -> 0.075, 0.001 -> 7.5e-5
    assert weights.max() <= 2.0 + 1e-6 and weights.min() >= 0.05 - 1e-6
    assert weights[0] == pytest.approx(2.0) and weights[4] == pytest.approx(0.05)
    assert stats["is_clipped_fraction"].item() == pytest.approx(2 / 8)
    assert stats["is_max_weight"].item() == pytest.approx(2.0)


def test_effective_sample_size_and_collapse_flag():
    weights, stats = importance_weights(torch.zeros(100), torch.zeros(100))
    assert stats["is_ess"].item() == pytest.approx(100.0) and stats["is_collapsed"] == 0.0
    dominated = torch.full((100,), -50.0)
    dominated[0] = 0.0
    _, stats = importance_weights(dominated, torch.zeros(100),
                                  ImportanceConfig(max_weight=None, collapse_ess_fraction=0.05))
    assert stats["is_ess"].item() == pytest.approx(1.0, rel=1e-4)
    assert stats["is_ess_fraction"].item() == pytest.approx(0.01, rel=1e-4) and stats["is_collapsed"] == 1.0



def test_clip_bounds_the_effective_sample_size_from_below():
    """With weights <= c: ESS = N mean(w)^2 / mean(w^2) >= N mean(w) / c."""
    log_ratio = 3.0 * torch.randn(4096, generator=torch.Generator().manual_seed(0))
    unclipped, loose = importance_weights(log_ratio, torch.zeros(4096), ImportanceConfig(max_weight=None))
    clipped, tight = importance_weights(log_ratio, torch.zeros(4096), ImportanceConfig(max_weight=10.0))
    assert loose["is_ess_fraction"] < 0.01  # heavy-tailed ratios collapse without a clip
    assert tight["is_ess_fraction"] >= clipped.mean() / 10.0
    assert tight["is_ess_fraction"] > 10 * loose["is_ess_fraction"]


def test_bad_inputs_and_config_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        importance_weights(torch.zeros(4), torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        importance_weights(torch.zeros(4, 1), torch.zeros(4, 1))
    with pytest.raises(ConfigError, match="max_weight"):
        from_dict(ImportanceConfig, {"max_weight": 0.0}, "importance")
    with pytest.raises(ConfigError, match="min_weight"):
        from_dict(ImportanceConfig, {"min_weight": -1}, "importance")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ImportanceConfig, {"clip": 3}, "importance")
