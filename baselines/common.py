"""Parts shared by every learner: networks, data statistics, target updates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, depth: int = 2,
        activation: type[nn.Module] = nn.ReLU, layer_norm: bool = False) -> nn.Sequential:
    """`depth` hidden layers of width `hidden_dim`, then a linear output layer."""
    if depth < 0:
        raise ValueError(f"mlp depth must be >= 0, got {depth}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden_dim))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden_dim))
        layers.append(activation())
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@dataclass
class DataStats:
    """Normalization computed once from the offline data and applied inside learners.

    Learners see raw observations and rewards everywhere (offline batches, synthetic batches,
    evaluation, rollouts) and normalize internally, so every path uses the same transform.
    `reward_scale`/`reward_shift` map r -> r * reward_scale + reward_shift.
    """

    obs_mean: np.ndarray
    obs_std: np.ndarray
    reward_scale: float = 1.0
    reward_shift: float = 0.0

    @classmethod
    def identity(cls, obs_dim: int) -> "DataStats":
        return cls(np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32))

    def to_dict(self) -> dict:
        return {"obs_mean": np.asarray(self.obs_mean, np.float32).tolist(),
                "obs_std": np.asarray(self.obs_std, np.float32).tolist(),
                "reward_scale": float(self.reward_scale), "reward_shift": float(self.reward_shift)}

    @classmethod
    def from_dict(cls, d: dict) -> "DataStats":
        return cls(np.asarray(d["obs_mean"], np.float32), np.asarray(d["obs_std"], np.float32),
                   float(d["reward_scale"]), float(d["reward_shift"]))


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging target <- (1 - tau) * target + tau * source, fused over all parameters."""
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    torch._foreach_lerp_(target_params, source_params, tau)
