"""DDPM pieces used by the world model: cosine noise schedule, forward noising, guided reverse step.

Conventions (the paper's, Section 3 and Algorithm 1):
- Diffusion steps are numbered k = 1..K. Step k adds noise with variance beta_k, and
  alpha_bar_k = prod_{i<=k} (1 - beta_i). Index 0 means "clean data": the schedule tensors have
  length K + 1 with beta_0 = 0 and alpha_bar_0 = 1, so `schedule.alpha_bar[k]` is the paper's
  alpha_bar_k without any off-by-one shifting.
- Forward process: x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps            (q_sample)
- Reverse process, Eq. (1): x_{k-1} ~ N(mu_theta(x_k), Sigma_k) with
      mu_theta = (x_k - beta_k / sqrt(1 - alpha_bar_k) * eps_theta) / sqrt(alpha_k)
      Sigma_k  = beta_k (1 - alpha_bar_{k-1}) / (1 - alpha_bar_k) I
  run for k = K..1. Algorithm 1 writes the same loop as "for k = K-1 -> 0: x_k ~ N(mu(x_{k+1}), ...)",
  i.e. with the loop index shifted by one; Sigma_1 = 0, so the last step is deterministic.
- The denoiser sees the integer step k through a sinusoidal embedding of k (`timestep_embedding`).
- Classifier-free guidance, Eq. (2): eps = eps(x, none) + w (eps(x, y) - eps(x, none)), so w = 1 is the
  purely conditional model and w = 0 the unconditional one. Ho & Salimans (2022) write the same rule
  as (1 + w') eps(x, y) - w' eps(x, none), i.e. w = 1 + w'. `guidance_eq2_weight` converts.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import nn

GuidanceConvention = Literal["eq2", "ho_salimans"]

MAX_BETA = 0.999  # Nichol & Dhariwal (2021) clip betas at 0.999 to avoid a singular last step.


def cosine_alpha_bar(num_steps: int, s: float = 1e-4) -> torch.Tensor:
    """Closed-form cosine alpha_bar_k = f(k) / f(0), f(k) = cos^2(((k / K) + s) / (1 + s) * pi / 2), k = 0..K.

    Returned in float64 (K + 1 values); this is the schedule before beta clipping.
    """
    k = torch.arange(num_steps + 1, dtype=torch.float64)
    f = torch.cos(((k / num_steps) + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def cosine_beta_schedule(num_steps: int, s: float = 1e-4, max_beta: float = MAX_BETA) -> torch.Tensor:
    """betas_1..K of the cosine schedule, beta_k = 1 - alpha_bar_k / alpha_bar_{k-1}, clipped at max_beta.

    With K = 10 and s = 1e-4 only beta_K hits the clip (the closed form gives alpha_bar_K ~ 1e-33,
    i.e. beta_K ~ 1); the clipped schedule keeps alpha_bar_K ~ 2.5e-5, still essentially pure noise.
    """
    if num_steps < 1:
        raise ValueError(f"the number of diffusion steps must be >= 1, got {num_steps}")
    if not 0.0 <= s < 1.0:
        raise ValueError(f"cosine schedule offset s must be in [0, 1), got {s}")
    alpha_bar = cosine_alpha_bar(num_steps, s)
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def timestep_embedding(k: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of integer diffusion steps k (B,) -> (B, dim)."""
    if dim % 2 != 0:
        raise ValueError(f"timestep embedding dimension must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=k.device, dtype=torch.float32) / half)
    angles = k.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def guidance_eq2_weight(weight: float, convention: GuidanceConvention) -> float:
    """The weight w of Eq. (2) for a guidance weight given in `convention`."""
    if convention == "eq2":
        return weight
    if convention == "ho_salimans":
        return 1.0 + weight
    raise ValueError(f"unknown guidance convention {convention!r}; valid: 'eq2', 'ho_salimans'")


# A denoiser maps (x_k, k, condition, condition_mask) -> predicted noise; mask 1 = conditioned, 0 = null.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guided_eps(denoiser: Denoiser, x: torch.Tensor, k: torch.Tensor, condition: torch.Tensor,
               weight: float) -> torch.Tensor:
    """Classifier-free guided noise prediction, Eq. (2), with weight w in the Eq. (2) convention.

    The conditional and unconditional predictions come from ONE network call on a doubled batch.
    w = 1 needs only the conditional pass and w = 0 only the unconditional one, so those skip the other.
    """
    batch = x.shape[0]
    ones = torch.ones(batch, 1, device=x.device, dtype=x.dtype)
    if weight == 1.0:
        return denoiser(x, k, condition, ones)
    if weight == 0.0:
        return denoiser(x, k, condition, torch.zeros_like(ones))
    eps = denoiser(torch.cat([x, x]), torch.cat([k, k]), torch.cat([condition, condition]),
                   torch.cat([ones, torch.zeros_like(ones)]))
    eps_cond, eps_uncond = eps[:batch], eps[batch:]
    return eps_uncond + weight * (eps_cond - eps_uncond)


