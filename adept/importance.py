"""Importance weights w_i = pi(a_i|s_i) / pi_D(a_i|s_i) for the world-model update of Eq. (3).

Weights are formed in log space from the two policies' log-densities, because the ratio of two
tanh-Gaussian densities easily over- or underflows float32. With `self_normalize` the weights are
rescaled to mean 1 over the batch (the self-normalized IS estimator: robust when pi and pi_D are far
apart and every raw ratio is tiny or huge), then clipped to [min_weight, max_weight], so max_weight
is "at most this many times the average sample". A clip at c bounds the effective sample size from
below: with weights <= c, ESS = (sum w)^2 / sum w^2 >= N mean(w) / c, i.e. about N / c while
clipping removes little mass (mean(w) stays near 1). The default clip is sqrt(N) of the batch at
hand (Ionides 2008), so it follows B_m (Table 4's B_m = 256 / 2048 get 16 / 45.3).

Off-by-default extension (docs/notes/world-model.md, "Importance-weight health"): tempered weights
ratio^alpha, and an ESS floor that picks the largest alpha whose weights keep ESS / N >= floor
(ESS of ratio^alpha is non-increasing in alpha, so a fixed number of bisection steps finds it on
the device without a host sync). Both trade the bias of pulling pi towards pi_D for ESS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adept.config import require

SQRT_N = "sqrt_n"  # max_weight rule: sqrt of the batch size N, resolved when the weights are computed


@dataclass
class ImportanceConfig:
    """Importance-weight settings (the paper gives only the plain ratio of Eq. 3; all are ours).

    max_weight follows Ionides' (2008) truncation at sqrt(N) times the mean weight; the bias/variance
    measurements behind it and behind the (off) tempering / ESS floor are in docs/notes/world-model.md.
    """

    max_weight: float | str | None = SQRT_N  # clip (x the batch mean if self_normalize): "sqrt_n" = sqrt(N) of
    #                                      the batch (32 at B_m = 1024), a number = that clip, null = no clip
    min_weight: float = 0.0              # lower clip
    self_normalize: bool = True          # rescale to mean 1 over the batch before clipping
    temper_alpha: float = 1.0            # (extension, 1 = off) weights ratio^alpha, alpha in (0, 1]
    ess_floor: float | None = None       # (extension, null = off) largest alpha <= temper_alpha with ESS/N >= floor
    ess_floor_steps: int = 10            # bisection steps for ess_floor: alpha to within temper_alpha / 2^steps
    collapse_ess_fraction: float = 0.01  # flag `is_collapsed` when ESS / N falls below this (~10 of 1024)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        require(self.min_weight >= 0.0, f"adept.importance.min_weight must be >= 0, got {self.min_weight}")
        if isinstance(self.max_weight, str):
            require(self.max_weight == SQRT_N,
                    f"adept.importance.max_weight must be a number, {SQRT_N!r} (sqrt of the batch size) or null "
                    f"(no clip), got {self.max_weight!r}")
            require(self.min_weight < 1.0, f"adept.importance.min_weight must be < 1 with max_weight {SQRT_N!r} "
                                           f"(sqrt(N) can be 1), got {self.min_weight}")
        else:
            require(self.max_weight is None or (math.isfinite(self.max_weight) and self.max_weight > self.min_weight),
                    f"adept.importance.max_weight must be a finite number > min_weight ({self.min_weight}), "
                    f"{SQRT_N!r} or null, got {self.max_weight}")
        require(0.0 < self.temper_alpha <= 1.0,
                f"adept.importance.temper_alpha must be in (0, 1] (1 = untempered), got {self.temper_alpha}")
        require(self.ess_floor is None or 0.0 < self.ess_floor <= 1.0,
                f"adept.importance.ess_floor must be in (0, 1] or null (off), got {self.ess_floor}")
        require(self.ess_floor_steps >= 1, f"adept.importance.ess_floor_steps must be >= 1, got {self.ess_floor_steps}")
        require(0.0 <= self.collapse_ess_fraction <= 1.0,
                f"adept.importance.collapse_ess_fraction must be in [0, 1], got {self.collapse_ess_fraction}")

    def clip_for(self, n: int) -> float | None:
        """The upper clip for a batch of n weights (resolves "sqrt_n")."""
        return math.sqrt(n) if self.max_weight == SQRT_N else self.max_weight


def ess_fraction_of_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """ESS / N = (sum w)^2 / (N sum w^2) of weights exp(log_w) over the last dimension, in log space."""
    return torch.exp(2.0 * torch.logsumexp(log_w, -1) - torch.logsumexp(2.0 * log_w, -1)) / log_w.shape[-1]


def ess_floor_alpha(log_ratio: torch.Tensor, floor: float, max_alpha: float = 1.0, steps: int = 10) -> torch.Tensor:
    """The largest alpha in [0, max_alpha] with ESS/N of ratio^alpha >= floor (a scalar tensor).

    ESS/N of exp(alpha l) is 1 at alpha = 0 and non-increasing in alpha (d log ESS / d alpha =
    2 (E_alpha[l] - E_2alpha[l]) <= 0, E_beta[l] being increasing in beta), so bisection applies. A fixed
    number of steps with torch.where keeps it on the device; the result always satisfies the floor.
    """
    low = torch.zeros((), device=log_ratio.device, dtype=log_ratio.dtype)
    high = torch.full((), max_alpha, device=log_ratio.device, dtype=log_ratio.dtype)
    for _ in range(steps):
        mid = 0.5 * (low + high)
        ok = ess_fraction_of_log_weights(mid * log_ratio) >= floor
        low, high = torch.where(ok, mid, low), torch.where(ok, high, mid)
    return torch.where(ess_fraction_of_log_weights(max_alpha * log_ratio) >= floor, high.new_tensor(max_alpha), low)


def importance_weights(log_pi: torch.Tensor, log_pi_behavior: torch.Tensor,
                       config: ImportanceConfig | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weights (N,) for Eq. (3) and their statistics (scalar tensors, no host sync).

    Order: log ratio -> x alpha (temper_alpha, or the ESS-floor alpha) -> self-normalize -> clip.
    Stats (of the final weights): `is_ess` = (sum w)^2 / sum w^2, `is_ess_fraction` = ESS / N,
    `is_max_weight_share` = max w / sum w (1/N = uniform, 1 = one sample carries the batch),
    `is_mean_weight` (after clipping: below 1 when a self-normalized batch loses mass to the clip),
    `is_max_weight`, `is_clipped_fraction` (samples at either clip), `is_alpha` (the exponent used),
    `is_log_ratio_mean` (untempered), and `is_collapsed` (1.0 when ESS / N < collapse_ess_fraction,
    for the caller to warn about).
    """
    config = config or ImportanceConfig()
    if log_pi.shape != log_pi_behavior.shape or log_pi.ndim != 1:
        raise ValueError(f"log_pi and log_pi_behavior must both have shape (N,), got {tuple(log_pi.shape)} "
                         f"and {tuple(log_pi_behavior.shape)}")
    n = log_pi.shape[0]
    log_ratio = (log_pi - log_pi_behavior).detach()  # weights scale the world-model loss, never train a policy
    if config.ess_floor is not None:
        alpha = ess_floor_alpha(log_ratio, config.ess_floor, config.temper_alpha, config.ess_floor_steps)
    else:
        alpha = torch.full((), config.temper_alpha, device=log_ratio.device, dtype=log_ratio.dtype)
    log_w = alpha * log_ratio
    if config.self_normalize:  # log(N * softmax): mean-1 weights without ever exponentiating a large number
        log_w = log_w - torch.logsumexp(log_w, dim=0) + math.log(n)
    clip = config.clip_for(n)
    log_min = math.log(config.min_weight) if config.min_weight > 0.0 else None
    log_max = math.log(clip) if clip is not None else None
    clipped = torch.zeros_like(log_w, dtype=torch.bool)
    if log_min is not None:
        clipped |= log_w < log_min
    if log_max is not None:
        clipped |= log_w > log_max
    if log_min is not None or log_max is not None:
        log_w = torch.clamp(log_w, min=log_min, max=log_max)
    weights = torch.exp(log_w)
    # Health stats in log space: raw ratios (self_normalize off) can all underflow, making sum w^2 = 0.
    ess_fraction = ess_fraction_of_log_weights(log_w)
    ess = ess_fraction * n
    stats = {
        "is_ess": ess,
        "is_ess_fraction": ess_fraction,
        "is_max_weight_share": torch.exp(log_w.max() - torch.logsumexp(log_w, dim=0)),
        "is_mean_weight": weights.mean(),
        "is_max_weight": weights.max(),
        "is_clipped_fraction": clipped.float().mean(),
        "is_alpha": alpha,
        "is_log_ratio_mean": log_ratio.mean(),
        "is_collapsed": (ess_fraction < config.collapse_ess_fraction).float(),
    }
    return weights, stats
