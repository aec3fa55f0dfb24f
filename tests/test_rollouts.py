"""Guided policy evaluation: batched H-step rollouts that stop at predicted terminals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adept.data import OfflineDataset
from adept.rollouts import generate_rollouts
from adept.world_model import WorldModel, WorldModelConfig

OBS_DIM, ACT_DIM, HORIZON = 4, 2, 6


class LinearTanhPolicy:
    """a = tanh(W s) (+ N(0, 0.1) noise unless deterministic); records the `deterministic` flags it gets."""

    def __init__(self, seed: int = 0):
        self.weight = torch.randn(OBS_DIM, ACT_DIM, generator=torch.Generator().manual_seed(seed))
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.flags: list[bool] = []

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        self.flags.append(deterministic)
        mean = obs @ self.weight
        if not deterministic:
            mean = mean + 0.1 * torch.randn(mean.shape, generator=self.generator)
        return torch.tanh(mean)


def tiny_model(terminal: str) -> WorldModel:
    """An untrained tiny WorldModel whose r_eta is a single linear layer (reward_depth=0), so the
    terminal logit can be set exactly: "always", "never", or "state" (terminal iff normalized s'_0 > 0.5)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(256, OBS_DIM)).astype(np.float32)
    data = OfflineDataset(observations=obs, actions=rng.uniform(-1, 1, (256, ACT_DIM)).astype(np.float32),
                          rewards=rng.normal(size=256).astype(np.float32),
                          next_observations=rng.normal(size=(256, OBS_DIM)).astype(np.float32),
                          terminals=np.zeros(256, bool), timeouts=np.zeros(256, bool), env="toy",
                          dataset="synthetic", source="test")
    torch.manual_seed(0)
    config = WorldModelConfig(hidden_dim=32, depth=2, reward_hidden_dim=8, reward_depth=0, diffusion_steps=3,
                              time_embedding_dim=8)
    model = WorldModel.from_dataset(data, config)
    head = model.reward_model[-1]  # Linear(2 * obs_dim + act_dim -> [reward, terminal logit])
    with torch.no_grad():
        head.weight[1].zero_()
        head.bias[1] = {"always": 100.0, "never": -100.0, "state": -50.0}[terminal]
        if terminal == "state":  # input layout [s, a, s'] normalized: logit = 100 * (s'_0 - 0.5)
            head.weight[1, OBS_DIM + ACT_DIM] = 100.0
    return model


def test_rollouts_stop_at_the_first_terminal_and_stay_contiguous():
    model, policy = tiny_model("state"), LinearTanhPolicy()
    start = torch.randn(64, OBS_DIM, generator=torch.Generator().manual_seed(5))
    batch = generate_rollouts(model, policy, start, horizon=HORIZON, gamma=0.9,
                              generator=torch.Generator().manual_seed(0))
    # the recorded terminal flags are the model's own predictions for those transitions
    _, terminal = model.reward_terminal(batch.observations, batch.actions, batch.next_observations)
    assert torch.equal(batch.dones, terminal.float())
    assert 0 < batch.dones.sum() < len(batch)  # some, not all, trajectories end early
    # split the flat batch back into trajectories: each starts at a start state, is contiguous,
    # has a done only on its last transition, and ends either at a done or after H steps
    starts = [i for i in range(len(batch)) if i == 0 or not torch.equal(batch.observations[i],
                                                                         batch.next_observations[i - 1])]
    assert len(starts) == 64
    lengths = np.diff(starts + [len(batch)])
    for traj, (first, length) in enumerate(zip(starts, lengths)):
        assert torch.equal(batch.observations[first], start[traj])
        dones = batch.dones[first:first + length]
        assert dones[:-1].sum() == 0
        assert dones[-1] == 1 or length == HORIZON
    stats = batch.stats
    assert stats["rollout_length_mean"].item() == pytest.approx(lengths.mean())
    assert stats["num_transitions"].item() == len(batch)
    assert stats["terminal_rate"].item() == pytest.approx(batch.dones.sum().item() / 64)
    discounted = [sum(0.9**t * batch.rewards[first + t].item() for t in range(length))
                  for first, length in zip(starts, lengths)]
    assert stats["model_return"].item() == pytest.approx(np.mean(discounted), rel=1e-5)
    assert stats["reward_mean"].item() == pytest.approx(batch.rewards.mean().item(), rel=1e-5)
    assert policy.flags == [False] * HORIZON  # a ~ pi(s): sampled actions by default, one call per step


@pytest.mark.parametrize("terminal, length", [("always", 1), ("never", HORIZON)])
def test_forced_terminal_heads_give_length_one_or_full_horizon(terminal, length):
    model = tiny_model(terminal)
    start = torch.randn(10, OBS_DIM)
    batch = generate_rollouts(model, LinearTanhPolicy(), start, horizon=HORIZON, deterministic_policy=True)
    assert len(batch) == 10 * length
    assert batch.stats["rollout_length_mean"] == length
    assert batch.dones.sum() == (10 if terminal == "always" else 0)
    for field in (batch.observations, batch.actions, batch.rewards, batch.next_observations, batch.dones):
        assert field.shape[0] == len(batch) and field.dtype == torch.float32


def test_rollouts_are_reproducible_and_within_the_data_range():
    model = tiny_model("never")
    start = torch.randn(16, OBS_DIM)
    first = generate_rollouts(model, LinearTanhPolicy(seed=2), start, generator=torch.Generator().manual_seed(1))
    second = generate_rollouts(model, LinearTanhPolicy(seed=2), start, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.next_observations, second.next_observations)
    assert (first.next_observations >= model.obs_min).all() and (first.next_observations <= model.obs_max).all()
    assert (first.rewards >= model.reward_min).all() and (first.rewards <= model.reward_max).all()


def test_bad_rollout_arguments_are_rejected():
    model = tiny_model("never")
    with pytest.raises(ValueError, match="horizon"):
        generate_rollouts(model, LinearTanhPolicy(), torch.zeros(2, OBS_DIM), horizon=0)
    with pytest.raises(ValueError, match=r"start_obs must have shape \(N, 4\)"):
        generate_rollouts(model, LinearTanhPolicy(), torch.zeros(2, OBS_DIM + 1))
