"""Importance weights pi / pi_D in log space: analytic ratios, self-normalization, clipping, ESS."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from adept.config import ConfigError, from_dict, parse_overrides
from adept.importance import ImportanceConfig, ess_floor_alpha, importance_weights


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
    # raw ratios that all underflow float32 (exp(-200) = 0): the health stats are still those of equal weights
    tiny, stats = importance_weights(torch.full((4,), -200.0), torch.zeros(4),
                                     ImportanceConfig(max_weight=None, self_normalize=False))
    assert (tiny == 0).all() and stats["is_ess_fraction"].item() == pytest.approx(1.0, rel=1e-4)
    assert stats["is_max_weight_share"].item() == pytest.approx(0.25, rel=1e-4)


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
    for values, message in [({"max_weight": "sqrt"}, r"max_weight must be a number, 'sqrt_n' .* got 'sqrt'"),
                            ({"max_weight": "sqrt_n", "min_weight": 1.0}, r"min_weight must be < 1"),
                            ({"temper_alpha": 0.0}, r"temper_alpha must be in \(0, 1\]"),
                            ({"temper_alpha": 1.5}, r"temper_alpha must be in \(0, 1\]"),
                            ({"ess_floor": 0.0}, r"ess_floor must be in \(0, 1\] or null"),
                            ({"ess_floor": 1.2}, r"ess_floor must be in \(0, 1\] or null"),
                            ({"ess_floor_steps": 0}, r"ess_floor_steps must be >= 1")]:
        with pytest.raises(ConfigError, match=message) as error:
            from_dict(ImportanceConfig, values, "importance")
        assert "\n" not in str(error.value)


def two_point_log_ratio(n: int, k: int, log_r: float) -> torch.Tensor:
    """k samples with ratio r = exp(log_r), n - k with ratio 1."""
    log_ratio = torch.zeros(n)
    log_ratio[:k] = log_r
    return log_ratio


def two_point_ess_fraction(p: float, x: float) -> float:
    """ESS / N of weights that are x on a fraction p of the samples and 1 elsewhere."""
    return (p * x + 1 - p) ** 2 / (p * x**2 + 1 - p)


def test_default_clip_is_sqrt_of_the_batch_size():
    """max_weight "sqrt_n" resolves to sqrt(N) of each call's batch: 16 / 32 / 45.25 at B_m = 256 / 1024 / 2048."""
    assert ImportanceConfig().max_weight == "sqrt_n"
    for n in (256, 1024, 2048):
        weights, stats = importance_weights(two_point_log_ratio(n, 1, 50.0), torch.zeros(n))
        assert weights[0].item() == pytest.approx(math.sqrt(n), rel=1e-5)  # self-normalized ~N, clipped to sqrt(N)
        assert stats["is_clipped_fraction"].item() == pytest.approx(1 / n)
        fixed, _ = importance_weights(two_point_log_ratio(n, 1, 50.0), torch.zeros(n), ImportanceConfig(max_weight=32))
        assert fixed[0].item() == pytest.approx(32.0, rel=1e-5)
    parsed = from_dict(ImportanceConfig, parse_overrides(["importance.max_weight=sqrt_n"])["importance"], "importance")
    assert parsed.max_weight == "sqrt_n" and parsed.clip_for(64) == 8.0


def test_two_point_weights_match_closed_form_health_stats():
    """ESS, max-weight share and mean weight of two-point weights, untempered and tempered, by hand."""
    n, k, log_r = 100, 10, 4.0
    p = k / n
    for alpha in (1.0, 0.5, 0.25):
        x = math.exp(alpha * log_r)
        config = ImportanceConfig(max_weight=None, temper_alpha=alpha)
        weights, stats = importance_weights(two_point_log_ratio(n, k, log_r), torch.zeros(n), config)
        assert stats["is_ess_fraction"].item() == pytest.approx(two_point_ess_fraction(p, x), rel=1e-5)
        assert stats["is_max_weight_share"].item() == pytest.approx(x / (k * x + n - k), rel=1e-5)
        assert stats["is_mean_weight"].item() == pytest.approx(1.0, rel=1e-5)
        assert stats["is_alpha"].item() == alpha
        torch.testing.assert_close(weights[0] / weights[-1], torch.tensor(x), rtol=1e-5, atol=0)
    # self-normalized, clip 2: the k samples at x / (p x + 1 - p) = 8.45 are clipped to 2, mass is lost
    x = math.exp(log_r)
    _, stats = importance_weights(two_point_log_ratio(n, k, log_r), torch.zeros(n), ImportanceConfig(max_weight=2))
    low = 1 / (p * x + 1 - p)
    assert stats["is_mean_weight"].item() == pytest.approx(p * 2 + (1 - p) * low, rel=1e-5)
    assert stats["is_max_weight_share"].item() == pytest.approx(2 / (k * 2 + (n - k) * low), rel=1e-5)
    assert stats["is_ess_fraction"].item() == pytest.approx(two_point_ess_fraction(p, 2 / low), rel=1e-5)