class DiffusionSchedule(nn.Module):
    """Schedule constants as (non-persistent) buffers indexed by k = 0..K, so they follow `.to(device)`."""

    def __init__(self, num_steps: int, cosine_s: float = 1e-4):
        super().__init__()
        self.num_steps = num_steps
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), cosine_beta_schedule(num_steps, cosine_s)])
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        one_minus = (1.0 - alpha_bar).clamp_min(1e-300)  # 0 only at k = 0, where no coefficient is used
        constants = {
            "betas": betas, "alphas": alphas, "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha_bar.sqrt(), "sqrt_one_minus_alpha_bar": (1.0 - alpha_bar).sqrt(),
            # Eq. (1): mean = inv_sqrt_alphas * (x_k - eps_coef * eps), Sigma_k = posterior_variance.
            "inv_sqrt_alphas": alphas.rsqrt(), "eps_coef": betas / one_minus.sqrt(),
            "posterior_variance": betas * (1.0 - alpha_bar_prev) / one_minus,
            # Posterior mean of q(x_{k-1} | x_k, x_0) = x0_coef x_0 + xk_coef x_k (Ho et al. 2020, Eq. 7).
            "posterior_x0_coef": alpha_bar_prev.sqrt() * betas / one_minus,
            "posterior_xk_coef": alphas.sqrt() * (1.0 - alpha_bar_prev) / one_minus,
        }
        constants["posterior_std"] = constants["posterior_variance"].sqrt()
        # Computed in float64, stored in float32; every constant is 0 at the unused index k = 0.
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)

    def sample_steps(self, batch_size: int, device: torch.device,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """k ~ Uniform{1, ..., K}, shape (batch_size,), as in Algorithm 1's IWU."""
        return torch.randint(1, self.num_steps + 1, (batch_size,), device=device, generator=generator)

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) noise, for per-sample steps k (B,) and
        samples x0 of any shape (B, ...) (transitions (B, D), trajectories (B, H, D))."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return self.sqrt_alpha_bar[k].view(shape) * x0 + self.sqrt_one_minus_alpha_bar[k].view(shape) * noise

    def predict_x0(self, x: torch.Tensor, k: int, eps: torch.Tensor) -> torch.Tensor:
        """x0_hat = (x_k - sqrt(1 - alpha_bar_k) eps) / sqrt(alpha_bar_k)."""
        return (x - self.sqrt_one_minus_alpha_bar[k] * eps) / self.sqrt_alpha_bar[k]

    def reverse_step(self, x: torch.Tensor, k: int, eps: torch.Tensor, generator: torch.Generator | None = None,
                     x0_bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One reverse step: sample x_{k-1} given x_k and the predicted noise (step k shared by the batch).

        Without `x0_bounds` this is Eq. (1) literally. With bounds, the implied clean sample x0_hat is
        clamped to them and the mean is the posterior mean of q(x_{k-1} | x_k, x0_hat), which equals
        Eq. (1) whenever nothing is clamped ("clip_denoised" in Ho et al. 2020 / Nichol & Dhariwal 2021).
        It matters at k = K: 1 / sqrt(alpha_K) = 31.6 with the clipped beta_K = 0.999, so Eq. (1)
        multiplies the denoiser's error at k = K by ~30 (docs/notes/world-model.md has the numbers).
        """
        if x0_bounds is None:
            mean = self.inv_sqrt_alphas[k] * (x - self.eps_coef[k] * eps)
        else:
            x0 = torch.clamp(self.predict_x0(x, k, eps), *x0_bounds)
            mean = self.posterior_x0_coef[k] * x0 + self.posterior_xk_coef[k] * x
        if k == 1:  # Sigma_1 = 0: the final step returns the mean.
            return mean
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return mean + self.posterior_std[k] * noise

    def sample(self, denoiser: Denoiser, condition: torch.Tensor, dim: int, weight: float,
               generator: torch.Generator | None = None,
               x0_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
               clamp_last_step: bool = True) -> torch.Tensor:
        """Run the K-step guided reverse process from x_K ~ N(0, I); returns x_0 (B, dim).

        With `x0_bounds` every step clamps its x0_hat; the last step (k = 1) returns x0_hat itself
        (posterior_x0_coef[1] = 1, posterior_xk_coef[1] = 0), so the sample lies in the bounds.
        `clamp_last_step=False` clamps only in steps K..2: the chain is stabilised but the returned
        sample is not clipped (whether it is, is then the caller's decision).
        """
        batch = condition.shape[0]
        x = torch.randn(batch, dim, device=condition.device, dtype=condition.dtype, generator=generator)
        for k in range(self.num_steps, 0, -1):
            steps = torch.full((batch,), k, device=condition.device, dtype=torch.long)
            eps = guided_eps(denoiser, x, steps, condition, weight)
            bounds = x0_bounds if k > 1 or clamp_last_step else None
            x = self.reverse_step(x, k, eps, generator, bounds)
        return x
