"""Guided diffusion world model M_{theta,eta} (Section 4.1): eps_theta denoiser + r_eta reward/terminal model.

- eps_theta predicts the noise on the NORMALIZED next state s' given the normalized (s, a) and the
  diffusion step k; classifier-free guidance (Eq. 2) mixes its conditional and unconditional outputs.
- r_eta(s, a, s') is a separate MLP with two outputs: the (normalized) reward and a terminal logit.
- The per-sample loss l_i of Algorithm 1 feeds the importance-weighted loss of Eq. (3) in `update`.
- `step` is one model transition as used by policy evaluation (PE): sample s', clip it to the
  dataset's range, predict reward and terminal from (s, a, s'), clip the reward to the dataset's range
  (both clips iff `clip_to_data`; `clip_denoised` only stabilises the sampler's intermediate steps).

Inputs and outputs of the public methods are in RAW units (what the environment produces);
normalization happens inside with statistics stored as buffers, so they are saved with the model.
No method syncs with the host: metrics are returned as tensors and checked by `check_finite`
at the caller's logging cadence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adept.config import ConfigError, from_dict, require, to_dict
from adept.diffusion import DiffusionSchedule, GuidanceConvention, guidance_eq2_weight, timestep_embedding
from adept.outputs import atomic_torch_save
from baselines.common import adam, load_optimizer_state, mlp
from baselines.compile import CompileMode, compile_step, should_compile

CHECKPOINT_FORMAT = "adept-world-model/1"
MIN_STD = 1e-3  # floor on per-dimension standard deviations so constant dimensions do not blow up


# Fields that fix the networks' shapes or the noise schedule the denoiser was trained on.
ARCHITECTURE_KEYS = ("diffusion_steps", "cosine_s", "hidden_dim", "depth", "time_embedding_dim",
                     "reward_hidden_dim", "reward_depth", "predict_terminal")


@dataclass
class WorldModelConfig:
    """Hyperparameters of the world model; paper values from Table 2 unless marked "(ours)".

    Choices the paper leaves open are justified in docs/notes/world-model.md.
    """

    # Diffusion (Table 2).
    diffusion_steps: int = 10            # K, "denoising steps"
    cosine_s: float = 1e-4               # "s for cosine schedule"
    hidden_dim: int = 256                # "hidden dimension"
    depth: int = 3                       # "error model depth": hidden layers of eps_theta
    time_embedding_dim: int = 32         # (ours) sinusoidal embedding of k, concatenated to the input
    # Classifier-free guidance (docs/notes/world-model.md has the sweep behind these defaults).
    guidance_weight: float = 0.1         # Table 2 "condition guidance weight" ...
    guidance_convention: GuidanceConvention = "ho_salimans"  # (ours) ... as (1+w) eps_c - w eps_u: Eq. (2) w = 1.1;
    #                                      "eq2" reads 0.1 literally (90% unconditional, worse than s' = s)
    cond_drop_prob: float = 0.1          # (ours) probability of training with the null condition
    clip_denoised: bool = True           # (ours) clamp the predicted clean s' to the data range in reverse steps
    #                                      K..2 (sampler stabilisation); the output's clip is clip_to_data's
    # Reward / terminal model r_eta(s, a, s').
    reward_hidden_dim: int = 256         # (ours) same width as eps_theta
    reward_depth: int = 2                # (ours)
    predict_terminal: bool = True        # learn a terminal signal d_t (False: never terminal)
    terminal_loss_weight: float = 1.0    # (ours) weight of the terminal BCE in l_i
    terminal_threshold: float = 0.5      # (ours) d_t = sigmoid(logit) > threshold
    # Optimization (Table 2).
    lr: float = 3e-4                     # Adam learning rate
    batch_size: int = 256                # "train batchsize" (initial fit)
    is_batch_size: int = 1024            # "importance-sampling batchsize" B_m (IWU)
    grad_clip_norm: float | None = None  # (ours) off: the paper mentions none; set e.g. 1.0 if unstable
    # Policy evaluation.
    clip_to_data: bool = True            # clip the generated s' and r to the dataset range (Section 4.1); false:
    #                                      none is clipped (Table 4's "no clipping" also sets clip_denoised: false)

    def validate(self) -> None:
        require(self.diffusion_steps >= 1, f"world_model.diffusion_steps must be >= 1, got {self.diffusion_steps}")
        require(0.0 <= self.cosine_s < 1.0, f"world_model.cosine_s must be in [0, 1), got {self.cosine_s}")
        for name in ("hidden_dim", "reward_hidden_dim", "batch_size", "is_batch_size"):
            require(getattr(self, name) >= 1, f"world_model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("depth", "reward_depth"):
            require(getattr(self, name) >= 0, f"world_model.{name} must be >= 0, got {getattr(self, name)}")
        require(self.time_embedding_dim >= 2 and self.time_embedding_dim % 2 == 0,
                f"world_model.time_embedding_dim must be an even number >= 2, got {self.time_embedding_dim}")
        require(math.isfinite(self.guidance_weight),
                f"world_model.guidance_weight must be finite, got {self.guidance_weight}")
        require(self.guidance_convention in ("eq2", "ho_salimans"),
                f"world_model.guidance_convention must be 'eq2' or 'ho_salimans', got {self.guidance_convention!r}")
        require(0.0 < self.cond_drop_prob < 1.0,
                f"world_model.cond_drop_prob must be in (0, 1) so both the conditional and the unconditional "
                f"model are trained, got {self.cond_drop_prob}")
        require(self.terminal_loss_weight >= 0.0,
                f"world_model.terminal_loss_weight must be >= 0, got {self.terminal_loss_weight}")
        require(0.0 < self.terminal_threshold < 1.0,
                f"world_model.terminal_threshold must be in (0, 1), got {self.terminal_threshold}")
        require(self.lr > 0.0, f"world_model.lr must be > 0, got {self.lr}")
        require(self.grad_clip_norm is None or self.grad_clip_norm > 0.0,
                f"world_model.grad_clip_norm must be > 0 or null (off), got {self.grad_clip_norm}")

    @property
    def eq2_guidance_weight(self) -> float:
        """The guidance weight expressed as the w of the paper's Eq. (2)."""
        return guidance_eq2_weight(self.guidance_weight, self.guidance_convention)


