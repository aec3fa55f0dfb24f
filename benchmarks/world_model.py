"""World-model throughput: Adam steps/s at the initial-fit batch (256) and the IWU batch B_m (1024),
and PE rollout transitions/s (N start states x H = 10 steps, K = 10 guided denoising steps each).

Registered into benchmarks.throughput (CASE_MODULES); each case is `fn(device, settings) -> dict`
with `settings.steps` (timed updates; rollouts time steps // 20 PE calls), `warmup` and `env_dims`
(halfcheetah by default); `rollouts` (N, default 1000) and `horizon` (H, default 10) are optional.
Data are random tensors of the env's shapes: speed does not depend on their values.

    python -m benchmarks.throughput --cases world_model_update_b256 world_model_iwu_b1024 rollout_n1000_h10 \
        --device cpu --threads 1 --steps 100
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from adept.envs import get_env_spec
from adept.importance import importance_weights
from adept.rollouts import generate_rollouts
from adept.world_model import WorldModel, WorldModelConfig
from baselines.common import mlp
from baselines.replay import Batch
from benchmarks.timing import time_steps, warmup_seconds


def _model(device: torch.device, obs_dim: int, act_dim: int) -> WorldModel:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4096, obs_dim)).astype(np.float32)
    return WorldModel.from_arrays(obs, rng.uniform(-1, 1, (4096, act_dim)), rng.normal(size=4096),
                                  obs + 0.1 * rng.normal(size=obs.shape), WorldModelConfig(), device)


def _dims(settings: SimpleNamespace) -> tuple[int, int]:
    spec = get_env_spec(getattr(settings, "env_dims", "halfcheetah"))
    return spec.obs_dim, spec.act_dim


def world_model_update(device: torch.device, settings: SimpleNamespace, batch_size: int, weighted: bool) -> dict:
    """Adam steps/s of WorldModel.update (with the importance weights computed each step if `weighted`)."""
    obs_dim, act_dim = _dims(settings)
    model = _model(device, obs_dim, act_dim)
    model.set_compile(getattr(settings, "compile", "off"))
    generator = torch.Generator(device=device).manual_seed(0)
    batch = Batch(torch.randn(batch_size, obs_dim, device=device),
                  torch.rand(batch_size, act_dim, device=device) * 2 - 1, torch.randn(batch_size, device=device),
                  torch.randn(batch_size, obs_dim, device=device), torch.zeros(batch_size, device=device))
    log_pi, log_pi_b = torch.randn(batch_size, device=device), torch.randn(batch_size, device=device)

    def step():
        weights = importance_weights(log_pi, log_pi_b)[0] if weighted else None
        model.update(batch, weights, generator)

    warmup = warmup_seconds(step, max(getattr(settings, "warmup", 10), 1), device)  # compilation included
    timing = time_steps(step, settings.steps, device, warmup=0)
    return {"steps_per_s": timing.per_second, "cpu_steps_per_s": timing.per_cpu_second,
            "samples_per_s": timing.per_second * batch_size, "warmup_s": warmup,
            "batch_size": batch_size, "importance_weighted": weighted, "steps": settings.steps}


class _TanhGaussianPolicy(nn.Module):
    """A learner-sized actor (2 x 256) for the rollout benchmark: a = tanh(mu(s) + sigma * noise)."""

    def __init__(self, obs_dim: int, act_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, 256, 2)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean)
        return torch.tanh(mean + log_std.clamp(-5, 2).exp() * torch.randn_like(mean))


def rollout(device: torch.device, settings: SimpleNamespace) -> dict:
    """PE transitions/s: N start states x H steps, K guided denoising steps per model step."""
    obs_dim, act_dim = _dims(settings)
    n, horizon = getattr(settings, "rollouts", 1000), getattr(settings, "horizon", 10)
    calls = max(1, settings.steps // 20)
    model = _model(device, obs_dim, act_dim)
    model.set_compile(getattr(settings, "compile", "off"))
    with torch.no_grad():  # never terminate, so every rollout runs the full horizon
        model.reward_model[-1].bias[1] = -100.0
    policy = _TanhGaussianPolicy(obs_dim, act_dim).to(device)
    start = torch.randn(n, obs_dim, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    step = lambda: generate_rollouts(model, policy, start, horizon, generator=generator)  # noqa: E731
    warmup = warmup_seconds(step, 1, device)  # compilation included
    timing = time_steps(step, calls, device, warmup=0)
    return {"transitions_per_s": timing.per_second * n * horizon,
            "cpu_transitions_per_s": timing.per_cpu_second * n * horizon, "warmup_s": warmup,
            "seconds_per_pe_call": 1.0 / timing.per_second,
            "rollouts": n, "horizon": horizon, "diffusion_steps": model.config.diffusion_steps,
            "eq2_guidance_weight": model.config.eq2_guidance_weight, "pe_calls": calls}


CASES = {
    "world_model_update_b256": lambda device, settings: world_model_update(device, settings, 256, weighted=False),
    "world_model_iwu_b1024": lambda device, settings: world_model_update(device, settings, 1024, weighted=True),
    "rollout_n1000_h10": rollout,
}

