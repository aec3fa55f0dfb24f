"""Guided policy evaluation (PE, Algorithm 1): H-step synthetic rollouts of the current policy in the world model.

All N trajectories advance together, one batched world-model step per time step (a Python loop over
the H steps only). A trajectory stops at the first predicted terminal: that transition is kept and
everything after it is dropped. Finished trajectories keep being stepped (their results are masked
out by an `alive` mask) so that nothing syncs with the host inside the loop; the valid transitions
are compacted once at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from adept.world_model import WorldModel


class Policy(Protocol):
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor: ...


@dataclass
class RolloutBatch:
    """Valid synthetic transitions, flattened trajectory by trajectory (raw units, on the device).

    `dones` are the predicted terminals as float32 (the layout of baselines.replay.Batch), so the
    five tensors can go straight into `TensorBuffer.add`. `stats` holds scalar tensors:
    rollout_length_mean, terminal_rate (fraction of trajectories that terminated), reward_mean
    (per valid transition), model_return (J-hat: mean discounted sum of rewards over the H steps),
    generated_state_abs_mean (NaN if any generated state is NaN; see world_model.check_finite),
    num_transitions.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    stats: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.observations.shape[0]


@torch.no_grad()
def generate_rollouts(world_model: WorldModel, policy: Policy, start_obs: torch.Tensor, horizon: int = 10,
                      gamma: float = 0.99, generator: torch.Generator | None = None,
                      deterministic_policy: bool = False) -> RolloutBatch:
    """Roll `policy` out for up to `horizon` steps from each of the N start states (N, obs_dim), raw units.

    Actions are a ~ pi(s) (`deterministic_policy=False`, as in the paper); `generator` drives the
    world model's sampling noise (the policy uses its own randomness).
    """
    if horizon < 1:
        raise ValueError(f"rollout horizon must be >= 1, got {horizon}")
    if start_obs.ndim != 2 or start_obs.shape[1] != world_model.obs_dim:
        raise ValueError(f"start_obs must have shape (N, {world_model.obs_dim}), got {tuple(start_obs.shape)}")
    n, device = start_obs.shape[0], start_obs.device
    obs_dim, act_dim = world_model.obs_dim, world_model.act_dim
    observations = torch.empty(horizon, n, obs_dim, device=device)
    actions = torch.empty(horizon, n, act_dim, device=device)
    rewards = torch.empty(horizon, n, device=device)
    next_observations = torch.empty(horizon, n, obs_dim, device=device)
    terminals = torch.empty(horizon, n, dtype=torch.bool, device=device)
    valid = torch.empty(horizon, n, dtype=torch.bool, device=device)

    obs = start_obs
    alive = torch.ones(n, dtype=torch.bool, device=device)
    for t in range(horizon):
        action = policy.act(obs, deterministic=deterministic_policy)
        next_obs, reward, terminal = world_model.step(obs, action, generator)
        observations[t], actions[t], rewards[t], next_observations[t] = obs, action, reward, next_obs
        terminals[t], valid[t] = terminal, alive
        alive = alive & ~terminal
        obs = next_obs

    discounts = gamma ** torch.arange(horizon, device=device, dtype=torch.float32)
    masked_rewards = torch.where(valid, rewards, 0.0)
    lengths = valid.sum(0).float()
    num_valid = valid.sum()
    # (H, N) -> (N, H) so each trajectory's transitions are contiguous after compaction.
    keep = valid.T
    batch = RolloutBatch(
        observations=observations.transpose(0, 1)[keep],
        actions=actions.transpose(0, 1)[keep],
        rewards=rewards.T[keep],
        next_observations=next_observations.transpose(0, 1)[keep],
        dones=terminals.T[keep].float(),
        stats={
            "rollout_length_mean": lengths.mean(),
            "terminal_rate": (terminals & valid).any(0).float().mean(),
            "reward_mean": masked_rewards.sum() / num_valid,
            "model_return": (masked_rewards * discounts.unsqueeze(1)).sum(0).mean(),
            "generated_state_abs_mean": torch.where(valid.unsqueeze(-1), next_observations.abs(), 0.0).sum()
            / (num_valid * obs_dim),
            "num_transitions": num_valid.float(),
        },
    )
    return batch