# Metric names (after any "prefix/") -> the component a non-finite value points at, for check_finite.
COMPONENTS = {
    "loss": "total loss",
    "denoiser_loss": "denoiser loss (eps_theta)",
    "reward_loss": "reward loss (r_eta)",
    "terminal_loss": "terminal loss (r_eta)",
    "grad_norm": "gradient norm",
    "generated_state_abs_mean": "generated states",   # adept.rollouts stats
    "reward_mean": "generated rewards",
    "model_return": "model return (J-hat)",
    "heldout_next_state_mse": "generated states (held-out one-step prediction)",   # initial-fit evaluation
    "heldout_reward_mse": "generated rewards (held-out one-step prediction)",
    "is_ess": "importance weights",                    # adept.importance stats
    "is_max_weight": "importance weights",
    "is_mean_weight": "importance weights",
    "is_log_ratio_mean": "importance weights (policy log-probabilities)",
}


def check_finite(metrics: dict[str, torch.Tensor], step: int) -> None:
    """Raise FloatingPointError naming the component and step if any metric is NaN/inf.

    One host sync for the whole dict: call it at the logging cadence, not every update.
    """
    names = [name for name, value in metrics.items() if torch.is_tensor(value) and value.is_floating_point()]
    if not names:
        return
    values = torch.stack([metrics[name].detach().float().reshape(()) for name in names]).cpu()
    bad = [(name, value) for name, value in zip(names, values.tolist()) if not math.isfinite(value)]
    if bad:
        described = ", ".join(f"{COMPONENTS.get(name.rsplit('/', 1)[-1], name)} ({name}={value})"
                              for name, value in bad)
        raise FloatingPointError(
            f"world model produced non-finite values at step {step}: {described}. Check the data for "
            f"NaN/inf, lower world_model.lr, set world_model.grad_clip_norm (e.g. 1.0), or lower the "
            f"importance-weight clip (importance.max_weight).")


