"""Importance weights w_i = pi(a_i|s_i) / pi_D(a_i|s_i) for the world-model update of Eq. (3).

Weights are formed in log space from the two policies' log-densities, because the ratio of two
tanh-Gaussian densities easily over- or underflows float32. With `self_normalize` the weights are
rescaled to mean 1 over the batch (the self-normalized IS estimator: robust when pi and pi_D are far
apart and every raw ratio is tiny or huge), then clipped to [min_weight, max_weight], so max_weight
is "at most this many times the average sample". A clip at c bounds the effective sample size from
below: with weights <= c, ESS = (sum w)^2 / sum w^2 >= N mean(w) / c, i.e. about N / c while
clipping removes little mass (mean(w) stays near 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adept.config import require


@dataclass
class ImportanceConfig:
    """Importance-weight settings (the paper gives only the plain ratio of Eq. 3; all are ours).

    max_weight follows Ionides' (2008) truncation at sqrt(N) times the mean weight; the bias/variance
    measurements behind it are in docs/notes/world-model.md.
    """

    max_weight: float | None = 32.0      # clip (x the batch mean if self_normalize): sqrt(B_m), B_m = 1024
    min_weight: float = 0.0              # lower clip
    self_normalize: bool = True          # rescale to mean 1 over the batch before clipping
    collapse_ess_fraction: float = 0.01  # flag `is_collapsed` when ESS / N falls below this (~10 of 1024)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require(self.min_weight >= 0.0, f"importance.min_weight must be >= 0, got {self.min_weight}")
        require(self.max_weight is None or (math.isfinite(self.max_weight) and self.max_weight > self.min_weight),
                f"importance.max_weight must be a finite number > min_weight ({self.min_weight}) or null, "
                f"got {self.max_weight}")
        require(0.0 <= self.collapse_ess_fraction <= 1.0,
                f"importance.collapse_ess_fraction must be in [0, 1], got {self.collapse_ess_fraction}")


def importance_weights(log_pi: torch.Tensor, log_pi_behavior: torch.Tensor,
                       config: ImportanceConfig | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weights (N,) for Eq. (3) and their statistics (scalar tensors, no host sync).

    Stats: `is_ess` = (sum w)^2 / sum w^2, `is_ess_fraction` = ESS / N, `is_clipped_fraction`
    (samples at either clip), `is_max_weight`, `is_mean_weight`, `is_log_ratio_mean`, and
    `is_collapsed` (1.0 when ESS / N < collapse_ess_fraction, for the caller to warn about).
    """
    config = config or ImportanceConfig()
    if log_pi.shape != log_pi_behavior.shape or log_pi.ndim != 1:
        raise ValueError(f"log_pi and log_pi_behavior must both have shape (N,), got {tuple(log_pi.shape)} "
                         f"and {tuple(log_pi_behavior.shape)}")
    n = log_pi.shape[0]
    log_ratio = (log_pi - log_pi_behavior).detach()  # weights scale the world-model loss, never train a policy
    log_w = log_ratio
    if config.self_normalize:  # log(N * softmax): mean-1 weights without ever exponentiating a large number
        log_w = log_ratio - torch.logsumexp(log_ratio, dim=0) + math.log(n)
    log_min = math.log(config.min_weight) if config.min_weight > 0.0 else None
    log_max = math.log(config.max_weight) if config.max_weight is not None else None
    clipped = torch.zeros_like(log_w, dtype=torch.bool)
    if log_min is not None:
        clipped |= log_w < log_min
    if log_max is not None:
        clipped |= log_w > log_max
    if log_min is not None or log_max is not None:
        log_w = torch.clamp(log_w, min=log_min, max=log_max)
    weights = torch.exp(log_w)
    ess = weights.sum().square() / weights.square().sum()
    stats = {
        "is_ess": ess,
        "is_ess_fraction": ess / n,
        "is_clipped_fraction": clipped.float().mean(),
        "is_max_weight": weights.max(),
        "is_mean_weight": weights.mean(),
        "is_log_ratio_mean": log_ratio.mean(),
        "is_collapsed": (ess / n < config.collapse_ess_fraction).float(),
    }
    return weights, stats
