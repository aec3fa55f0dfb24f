"""SynthER (Lu et al. 2023, https://arxiv.org/abs/2303.06614): an unconditional diffusion model over whole
transitions x = (s, a, r, s', terminal), sampled once to upsample the offline data, and the synthetic-data
source that puts its samples into the runner's D-hat before the first learner update.

Settings are the SynthER code's (github.com/conglu1997/SynthER: config/resmlp_denoiser.gin,
config/resmlp_w1024_denoiser.gin, synther/diffusion/{denoiser_network,elucidated_diffusion,norm,utils}.py);
departures in docs/notes/diffusion-baselines.md.

- Data: the columns are standardized per dimension (mean, std + 1e-5 over D), except the terminal flag,
  which is modelled as it is and read back with the threshold 0.5.
- Denoiser: a residual MLP. The normalized noisy input is projected to `embed_dim` and added to an
  embedding of the noise level (random Fourier features -> Linear -> SiLU -> Linear); then Linear(width),
  `blocks` blocks h + Linear(ReLU(LN(h))) (LN off by default, as in the gin file), ReLU, Linear(D).
- EDM (Karras et al. 2022) preconditioning, training loss and sampler: D(x; sigma) = c_skip x +
  c_out F(c_in x, log(sigma) / 4), sigma ~ exp(N(P_mean, P_std^2)), loss lambda(sigma) ||D - x||^2
  (mean over dimensions) with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2; sampling with
  Heun's second-order steps on the rho = 7 schedule from sigma_max to sigma_min and stochastic churn
  (S_churn, S_tmin, S_tmax, S_noise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adept.config import from_dict, require, to_dict
from adept.outputs import atomic_torch_save

SAVE_FORMAT = "adept-synther/1"
NORMALIZER_EPS = 1e-5  # SynthER's Normalizer: std + 1e-5


@dataclass
class SyntherConfig:
    """The diffusion model, its EDM settings and its fit. Defaults: the SynthER code (module docstring)."""

    width: int = 1024                # residual MLP width (resmlp_w1024_denoiser.gin; resmlp_denoiser.gin: 2048)
    blocks: int = 6                  # residual blocks (num_layers)
    embed_dim: int = 128             # input projection and noise-level embedding (dim_t)
    fourier_features: int = 16       # random Fourier features of the noise level (learned_sinusoidal_dim)
    layer_norm: bool = False         # LayerNorm in the residual blocks (the gin file turns it off)
    model_terminals: bool = True     # the terminal flag is a modelled column (else every sample is non-terminal)
    # EDM (elucidated_diffusion.py and the gin file)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 1.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    s_churn: float = 80.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    # fit (Trainer in elucidated_diffusion.py, values of the gin file)
    lr: float = 3e-4
    batch_size: int = 1024           # train_batch_size
    small_batch_size: int = 256      # used for datasets of fewer than small_dataset transitions
    small_dataset: int = 800_000
    weight_decay: float = 0.0        # AdamW
    adam_betas: tuple[float, float] = (0.9, 0.99)
    grad_clip_norm: float = 1.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"   # cosine annealing to 0 over the fit's steps
    ema_decay: float = 0.995         # ema_pytorch EMA: beta, with its warm-up (ema_decay_at)
    ema_every: int = 10
    ema_start: int = 100             # ema_pytorch's update_after_step: plain copies until then

    def validate(self) -> None:
        for key in ("width", "blocks", "embed_dim", "batch_size", "small_batch_size", "ema_every"):
            require(getattr(self, key) >= 1, f"synther.{key} must be >= 1, got {getattr(self, key)}")
        require(self.fourier_features >= 2 and self.fourier_features % 2 == 0,
                f"synther.fourier_features must be even and >= 2, got {self.fourier_features}")
        require(0 < self.sigma_min < self.sigma_max, f"synther needs 0 < sigma_min < sigma_max, got "
                                                     f"{self.sigma_min}, {self.sigma_max}")
        for key in ("sigma_data", "rho", "p_std", "lr", "grad_clip_norm", "s_noise"):
            require(getattr(self, key) > 0, f"synther.{key} must be > 0, got {getattr(self, key)}")
        for key in ("s_churn", "s_tmin", "weight_decay", "ema_start", "small_dataset"):
            require(getattr(self, key) >= 0, f"synther.{key} must be >= 0, got {getattr(self, key)}")
        require(self.s_tmax >= self.s_tmin, f"synther.s_tmax ({self.s_tmax}) must be >= s_tmin ({self.s_tmin})")
        require(0.0 <= self.ema_decay <= 1.0, f"synther.ema_decay must be in [0, 1], got {self.ema_decay}")
        require(len(self.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in self.adam_betas),
                f"synther.adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}")
        require(self.lr_schedule in ("cosine", "constant"),
                f"synther.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")

    def fit_batch_size(self, num_transitions: int) -> int:
        """SynthER's rule: the small batch for datasets of fewer than `small_dataset` transitions."""
        return self.small_batch_size if num_transitions < self.small_dataset else self.batch_size


