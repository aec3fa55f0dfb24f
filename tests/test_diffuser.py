"""Diffuser: the segment sampler (starts, padding, returns) and the losses on hand-computable cases, value
guidance moving the plan in the direction of the value's gradient by exactly the expected amount, plan
shapes, a run through the runner that resumes to the uninterrupted result, and the method's name rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from adept.data.dataset import OfflineDataset
from adept.methods import parse_method
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from baselines import make_learner
from baselines.diffuser import Diffuser
from baselines.replay import SegmentBatch, SegmentSampler, discounted_returns
from tests.conftest import synthetic_d4rl_arrays

TINY = {"hidden_dim": 8, "dim_mults": [1, 2, 4], "horizon": 8, "diffusion_steps": 4, "plan_samples": 3,
        "guide_steps": 1, "t_stopgrad": 1, "ema_start": 4, "ema_every": 2, "seed": 0}


def two_episodes() -> OfflineDataset:
    """hopper-shaped data: episode 0 has 3 steps and ends by termination, episode 1 has 5 steps (cut)."""
    arrays = synthetic_d4rl_arrays("hopper", episode_lengths=(3, 5), terminal_episodes=(0,), max_episode_steps=40)
    arrays["rewards"] = np.array([1, 2, 3, 1, 1, 1, 1, 1], np.float32)
    return OfflineDataset.from_arrays(arrays, env="hopper", dataset="random", source="generated")


class Zero(nn.Module):
    """A network that predicts 0 for every input (and records what it was given)."""

    def __init__(self, value: bool = False):
        super().__init__()
        self.value, self.inputs = value, []

    def forward(self, x, k):
        self.inputs.append((x.detach().clone(), k.clone()))
        return torch.zeros(x.shape[0]) if self.value else torch.zeros_like(x)


class Identity(nn.Module):
    """A U-Net that predicts x0_hat = x_k."""

    def forward(self, x, k):
        return x


ONE_LEVEL = {**TINY, "horizon": 2, "dim_mults": [1], "hidden_dim": 32}


# ------------------------------------------------------------------------------------- segment sampler

def test_discounted_returns_by_hand():
    returns = discounted_returns(np.array([1.0, 2.0, -7.0, 1.0, 1.0]), np.array([0, 0, 1, 0, 1], bool), 0.5)
    assert returns.tolist() == [0.25, -1.5, -7.0, 1.5, 1.0]


def test_segment_starts_padding_and_returns_by_hand():
    data = two_episodes()
    sampler = SegmentSampler(data, length=4, batch_size=5, device="cpu", discount=0.5, terminal_reward=-10.0,
                             generator=torch.Generator().manual_seed(0))
    # Diffuser's starts s < min(T - 1, 1000 - H): episode 0 (T = 3): 0, 1; episode 1 (T = 5): rows 3..6
    assert sampler.starts.tolist() == [0, 1, 3, 4, 5, 6]
    # returns with the terminal penalty on row 2: r = 1, 2, 3 - 10 -> 0.25, -1.5, -7; episode 1: 1.9375, ...
    assert sampler.returns.tolist() == [0.25, -1.5, -7.0, 1.9375, 1.875, 1.75, 1.5, 1.0]
    batch = sampler.segments_at(torch.tensor([1, 5]))
    assert batch.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert torch.equal(batch.observations[0, :2], torch.as_tensor(data.observations[1:3]))
    assert torch.equal(batch.observations[1, :3], torch.as_tensor(data.observations[5:8]))
    assert batch.observations[0, 2:].abs().sum() == 0 and batch.actions[1, 3].abs().sum() == 0
    assert batch.rewards.tolist() == [[2, 3, 0, 0], [1, 1, 1, 0]]  # the dataset's rewards; the penalty is in returns
    assert batch.returns.tolist() == [-1.5, 1.75]
    sample = sampler.sample()
    assert sample.observations.shape == (5, 4, 11) and sample.actions.shape == (5, 4, 3)
    assert set(sample.returns.tolist()) <= {0.25, -1.5, 1.9375, 1.875, 1.75, 1.5}


def test_segments_without_padding_and_the_error_when_none_fits():
    data = two_episodes()
    assert SegmentSampler(data, length=4, batch_size=2, device="cpu", pad=False).starts.tolist() == [3, 4]
    with pytest.raises(ValueError, match=r"no episode .* holds a segment of 6 steps \(longest episode: 5 steps"):
        SegmentSampler(data, length=6, batch_size=2, device="cpu", pad=False)


# ---------------------------------------------------------------------------------------------- losses

def test_diffusion_loss_on_a_hand_computed_case():
    """A U-Net that predicts 0: the error is x0 except at the conditioned first state; a_0 weighs 10."""
    learner = make_learner("diffuser", 1, 1, "cpu", overrides=ONE_LEVEL)
    learner.unet = Zero()
    x0 = torch.tensor([[[1.0, 5.0], [2.0, 3.0]]])           # (B=1, H=2, [a, s])
    noise = torch.tensor([[[0.5, -1.0], [2.0, 0.25]]])
    loss, a0_loss = learner.diffusion_loss(x0, torch.tensor([3]), noise)
    assert loss.item() == pytest.approx((10 * 1 + 0 + 4 + 9) / 4)
    assert a0_loss.item() == pytest.approx(1.0)
    # the U-Net saw x_3 = sqrt(ab_3) x0 + sqrt(1 - ab_3) noise with the first state replaced by s_0 = 5
    seen, k = learner.unet.inputs[0]
    ab = learner.schedule.alpha_bar[3]
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    expected[0, 0, 1] = 5.0
    assert k.tolist() == [3] and torch.allclose(seen, expected)


def test_value_loss_is_the_mse_of_the_returns():
    learner = make_learner("diffuser", 1, 1, "cpu", overrides=ONE_LEVEL)
    learner.value = Zero(value=True)
    x0 = torch.zeros(2, 2, 2)
    loss, mean = learner.value_loss(x0, torch.tensor([3.0, -1.0]), torch.tensor([1, 2]), torch.zeros_like(x0))
    assert loss.item() == pytest.approx((9 + 1) / 2) and mean.item() == 0.0


def test_update_trains_the_value_network_only_for_value_steps_and_keeps_ema_copies():
    learner = make_learner("diffuser", 11, 3, "cpu", overrides={**TINY, "value_steps": 2, "ema_start": 2, "ema_every": 1})
    batch = SegmentBatch(torch.randn(4, 8, 11), torch.rand(4, 8, 3) * 2 - 1, torch.zeros(4, 8), torch.ones(4, 8),
                         torch.randn(4))
    keys = [sorted(learner.update(batch)) for _ in range(3)]
    assert keys[0] == keys[1] == ["a0_loss", "diffusion_loss", "value_loss", "value_mean"]
    assert keys[2] == ["a0_loss", "diffusion_loss"]
    value_before = [p.clone() for p in learner.value.parameters()]
    learner.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(value_before, learner.value.parameters()))
    # update 2 (>= ema_start) averaged: the EMA U-Net is between the copy of update 1 and the live network
    assert not all(torch.equal(a, b) for a, b in zip(learner.unet_ema.parameters(), learner.unet.parameters()))


# -------------------------------------------------------------------------------------------- planning

def test_guidance_moves_the_plan_by_the_expected_amount():
    """J = sum of the plan's actions (gradient 1 on every action entry), a U-Net that predicts x0_hat = x_k, so
    x_{k-1} = c_k x_k + noise with c_k the sum of the posterior mean's coefficients. With the same noise, guided
    minus unguided plans differ only in their actions, by d with d <- c_k (d + n s Sigma_k) at every step
    k > t_stopgrad (n guide steps of scale s) and d <- c_k d at the others."""
    overrides = {**TINY, "guide_steps": 2, "t_stopgrad": 1, "guide_scale": 3.0, "normalize_obs": False,
                 "normalize_actions": False}
    plans = {}
    for scale in (0.0, 3.0):
        learner = make_learner("diffuser", 2, 1, "cpu", overrides={**overrides, "guide_scale": scale})
        learner.unet_ema = Identity()
        learner.value_ema = lambda x, k: x[..., :1].sum(dim=(1, 2))  # noqa: E731
        plans[scale] = learner.plan(torch.tensor([[0.5, -0.5]]), torch.Generator().manual_seed(7))
    schedule, d = learner.schedule, 0.0
    for k in range(4, 0, -1):
        if k > 1:
            d += 2 * 3.0 * schedule.posterior_variance[k].item()
        d *= schedule.posterior_x0_coef[k].item() + schedule.posterior_xk_coef[k].item()
    (guided, guided_obs, guided_values), (free, free_obs, _) = plans[3.0], plans[0.0]
    assert d > 0
    assert torch.allclose(guided - free, torch.full_like(free, d), atol=1e-5)
    assert torch.allclose(guided_obs, free_obs)
    assert torch.allclose(guided_obs[..., 0, :], torch.tensor([0.5, -0.5]).expand(1, 3, 2))  # s_0 = the state
    # the planner acts with the first action of the plan whose J (at k = 1) is highest
    learner.value_ema = lambda x, k: -x[..., :1].sum(dim=(1, 2))  # noqa: E731
    actions, _, values = learner.plan(torch.tensor([[0.5, -0.5]]), torch.Generator().manual_seed(1))
    act = learner.act(torch.tensor([[0.5, -0.5]]), generator=torch.Generator().manual_seed(1))
    assert act.item() == pytest.approx(actions[0, values[0].argmax(), 0, 0].clamp(-1, 1).item())


def test_plan_shapes_conditioning_and_action_range(tiny_random_dataset_path):
    from adept.data import load_dataset

    data = load_dataset("hopper", "random", path=tiny_random_dataset_path)
    learner = make_learner("diffuser", 11, 3, "cpu", overrides=TINY, dataset=data)
    assert learner.normalizer.has_action_stats  # Diffuser normalizes actions too
    obs = torch.as_tensor(data.observations[:5])
    actions, observations, values = learner.plan(obs, torch.Generator().manual_seed(0))
    assert actions.shape == (5, 3, 8, 3) and observations.shape == (5, 3, 8, 11) and values.shape == (5, 3)
    assert torch.allclose(observations[:, :, 0], obs.unsqueeze(1).expand(5, 3, 11), atol=1e-5)
    act = learner.act(obs, generator=torch.Generator().manual_seed(0))
    assert act.shape == (5, 3) and act.abs().max() <= 1.0
    again = learner.act(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(act, again)  # the planner's randomness is the generator's
    assert learner.act(data.observations[0]).shape == (3,)  # a single observation


# ------------------------------------------------------------------------------------------------- runs

def run_config(steps: int = 40) -> TrainConfig:
    return TrainConfig.from_dict({
        "run": {"steps": steps, "batch_size": 8, "eval_every": 20, "eval_episodes": 2, "log_every": 10,
                "checkpoint_every": 20, "final_eval_window": 1},
        "learner": {**{k: v for k, v in TINY.items() if k != "seed"}, "value_steps": 30}})


def _inputs(data, out_dir):
    return RunInputs(method="diffuser", env="hopper", dataset="random", seed=0, out_dir=out_dir, data_path=data,
                     source="generated", device="cpu", progress=False)


def test_run_resumes_to_the_uninterrupted_result(tiny_random_dataset_path, tmp_path, monkeypatch):
    config = run_config()
    final = train(_inputs(tiny_random_dataset_path, tmp_path / "full"), config)
    assert final["learner"] == "diffuser" and final["synthetic"] is None
    train_rows = read_csv(tmp_path / "full" / "train.csv")
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40]
    assert all(math.isfinite(r["diffusion_loss"]) for r in train_rows)
    assert [r["value_loss"] is not None for r in train_rows] == [True, True, True, False]  # value_steps = 30
    evals = read_csv(tmp_path / "full" / "eval.csv")
    assert [r["step"] for r in evals] == [20, 40] and all(math.isfinite(r["score_mean"]) for r in evals)

    original = Diffuser.update
    calls = {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:  # after the checkpoint at step 20
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Diffuser, "update", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(tiny_random_dataset_path, tmp_path / "resumed"), config)
    monkeypatch.setattr(Diffuser, "update", original)
    train(_inputs(tiny_random_dataset_path, tmp_path / "resumed"), config)

    full, resumed = (torch.load(tmp_path / d / "policy.pt", weights_only=True) for d in ("full", "resumed"))
    for part in ("unet", "unet_ema", "value", "value_ema"):
        for key, tensor in full["state_dict"][part].items():
            assert torch.equal(tensor, resumed["state_dict"][part][key]), f"{part}.{key}"
    drop = {"wall_time_s", "updates_per_s"}
    for name in ("eval.csv", "train.csv"):
        a, b = (read_csv(tmp_path / d / name) for d in ("full", "resumed"))
        assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
               [{k: v for k, v in r.items() if k not in drop} for r in b]


def test_saved_planner_loads_and_plans_the_same(tiny_random_dataset_path, tmp_path):
    from baselines import load_learner

    train(_inputs(tiny_random_dataset_path, tmp_path / "run"), run_config(steps=10))
    policy = load_learner(tmp_path / "run" / "policy.pt", "cpu", env="hopper")
    assert isinstance(policy, Diffuser) and policy.config.dim_mults == (1, 2, 4)
    obs = torch.zeros(2, 11)
    first = policy.act(obs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, policy.act(obs, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("name", ["adept-diffuser", "diff-diffuser", "synther-diffuser"])
def test_diffuser_runs_only_as_itself(name):
    assert parse_method("diffuser").learner == "diffuser" and parse_method("diffuser").synthetic is None
    with pytest.raises(ValueError, match=f"unknown method '{name}'"):
        parse_method(name)


def test_planner_has_no_density_and_bad_sizes_are_refused():
    learner = make_learner("diffuser", 11, 3, "cpu", overrides=TINY)
    with pytest.raises(ValueError, match="planner with no action density"):
        learner.log_prob(torch.zeros(1, 11), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="divisible by 2"):
        make_learner("diffuser", 11, 3, "cpu", overrides={**TINY, "horizon": 6})
    with pytest.raises(ValueError, match="multiples of 8"):
        make_learner("diffuser", 11, 3, "cpu", overrides={**TINY, "hidden_dim": 4})