def read_world_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a file written by WorldModel.save; a corrupt or foreign file is a one-line UserError."""
    from adept.outputs import load_torch_file

    return load_torch_file(path, "world model saved by WorldModel.save",
                           f"pass a model written by `python -m adept world-model --out {path} ...`",
                           fmt=CHECKPOINT_FORMAT, required=("obs_dim", "act_dim", "config", "model", "optimizer"),
                           map_location=map_location)


class WorldModel(nn.Module):
    """eps_theta(s'_k, k | s, a) and r_eta(s, a, s') with their Adam optimizer and data statistics."""

    def __init__(self, obs_dim: int, act_dim: int, config: WorldModelConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.config = config = config or WorldModelConfig()
        config.validate()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be >= 1, got obs_dim={obs_dim}, act_dim={act_dim}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.schedule = DiffusionSchedule(config.diffusion_steps, config.cosine_s)
        # Denoiser input: noisy s', masked condition (s, a), the condition mask, embedding of k.
        denoiser_in = obs_dim + (obs_dim + act_dim) + 1 + config.time_embedding_dim
        self.denoiser = mlp(denoiser_in, obs_dim, config.hidden_dim, config.depth, activation=nn.SiLU)
        # r_eta outputs [normalized reward, terminal logit].
        self.reward_model = mlp(2 * obs_dim + act_dim, 2, config.reward_hidden_dim, config.reward_depth)
        # Data statistics (filled by from_dataset / set_data_stats, saved in the state dict).
        for name, dim in [("obs_mean", obs_dim), ("obs_std", obs_dim), ("obs_min", obs_dim), ("obs_max", obs_dim),
                          ("reward_mean", 1), ("reward_std", 1), ("reward_min", 1), ("reward_max", 1)]:
            fill = 1.0 if name.endswith("std") else 0.0
            self.register_buffer(name, torch.full((dim,), fill))
        self.to(device)
        self.optimizer = adam(self.parameters(), config.lr, self.device)  # fused kernel where available
        self._update_step, self._sampling_denoise = WorldModel._update, WorldModel.denoise  # see set_compile
        self.trained_on: dict | None = None  # {"env", "dataset", "source"} of the fit's data, saved with it
        self.metadata: dict = {}  # what `save` was given (the fit's held-out split)

    check_finite = staticmethod(check_finite)

    def set_compile(self, mode: CompileMode | bool) -> None:
        """Compile the Adam step (`update`: initial fit and IWU) and the denoiser calls of the guided
        sampling loop (`sample_next`) per `mode` ("off" | "on" | "auto", baselines/compile.py), with the
        Adam implementation that suits it (its state is kept). The loop's noise draws use the caller's
        generator and stay outside the compiled code, so compiled and eager sampling draw the same numbers."""
        compiled = should_compile(mode, self.device)
        optimizer = adam(self.parameters(), self.config.lr, self.device, compiled)
        load_optimizer_state(optimizer, self.optimizer.state_dict())
        self.optimizer = optimizer
        self._update_step = compile_step(WorldModel._update, compiled, self.device)
        self._sampling_denoise = compile_step(WorldModel.denoise, compiled, self.device)

    @property
    def device(self) -> torch.device:
        return self.obs_mean.device

    def apply_runtime_overrides(self, overrides: dict | None) -> None:
        """Change settings that do not alter the trained networks (guidance, clipping, optimizer, batch sizes).

        Keys that define the architecture or the noise schedule raise ConfigError: the saved
        networks were trained with them.
        """
        overrides = dict(overrides or {})
        fixed = sorted(set(overrides) & set(ARCHITECTURE_KEYS))
        if fixed:
            raise ConfigError(f"world_model.{fixed} cannot change on a trained world model (it was trained with "
                              f"{ {key: getattr(self.config, key) for key in fixed} }); train a new one with "
                              f"`python -m adept world-model --set world_model.KEY=VALUE`")
        self.config = from_dict(WorldModelConfig, overrides, "world_model", base=self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr

    # ----------------------------------------------------------------- construction / persistence
    @classmethod
    def from_dataset(cls, dataset, config: WorldModelConfig | None = None,
                     device: str | torch.device = "cpu") -> "WorldModel":
        """Build a model whose normalization and clipping ranges come from an OfflineDataset."""
        for name in ("observations", "actions", "rewards", "next_observations"):
            if not hasattr(dataset, name):
                raise ValueError(f"dataset has no field {name!r}; expected an adept.data.OfflineDataset")
        return cls.from_arrays(dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations,
                               config, device)

    @classmethod
    def from_arrays(cls, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                    next_observations: np.ndarray, config: WorldModelConfig | None = None,
                    device: str | torch.device = "cpu") -> "WorldModel":
        """Same as from_dataset for raw arrays (N, obs_dim), (N, act_dim), (N,), (N, obs_dim)."""
        obs, act, rew, next_obs = (np.asarray(x, np.float32) for x in
                                   (observations, actions, rewards, next_observations))
        n = len(obs)
        if obs.ndim != 2 or act.ndim != 2 or next_obs.shape != obs.shape or rew.shape != (n,) \
                or len(act) != n or n == 0:
            raise ValueError(
                f"transition arrays have inconsistent shapes: observations {obs.shape}, actions {act.shape}, "
                f"rewards {rew.shape}, next_observations {next_obs.shape}; expected (N, obs_dim), (N, act_dim), "
                f"(N,), (N, obs_dim) with N >= 1")
        for name, array in [("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", next_obs)]:
            if not np.isfinite(array).all():
                raise ValueError(f"{name} contain NaN or inf values; clean or regenerate the dataset")
        model = cls(obs.shape[1], act.shape[1], config, device)
        model.set_data_stats(obs, next_obs, rew)
        return model

    @torch.no_grad()
    def set_data_stats(self, observations: np.ndarray, next_observations: np.ndarray,
                       rewards: np.ndarray) -> None:
        """Per-dimension z-score statistics (from observations) and data ranges (for clipping)."""
        observations, rewards = observations.astype(np.float64), rewards.astype(np.float64)
        both = np.concatenate([observations, next_observations])
        values = {
            "obs_mean": observations.mean(0), "obs_std": np.maximum(observations.std(0), MIN_STD),
            "obs_min": both.min(0), "obs_max": both.max(0),
            "reward_mean": rewards.mean(keepdims=True), "reward_std": np.maximum(rewards.std(keepdims=True), MIN_STD),
            "reward_min": rewards.min(keepdims=True), "reward_max": rewards.max(keepdims=True),
        }
        for name, value in values.items():
            getattr(self, name).copy_(torch.as_tensor(np.asarray(value, np.float32)))

    @property
    def reward_abs_max(self) -> torch.Tensor:
        """r_max of Theorem 4.4: the largest |r| in the data (scalar tensor)."""
        return torch.maximum(self.reward_min.abs(), self.reward_max.abs()).squeeze(0)

    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        """Atomically write config, dimensions, parameters, data statistics, optimizer state and
        `metadata` (e.g. the fit's held-out split, adept.world_model_training.world_model_split)."""
        payload = {"format": CHECKPOINT_FORMAT, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                   "config": to_dict(self.config), "model": self.state_dict(),
                   "optimizer": self.optimizer.state_dict(), "trained_on": self.trained_on,
                   "metadata": metadata or {}}
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "WorldModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"world model file {path} does not exist; train one with "
                                    f"`python -m adept world-model --out {path} ...`")
        payload = read_world_model_file(path, map_location=device)
        config = from_dict(WorldModelConfig, payload["config"], "world_model")
        model = cls(payload["obs_dim"], payload["act_dim"], config, device)
        model.load_state_dict(payload["model"])
        model.optimizer.load_state_dict(payload["optimizer"])
        model.trained_on = payload.get("trained_on")
        model.metadata = payload.get("metadata") or {}
        return model

    # ----------------------------------------------------------------- normalization
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def denormalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs * self.obs_std + self.obs_mean

    # ----------------------------------------------------------------- networks
    def denoise(self, noisy_next: torch.Tensor, k: torch.Tensor, condition: torch.Tensor,
                condition_mask: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_k, k | y): condition y = normalized (s, a); mask 0 replaces y by the null condition."""
        inputs = [noisy_next, condition * condition_mask, condition_mask,
                  timestep_embedding(k, self.config.time_embedding_dim)]
        return self.denoiser(torch.cat(inputs, dim=-1))

    def _reward_head(self, norm_obs: torch.Tensor, act: torch.Tensor,
                     norm_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.reward_model(torch.cat([norm_obs, act, norm_next], dim=-1))
        return out[:, 0], out[:, 1]  # normalized reward, terminal logit

    # ----------------------------------------------------------------- training
    def per_sample_loss(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor,
                        terminals: torch.Tensor, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """l_i of Algorithm 1: ||eps - eps_theta||^2 + ||r - r_eta||^2 (+ weighted terminal BCE), shape (B,).

        Squared errors are averaged over dimensions (states and rewards in normalized units); the two
        networks have separate parameters, so this scale choice only matters through gradient clipping.
        """
        batch = obs.shape[0]
        norm_obs, norm_next = self.normalize_obs(obs), self.normalize_obs(next_obs)
        condition = torch.cat([norm_obs, act], dim=-1)
        k = self.schedule.sample_steps(batch, obs.device, generator)
        noise = torch.randn(norm_next.shape, device=obs.device, generator=generator)
        noisy_next = self.schedule.q_sample(norm_next, k, noise)
        keep = torch.rand(batch, 1, device=obs.device, generator=generator) >= self.config.cond_drop_prob
        eps_pred = self.denoise(noisy_next, k, condition, keep.float())
        denoiser_loss = (eps_pred - noise).square().mean(-1)

        reward_pred, terminal_logit = self._reward_head(norm_obs, act, norm_next)
        reward_loss = (reward_pred - (rew - self.reward_mean) / self.reward_std).square()
        loss = denoiser_loss + reward_loss
        metrics = {"denoiser_loss": denoiser_loss.mean().detach(), "reward_loss": reward_loss.mean().detach()}
        if self.config.predict_terminal:
            terminal_loss = F.binary_cross_entropy_with_logits(terminal_logit, terminals.float(), reduction="none")
            loss = loss + self.config.terminal_loss_weight * terminal_loss
            metrics["terminal_loss"] = terminal_loss.mean().detach()
        return loss, metrics

    def update(self, batch, weights: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One Adam step on Eq. (3): (1/N) sum_i w_i l_i; `weights=None` means all ones (initial fit).

        `batch` has the fields of baselines.replay.Batch (observations, actions, rewards,
        next_observations, dones), raw units, on the model's device.
        """
        return self._update_step(self, batch, weights, generator)

    def _update(self, batch, weights: torch.Tensor | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        loss_per_sample, metrics = self.per_sample_loss(batch.observations, batch.actions, batch.rewards,
                                                        batch.next_observations, batch.dones, generator)
        loss = (loss_per_sample * weights).mean() if weights is not None else loss_per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip_norm is not None:
            metrics["grad_norm"] = nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip_norm)
        self.optimizer.step()
        metrics["loss"] = loss.detach()
        return metrics

    # ----------------------------------------------------------------- generation (policy evaluation)
    @torch.no_grad()
    def sample_next(self, obs: torch.Tensor, act: torch.Tensor, guidance_weight: float | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """K-step guided reverse diffusion -> next observations in raw units (not clipped).

        `guidance_weight` is read in `config.guidance_convention` (default: config.guidance_weight).
        `clip_denoised` clamps x0_hat in steps K..2 only: the last step's x0_hat IS the sample, and
        clipping the sample is `step`'s job under `clip_to_data`, so that one key decides it.
        """
        weight = self.config.guidance_weight if guidance_weight is None else guidance_weight
        eq2_weight = guidance_eq2_weight(weight, self.config.guidance_convention)
        condition = torch.cat([self.normalize_obs(obs), act], dim=-1)
        bounds = (self.normalize_obs(self.obs_min), self.normalize_obs(self.obs_max)) \
            if self.config.clip_denoised else None
        denoise = lambda *args: self._sampling_denoise(self, *args)  # noqa: E731 (compiled by set_compile)
        norm_next = self.schedule.sample(denoise, condition, self.obs_dim, eq2_weight, generator, bounds,
                                         clamp_last_step=False)
        return self.denormalize_obs(norm_next)

    @torch.no_grad()
    def reward_terminal(self, obs: torch.Tensor, act: torch.Tensor,
                        next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r_eta(s, a, s') -> (reward in raw units (B,), terminal flags (B,) bool)."""
        reward, terminal_logit = self._reward_head(self.normalize_obs(obs), act, self.normalize_obs(next_obs))
        reward = reward * self.reward_std + self.reward_mean
        if not self.config.predict_terminal:
            return reward, torch.zeros_like(reward, dtype=torch.bool)
        threshold = math.log(self.config.terminal_threshold / (1.0 - self.config.terminal_threshold))
        return reward, terminal_logit > threshold

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model transition for PE: (next_obs, reward, terminal); s' and r are clipped to the data range
        iff `clip_to_data` (the only clip of generated values: `sample_next` never clips its output)."""
        next_obs = self.sample_next(obs, act, generator=generator)
        if self.config.clip_to_data:
            next_obs = torch.clamp(next_obs, self.obs_min, self.obs_max)
        reward, terminal = self.reward_terminal(obs, act, next_obs)
        if self.config.clip_to_data:
            reward = torch.clamp(reward, self.reward_min, self.reward_max)
        return next_obs, reward, terminal