def test_ess_floor_finds_the_largest_alpha_that_keeps_the_floor():
    """Two-point weights: ESS/N(x) = floor is a quadratic in x = r^alpha, so alpha* has a closed form."""
    n, k, log_r, floor = 1000, 5, 8.0, 0.1
    p, q = k / n, 1 - k / n
    a, b, c = p * p - floor * p, 2 * p * q, q * q - floor * q   # (p x + q)^2 = floor (p x^2 + q)
    x_star = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)      # the root > 1 (a < 0)
    alpha_star = math.log(x_star) / log_r
    assert 0.0 < alpha_star < 1.0 and two_point_ess_fraction(p, math.exp(log_r)) < floor
    log_ratio = two_point_log_ratio(n, k, log_r)
    config = ImportanceConfig(max_weight=None, ess_floor=floor, ess_floor_steps=20)
    weights, stats = importance_weights(log_ratio, torch.zeros(n), config)
    assert alpha_star - 2**-20 - 1e-6 <= stats["is_alpha"].item() <= alpha_star + 1e-6
    assert stats["is_ess_fraction"].item() == pytest.approx(floor, rel=1e-4)
    assert stats["is_ess_fraction"].item() >= floor - 1e-6
    # the floor caps the exponent at temper_alpha and is a no-op when already met
    assert ess_floor_alpha(log_ratio, 0.001, max_alpha=0.5).item() == 0.5
    assert ess_floor_alpha(torch.zeros(8), 1.0).item() == 1.0
    coarse = ess_floor_alpha(log_ratio, floor, steps=3)   # few steps: a smaller alpha, never a violated floor
    assert coarse.item() <= alpha_star and two_point_ess_fraction(p, math.exp(coarse.item() * log_r)) >= floor


class GaussianPolicy:
    """log_prob of a fixed N(mean, std^2) per action dimension, whatever the state."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return Normal(self.mean, self.std).log_prob(actions).sum(-1)


def test_closed_loop_update_logs_weight_health_with_the_clip_of_its_batch_size():
    """The IWU step reports ESS/N, the max-weight share and the mean weight as iw/ metrics (what the runner
    averages into train.csv), and its clip follows world_model.is_batch_size: sqrt(64) = 8."""
    from adept.closed_loop import ClosedLoop, ClosedLoopConfig
    from adept.world_model import WorldModel, WorldModelConfig
    from baselines.replay import TensorBuffer

    generator = torch.Generator().manual_seed(0)
    obs, act = torch.randn(512, 3, generator=generator), torch.rand(512, 2, generator=generator) * 2 - 1
    real = TensorBuffer.from_arrays(obs, act, torch.randn(512, generator=generator), obs, torch.zeros(512), "cpu")
    config = WorldModelConfig(hidden_dim=16, depth=1, reward_hidden_dim=16, reward_depth=1, diffusion_steps=2,
                              time_embedding_dim=4, is_batch_size=64)
    model = WorldModel.from_arrays(obs.numpy(), act.numpy(), torch.zeros(512).numpy(), obs.numpy(), config)
    loop = ClosedLoop(ClosedLoopConfig(rollouts_per_epoch=0), model, real, GaussianPolicy(0.0, 0.6),
                      generator=torch.Generator().manual_seed(1))
    metrics = loop.importance_sampled_update(GaussianPolicy(0.5, 0.05))   # sharp pi: one sample dominates
    for name in ("iw/is_ess_fraction", "iw/is_max_weight_share", "iw/is_mean_weight", "iw/is_alpha"):
        assert metrics[name].ndim == 0, name
    assert metrics["iw/is_max_weight"].item() == pytest.approx(8.0, rel=1e-5)
    assert metrics["iw/is_mean_weight"].item() < 1.0   # the clip removed mass
    assert 1 / 64 < metrics["iw/is_max_weight_share"].item() <= 1.0
