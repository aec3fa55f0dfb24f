"""Ensemble of probabilistic dynamics models, the world model of MOPO (Yu et al. 2020) and COMBO (Yu et al. 2021).

Each of E members is an MLP f_i(s, a) -> N(mu_i, diag(sigma_i^2)) over y = (s' - s, r), the
"probabilistic ensemble" of PETS and MBPO that MOPO and COMBO train:

- all members are evaluated with one batched matmul per layer (weights (E, in, out),
  baselines.common.EnsembleLinear), swish activations, inputs (s, a) z-scored with the training data's
  statistics, targets in raw units (as the MOPO/MBPO code: the penalty's lambda is tuned in them);
- the log-variance is squashed softly into learned bounds (PETS):
  log sigma^2 = max_lv - softplus(max_lv - raw), then min_lv + softplus(. - min_lv);
- loss per member: mean over the batch and dims of (mu - y)^2 / sigma^2 + log sigma^2, summed over
  members, + 0.01 (sum max_lv - sum min_lv) + per-layer weight decay (`fit_loss`);
- `elites`: the members with the lowest held-out MSE (adept.ensemble_training picks them).

`step` is one model transition as the rollouts use it (adept.rollouts.generate_rollouts and the
Theorem 4.4 diagnostics take it exactly like adept.world_model.WorldModel.step): every member
predicts, one elite drawn uniformly per row is sampled, s' = s + delta, and the env's termination
rule (the MOPO code's static termination functions, written for the gymnasium -v4 observations)
decides terminals. `step_with_uncertainty` also returns MOPO's penalty
u(s, a) = max_i ||sigma_i(s, a)||_2 over ALL members (the MOPO code's "penalty_learned_var"; the
paper writes max_i ||Sigma_i(s, a)||_F, which `penalty_norm="variance"` computes).

Inputs and outputs are raw units; no method syncs with the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adept.config import from_dict, require, to_dict
from adept.outputs import atomic_torch_save
from baselines.common import EnsembleLinear

CHECKPOINT_FORMAT = "adept-ensemble/1"
MIN_STD = 1e-3        # floor on the data statistics' standard deviations (as adept.world_model)
PenaltyNorm = Literal["std", "variance"]


@dataclass
class EnsembleConfig:
    """Sizes and optimisation of the ensemble; defaults are MOPO's and MBPO's (code: tianheyu927/mopo,
    examples/config/d4rl/base.py; OfflineRL-Kit run_mopo.py), see docs/notes/model-based-baselines.md."""

    num_members: int = 7                # "num_networks"
    num_elites: int = 5                 # "num_elites", chosen by held-out MSE
    hidden_dim: int = 200
    depth: int = 4                      # hidden layers
    lr: float = 1e-3
    batch_size: int = 256               # per member
    # L2 coefficient per layer (depth hidden layers, then the output layer), loss += wd/2 ||W||^2
    weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    initial_max_logvar: float = 0.5     # learned log-variance bounds, per output dimension
    initial_min_logvar: float = -10.0
    logvar_bound_weight: float = 0.01   # 0.01 (sum max_lv - sum min_lv) keeps the bounds tight
    bootstrap: bool = True              # each member trains on its own resample (with replacement) of D

    def validate(self) -> None:
        for name in ("num_members", "num_elites", "hidden_dim", "depth", "batch_size"):
            require(getattr(self, name) >= 1, f"ensemble.{name} must be >= 1, got {getattr(self, name)}")
        require(self.num_elites <= self.num_members,
                f"ensemble.num_elites ({self.num_elites}) must be <= ensemble.num_members ({self.num_members})")
        require(self.lr > 0, f"ensemble.lr must be > 0, got {self.lr}")
        require(len(self.weight_decay) == self.depth + 1,
                f"ensemble.weight_decay needs one coefficient per layer (depth + 1 = {self.depth + 1}: the "
                f"hidden layers, then the output layer), got {len(self.weight_decay)}: {list(self.weight_decay)}")
        require(all(w >= 0 for w in self.weight_decay), f"ensemble.weight_decay must be >= 0, got {self.weight_decay}")
        require(self.initial_min_logvar < self.initial_max_logvar,
                f"ensemble.initial_min_logvar ({self.initial_min_logvar}) must be < initial_max_logvar "
                f"({self.initial_max_logvar})")
        require(self.logvar_bound_weight >= 0,
                f"ensemble.logvar_bound_weight must be >= 0, got {self.logvar_bound_weight}")


# ------------------------------------------------------------------------------------------- terminals
# Termination rules of the gymnasium -v4 locomotion envs on observations (obs[0] = torso height z,
# obs[1] = torso angle, both qpos entries), as the MOPO code's static termination functions.
# hopper: healthy iff every state entry after z is in (-100, 100), 0.7 < z and |angle| < 0.2;
# walker2d: healthy iff 0.8 < z < 2 and -1 < angle < 1; halfcheetah never terminates.
def _hopper_terminal(next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (torch.isfinite(next_obs).all(-1) & (next_obs[:, 1:].abs() < 100.0).all(-1)
               & (z > 0.7) & (angle.abs() < 0.2))
    return ~healthy


def _walker2d_terminal(next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[:, 0], next_obs[:, 1]
    return ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def _never_terminal(next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


TERMINATION_RULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hopper": _hopper_terminal, "walker2d": _walker2d_terminal, "halfcheetah": _never_terminal}


def termination_rule(env: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if env not in TERMINATION_RULES:
        raise ValueError(f"no termination rule for env {env!r}; known envs are {sorted(TERMINATION_RULES)}")
    return TERMINATION_RULES[env]


def mopo_penalty(std: torch.Tensor, norm: PenaltyNorm = "std") -> torch.Tensor:
    """u(s, a) = max over members of the norm of the predicted std (or variance) vector: (E, B, D) -> (B,).

    "std": ||sigma_i||_2 (the MOPO code); "variance": ||Sigma_i||_F = ||sigma_i^2||_2 (the paper's formula)."""
    if norm == "std":
        return torch.linalg.vector_norm(std, dim=-1).amax(0)
    if norm == "variance":
        return torch.linalg.vector_norm(std.square(), dim=-1).amax(0)
    raise ValueError(f"unknown penalty norm {norm!r}; valid norms are ['std', 'variance']")


# ----------------------------------------------------------------------------------------------- model
class EnsembleDynamics(nn.Module):
    """E probabilistic MLPs over (s' - s, r) given (s, a), with the data statistics and the elites."""

    def __init__(self, obs_dim: int, act_dim: int, env: str, config: EnsembleConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.config = config = config or EnsembleConfig()
        config.validate()
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim and act_dim must be >= 1, got obs_dim={obs_dim}, act_dim={act_dim}")
        self.obs_dim, self.act_dim, self.env = obs_dim, act_dim, env
        self.terminal = termination_rule(env)
        out_dim = obs_dim + 1                               # (delta s, r)
        widths = [obs_dim + act_dim] + [config.hidden_dim] * config.depth + [2 * out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(w_in, w_out, config.num_members)
                                    for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.max_logvar = nn.Parameter(torch.full((out_dim,), config.initial_max_logvar))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), config.initial_min_logvar))
        # Statistics (filled by set_data_stats, saved in the state dict): input z-scoring, and the
        # observation / reward scales the diagnostics report errors in.
        for name, dim in [("input_mean", obs_dim + act_dim), ("input_std", obs_dim + act_dim),
                          ("obs_mean", obs_dim), ("obs_std", obs_dim), ("reward_std", 1),
                          ("reward_min", 1), ("reward_max", 1)]:
            self.register_buffer(name, torch.full((dim,), 1.0 if name.endswith("std") else 0.0))
        self.register_buffer("elites", torch.arange(config.num_elites))
        self.metadata: dict = {}          # what `save` was given (held-out split, fit report)
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.input_mean.device

    @torch.no_grad()
    def set_data_stats(self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        inputs = np.concatenate([observations, actions], axis=1).astype(np.float64)
        rewards = np.asarray(rewards, np.float64)
        values = {"input_mean": inputs.mean(0), "input_std": np.maximum(inputs.std(0), MIN_STD),
                  "obs_mean": inputs[:, :self.obs_dim].mean(0),
                  "obs_std": np.maximum(inputs[:, :self.obs_dim].std(0), MIN_STD),
                  "reward_std": np.maximum(rewards.std(keepdims=True), MIN_STD),
                  "reward_min": rewards.min(keepdims=True), "reward_max": rewards.max(keepdims=True)}
        for name, value in values.items():
            getattr(self, name).copy_(torch.as_tensor(np.asarray(value, np.float32)))

    @torch.no_grad()
    def set_elites(self, elites) -> None:
        elites = torch.as_tensor(elites, dtype=torch.long, device=self.device).flatten()
        if elites.numel() != self.config.num_elites or elites.unique().numel() != elites.numel() \
                or not ((0 <= elites) & (elites < self.config.num_members)).all():
            raise ValueError(f"elites must be {self.config.num_elites} distinct member indices in "
                             f"[0, {self.config.num_members}), got {elites.tolist()}")
        self.elites.copy_(elites)

    # ---- the interface the rollouts and diagnostics use (as adept.world_model.WorldModel) -----------
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    @property
    def reward_abs_max(self) -> torch.Tensor:
        """r_max of Theorem 4.4: the largest |r| in the data (scalar tensor)."""
        return torch.maximum(self.reward_min.abs(), self.reward_max.abs()).squeeze(0)

    # ---- networks ----------------------------------------------------------------------------------
    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of y = (s' - s, r) for every member: (B, .) -> (E, B, obs_dim + 1) each.

        `obs`/`act` may also be (E, B, .): one batch per member (training)."""
        x = (torch.cat([obs, act], dim=-1) - self.input_mean) / self.input_std
        for layer in self.layers[:-1]:
            x = F.silu(layer(x))
        mean, raw_logvar = self.layers[-1](x).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def fit_loss(self, obs: torch.Tensor, act: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss on per-member batches (E, B, .): Gaussian NLL (up to constants) summed over
        members, + log-variance bound regularizer + weight decay."""
        target = torch.cat([next_obs - obs, rewards.unsqueeze(-1)], dim=-1)
        mean, logvar = self(obs, act)
        nll = ((mean - target).square() * torch.exp(-logvar) + logvar).mean(dim=(1, 2))   # (E,)
        bounds = self.config.logvar_bound_weight * (self.max_logvar.sum() - self.min_logvar.sum())
        decay = sum(0.5 * wd * layer.weight.square().sum()
                    for wd, layer in zip(self.config.weight_decay, self.layers))
        loss = nll.sum() + bounds + decay
        return loss, {"loss": loss.detach(), "nll": nll.detach().mean(),
                      "mse": (mean - target).detach().square().mean(),
                      "max_logvar_mean": self.max_logvar.detach().mean(),
                      "min_logvar_mean": self.min_logvar.detach().mean()}

    @torch.no_grad()
    def member_mse(self, obs: torch.Tensor, act: torch.Tensor, rewards: torch.Tensor,
                   next_obs: torch.Tensor) -> torch.Tensor:
        """Held-out MSE of each member's mean prediction of (s' - s, r), raw units, mean over dims: (E,)."""
        target = torch.cat([next_obs - obs, rewards.unsqueeze(-1)], dim=-1)
        mean, _ = self(obs, act)
        return (mean - target).square().mean(dim=(1, 2))

    # ---- transitions ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step_with_uncertainty(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None,
                              penalty_norm: PenaltyNorm = "std"
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next_obs, reward, terminal, u) with u = mopo_penalty over all members; a random elite per row
        is sampled (its mean plus its std times standard normal noise from `generator`)."""
        mean, logvar = self(obs, act)                                       # (E, B, D)
        std = torch.exp(0.5 * logvar)
        rows = torch.arange(obs.shape[0], device=obs.device)
        pick = torch.randint(0, self.config.num_elites, (obs.shape[0],), device=obs.device, generator=generator)
        member = self.elites[pick]
        noise = torch.randn(mean.shape[1:], device=obs.device, generator=generator)
        sample = mean[member, rows] + std[member, rows] * noise
        next_obs = obs + sample[:, :-1]
        return next_obs, sample[:, -1], self.terminal(next_obs), mopo_penalty(std, penalty_norm)

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model transition (next_obs, reward, terminal), as WorldModel.step: no penalty."""
        next_obs, reward, terminal, _ = self.step_with_uncertainty(obs, act, generator)
        return next_obs, reward, terminal

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        """Atomically write config, sizes, env, parameters, statistics, elites and `metadata`."""
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                           "env": self.env, "config": to_dict(self.config), "model": self.state_dict(),
                           "metadata": metadata or {}}, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "EnsembleDynamics":
        payload = read_ensemble_file(path, map_location=device)
        config = from_dict(EnsembleConfig, payload["config"], "ensemble")
        model = cls(payload["obs_dim"], payload["act_dim"], payload["env"], config, device)
        model.load_state_dict(payload["model"])
        model.metadata = payload["metadata"]
        return model


def read_ensemble_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a file written by `EnsembleDynamics.save`; a missing, corrupt or foreign file is a
    one-line UserError."""
    from adept.outputs import load_torch_file

    return load_torch_file(path, "ensemble saved by EnsembleDynamics.save",
                           "fit one with `python -m adept ensemble --env ENV --out PATH ...`", fmt=CHECKPOINT_FORMAT,
                           required=("obs_dim", "act_dim", "env", "config", "model"), map_location=map_location)