def ema_decay_at(update: int, config: SyntherConfig) -> float | None:
    """The EMA decay of update number `update` (0-based) of ema_pytorch's EMA as SynthER uses it: None when
    no EMA step happens (update % ema_every != 0); 0 (a copy) up to ema_start and at the first EMA step after
    it (ema_pytorch copies the model once more there before averaging); then the warm-up
    1 - (1 + update - ema_start)^(-2/3), capped at ema_decay (inv_gamma 1, power 2/3)."""
    if update % config.ema_every != 0:
        return None
    first_average = (config.ema_start // config.ema_every + 1) * config.ema_every
    if update <= first_average:
        return 0.0
    return min(config.ema_decay, 1.0 - (1.0 + update - config.ema_start) ** (-2.0 / 3.0))


# ---------------------------------------------------------------------------------------------- networks
class FourierNoiseEmbedding(nn.Module):
    """[c, sin(2 pi c w), cos(2 pi c w)] of the noise input c with fixed random frequencies w ~ N(0, 1)."""

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("frequencies", torch.randn(features // 2))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * c.unsqueeze(-1) * self.frequencies
        return torch.cat([c.unsqueeze(-1), torch.sin(angles), torch.cos(angles)], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, layer_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(F.relu(self.norm(h)))


class ResidualMLPDenoiser(nn.Module):
    """F(x, c): (B, D) inputs and noise inputs c (B,) -> (B, D)."""

    def __init__(self, dim: int, config: SyntherConfig):
        super().__init__()
        self.input = nn.Linear(dim, config.embed_dim)
        self.noise_embedding = nn.Sequential(
            FourierNoiseEmbedding(config.fourier_features), nn.Linear(config.fourier_features + 1, config.embed_dim),
            nn.SiLU(), nn.Linear(config.embed_dim, config.embed_dim))
        self.trunk = nn.Sequential(nn.Linear(config.embed_dim, config.width),
                                   *(ResidualBlock(config.width, config.layer_norm) for _ in range(config.blocks)),
                                   nn.LayerNorm(config.width) if config.layer_norm else nn.Identity())
        self.output = nn.Linear(config.width, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.output(F.relu(self.trunk(self.input(x) + self.noise_embedding(c))))


# ------------------------------------------------------------------------------------------------- model
def transition_columns(observations, actions, rewards, next_observations, terminals, model_terminals: bool = True
                       ) -> np.ndarray:
    """The (N, D) float32 matrix [s, a, r, s', terminal] (without the terminal column if not modelled)."""
    columns = [observations, actions, np.reshape(rewards, (-1, 1)), next_observations]
    if model_terminals:
        columns.append(np.reshape(terminals, (-1, 1)))
    return np.concatenate([np.asarray(c, np.float32) for c in columns], axis=1)


class TransitionDiffusion(nn.Module):
    """SynthER's model of transitions: normalization, the EDM-preconditioned denoiser, loss and sampler."""

    def __init__(self, obs_dim: int, act_dim: int, config: SyntherConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.config = config = config or SyntherConfig()
        config.validate()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.dim = 2 * obs_dim + act_dim + 1 + int(config.model_terminals)
        self.denoiser = ResidualMLPDenoiser(self.dim, config)
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("std", torch.ones(self.dim))
        self.env: str | None = None
        self.trained_on: dict | None = None
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def set_data_stats(self, columns: np.ndarray) -> None:
        """Per-dimension mean and std (unbiased, + 1e-5) of the training columns; the terminal column stays raw."""
        data = torch.as_tensor(columns, dtype=torch.float64)
        mean, std = data.mean(dim=0), data.std(dim=0) + NORMALIZER_EPS
        if self.config.model_terminals:
            mean[-1], std[-1] = 0.0, 1.0
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    # ---- EDM ---------------------------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) for normalized noisy x (B, D) and sigma (B,)."""
        sigma_data = self.config.sigma_data
        s = sigma.unsqueeze(-1)
        c_skip = sigma_data ** 2 / (s ** 2 + sigma_data ** 2)
        c_out = s * sigma_data / (s ** 2 + sigma_data ** 2).sqrt()
        c_in = 1.0 / (s ** 2 + sigma_data ** 2).sqrt()
        c_noise = 0.25 * sigma.clamp_min(1e-20).log()
        return c_skip * x + c_out * self.denoiser(c_in * x, c_noise)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma_data = self.config.sigma_data
        return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2

    def loss(self, columns: torch.Tensor, generator: torch.Generator | None = None, *,
             sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """EDM loss of raw transition columns (B, D); `sigma` and `noise` default to fresh draws."""
        x = self.normalize(columns)
        if sigma is None:
            normal = torch.randn(x.shape[0], device=x.device, generator=generator)
            sigma = (self.config.p_mean + self.config.p_std * normal).exp()
        if noise is None:
            noise = torch.randn(x.shape, device=x.device, generator=generator)
        denoised = self.denoise(x + sigma.unsqueeze(-1) * noise, sigma)
        return ((denoised - x).square().mean(dim=-1) * self.loss_weight(sigma)).mean()

    def sigma_schedule(self, steps: int) -> torch.Tensor:
        """sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < N, then 0."""
        c = self.config
        if steps < 2:
            raise ValueError(f"the EDM sampler needs at least 2 steps, got {steps}")
        i = torch.arange(steps, dtype=torch.float64)
        inv_rho = 1.0 / c.rho
        sigmas = (c.sigma_max ** inv_rho + i / (steps - 1) * (c.sigma_min ** inv_rho - c.sigma_max ** inv_rho)) ** c.rho
        return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])

    @torch.no_grad()
    def sample_normalized(self, count: int, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` samples in normalized units: Heun's method with churn from N(0, sigma_max^2 I)."""
        c = self.config
        sigmas = self.sigma_schedule(steps).tolist()
        churn = min(c.s_churn / steps, math.sqrt(2.0) - 1.0)
        shape = (count, self.dim)
        x = sigmas[0] * torch.randn(shape, device=self.device, generator=generator)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            gamma = churn if c.s_tmin <= sigma <= c.s_tmax else 0.0
            eps = c.s_noise * torch.randn(shape, device=self.device, generator=generator)  # drawn every step
            sigma_hat = sigma * (1.0 + gamma)
            x_hat = x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * eps
            slope = (x_hat - self.denoise(x_hat, torch.full((count,), sigma_hat, device=self.device))) / sigma_hat
            x = x_hat + (sigma_next - sigma_hat) * slope
            if sigma_next != 0.0:  # Heun's correction, except at the last step
                slope_next = (x - self.denoise(x, torch.full((count,), sigma_next, device=self.device))) / sigma_next
                x = x_hat + 0.5 * (sigma_next - sigma_hat) * (slope + slope_next)
        return x

    @torch.no_grad()
    def sample(self, count: int, steps: int, generator: torch.Generator | None = None,
               batch_size: int | None = None) -> torch.Tensor:
        """`count` raw transition columns (count, D), generated in batches of `batch_size` (default: all)."""
        batch_size = batch_size or count
        parts = [self.unnormalize(self.sample_normalized(min(batch_size, count - first), steps, generator))
                 for first in range(0, count, batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim, device=self.device)

    def split(self, columns: torch.Tensor, terminal_threshold: float = 0.5
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(s, a, r, s', terminal in {0, 1}) of raw columns; terminal = column > threshold (0 if not modelled)."""
        o, a = self.obs_dim, self.act_dim
        obs, act, rew, next_obs = columns[:, :o], columns[:, o:o + a], columns[:, o + a], columns[:, o + a + 1:2 * o + a + 1]
        terminal = ((columns[:, -1] > terminal_threshold).float() if self.config.model_terminals
                    else torch.zeros_like(rew))
        return obs, act, rew, next_obs, terminal

    # ---- files -------------------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        atomic_torch_save({"format": SAVE_FORMAT, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                           "config": to_dict(self.config), "model": self.state_dict(), "env": self.env,
                           "trained_on": self.trained_on, "metadata": metadata or {}}, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "TransitionDiffusion":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SynthER model file {path} does not exist; fit one with "
                                    f"`python -m adept synther --out {path} ...`")
        payload = read_synther_file(path, map_location=device)
        model = cls(payload["obs_dim"], payload["act_dim"], from_dict(SyntherConfig, payload["config"], "synther"),
                    device)
        model.load_state_dict(payload["model"])
        model.env, model.trained_on = payload.get("env"), payload.get("trained_on")
        return model


def read_synther_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a file written by TransitionDiffusion.save; a corrupt or foreign file is a one-line UserError."""
    from adept.outputs import load_torch_file

    return load_torch_file(path, "SynthER model saved by `python -m adept synther`",
                           f"pass a model written by `python -m adept synther --out {path} ...`", fmt=SAVE_FORMAT,
                           required=("obs_dim", "act_dim", "config", "model"), map_location=map_location)


# -------------------------------------------------------------------------- the run's synthetic data
@dataclass
class UpsamplingConfig:
    """How a synther-<learner> run upsamples D: SynthER's offline settings (train_diffuser.py:
    5M samples, 128 sampler steps, batches of 100,000)."""

    num_samples: int = 5_000_000
    sample_steps: int = 128
    sample_batch_size: int = 100_000
    terminal_threshold: float = 0.5
    clip_actions: bool = True   # actions clipped to [-1, 1], the env's bounds (SynthER keeps the samples as they are)

    def validate(self) -> None:
        require(self.num_samples >= 1, f"upsampling.num_samples must be >= 1, got {self.num_samples}")
        require(self.sample_steps >= 2, f"upsampling.sample_steps must be >= 2, got {self.sample_steps}")
        require(self.sample_batch_size >= 1,
                f"upsampling.sample_batch_size must be >= 1, got {self.sample_batch_size}")


class SyntheticUpsampling:
    """The synthetic-data source of synther-<learner> runs: before the first learner update, fills D-hat
    with `num_samples` transitions from the fitted model (its own generator, seeded by the run), then
    does nothing. The samples are not checkpointed: a resumed run regenerates them from the same seed
    (and checks a fingerprint of them), which costs one sampling pass instead of a checkpoint of their size."""

    def __init__(self, config: UpsamplingConfig, model: TransitionDiffusion, *, seed: int, device: torch.device):
        from baselines.replay import TensorBuffer

        self.config, self.model, self.seed = config, model, seed
        self.synthetic = TensorBuffer(config.num_samples, model.obs_dim, model.act_dim, device)
        self.fingerprint: float | None = None

    def _generate(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        generator = torch.Generator(device=self.synthetic.device).manual_seed(self.seed)
        # Called once per process (at step 0, or when resuming); D-hat holds exactly num_samples rows, so
        # a second call would overwrite every row with the same samples.
        for first in range(0, cfg.num_samples, cfg.sample_batch_size):
            count = min(cfg.sample_batch_size, cfg.num_samples - first)
            columns = self.model.unnormalize(self.model.sample_normalized(count, cfg.sample_steps, generator))
            obs, act, rew, next_obs, terminal = self.model.split(columns, cfg.terminal_threshold)
            if cfg.clip_actions:
                act = act.clamp(-1.0, 1.0)
            self.synthetic.add(obs, act, rew, next_obs, terminal)
        s = self.synthetic
        self.fingerprint = float(s.observations.double().sum() + s.rewards.double().sum())  # one host read, once
        if not math.isfinite(self.fingerprint):
            raise FloatingPointError("the SynthER model generated non-finite transitions; refit it (e.g. a lower "
                                     "synther.lr) or check the model file")
        return {"synthetic/terminal_rate": s.dones.mean(), "synthetic/reward_mean": s.rewards.mean(),
                "synthetic/action_abs_max": s.actions.abs().max()}

    # ---- called by the runner -------------------------------------------------------------
    def before_update(self, step: int, learner) -> dict[str, torch.Tensor]:
        return self._generate() if step == 0 else {}

    def after_update(self, step: int, learner) -> dict[str, torch.Tensor]:
        return {}

    def diagnostics(self, learner) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"num_samples": self.config.num_samples, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict, learner) -> None:
        if state.get("fingerprint") is None:
            return
        self._generate()
        if self.fingerprint != state["fingerprint"]:
            raise ValueError(f"resuming regenerated other synthetic transitions than the interrupted run had "
                             f"(fingerprint {self.fingerprint!r}, not {state['fingerprint']!r}): the model file or "
                             f"the machine changed; rerun with --restart")
