"""SynthER and Diffuser at their published sizes (and, with `settings.scale = "quick"`, at config/quick.yaml's).

- `synther_fit`: AdamW steps/s of SynthER's residual-MLP EDM model (width 1024, 6 blocks) at its batch
  (1024 for 1M-transition datasets); `hours_100k` projects SynthER's 100k-step fit.
- `synther_sample`: transitions/s of the 128-step Heun sampler (batches of `batch_size` x 40);
  `hours_5M` projects the 5M samples a synther-<learner> run draws before its first update.
- `diffuser_update`: updates/s of the U-Net + value network on batches of 64 segments of H = 32;
  `hours_1M` projects a 1M-step run (without its evaluations).
- `diffuser_plan`: planner env steps/s for 10 episodes at once (10 x 64 plans of H = 32, K = 20, two
  guide steps per reverse step above t_stopgrad): one call per env step of an evaluation;
  `minutes_per_eval` projects one evaluation of 10 x 1000 steps (without the simulator's own cost).
Registered into benchmarks.throughput.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from adept.envs import get_env_spec
from adept.synther import SyntherConfig, TransitionDiffusion
from baselines import make_learner
from baselines.replay import SegmentBatch
from benchmarks.timing import time_steps

QUICK_SYNTHER = {"width": 128, "blocks": 3}
QUICK_DIFFUSER = {"hidden_dim": 16, "dim_mults": [1, 2], "horizon": 8, "diffusion_steps": 5, "plan_samples": 4,
                  "guide_steps": 1}


def _quick(settings: SimpleNamespace) -> bool:
    return getattr(settings, "scale", "paper") == "quick"


def _synther(settings: SimpleNamespace, device: torch.device) -> TransitionDiffusion:
    spec = get_env_spec(getattr(settings, "env_dims", "halfcheetah"))
    config = SyntherConfig(**(QUICK_SYNTHER if _quick(settings) else {}))
    return TransitionDiffusion(spec.obs_dim, spec.act_dim, config, device)


def synther_fit(device: torch.device, settings: SimpleNamespace) -> dict:
    model = _synther(settings, device)
    batch = 256 if _quick(settings) else model.config.batch_size  # quick: 100k transitions -> the small batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.99))
    generator = torch.Generator(device=device).manual_seed(0)
    data = torch.randn(100_000, model.dim, device=device, generator=generator)

    def step():
        loss = model.loss(data[torch.randint(0, len(data), (batch,), device=device, generator=generator)], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    timing = time_steps(step, settings.steps, device, settings.warmup)
    return {"steps_per_s": timing.per_second, "batch_size": batch, "width": model.config.width,
            "parameters": sum(p.numel() for p in model.parameters()), "hours_100k": 1e5 / timing.per_second / 3600}


def synther_sample(device: torch.device, settings: SimpleNamespace) -> dict:
    model = _synther(settings, device)
    count, steps = 40 * settings.batch_size, 16 if _quick(settings) else 128
    generator = torch.Generator(device=device).manual_seed(0)
    timing = time_steps(lambda: model.sample_normalized(count, steps, generator), steps=1, device=device, warmup=0)
    rate = count / timing.seconds
    return {"transitions_per_s": rate, "count": count, "sampler_steps": steps, "hours_5M": 5e6 / rate / 3600}


def _diffuser(settings: SimpleNamespace, device: torch.device):
    spec = get_env_spec(getattr(settings, "env_dims", "halfcheetah"))
    overrides = {"seed": 0, **(QUICK_DIFFUSER if _quick(settings) else {})}
    return spec, make_learner("diffuser", spec.obs_dim, spec.act_dim, device, overrides=overrides)


def diffuser_update(device: torch.device, settings: SimpleNamespace) -> dict:
    spec, learner = _diffuser(settings, device)
    c, batch = learner.config, 64
    generator = torch.Generator(device=device).manual_seed(0)
    segments = SegmentBatch(torch.randn(batch, c.horizon, spec.obs_dim, device=device, generator=generator),
                            torch.rand(batch, c.horizon, spec.act_dim, device=device, generator=generator) * 2 - 1,
                            torch.randn(batch, c.horizon, device=device, generator=generator),
                            torch.ones(batch, c.horizon, device=device),
                            torch.randn(batch, device=device, generator=generator))
    timing = time_steps(lambda: learner.update(segments), settings.steps, device, settings.warmup)
    return {"updates_per_s": timing.per_second, "batch_size": batch, "horizon": c.horizon,
            "unet_parameters": sum(p.numel() for p in learner.unet.parameters()),
            "hours_1M": 1e6 / timing.per_second / 3600}


def diffuser_plan(device: torch.device, settings: SimpleNamespace) -> dict:
    spec, learner = _diffuser(settings, device)
    envs = 10 if not _quick(settings) else 3
    obs = torch.randn(envs, spec.obs_dim, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    calls = max(1, settings.steps // 20)
    timing = time_steps(lambda: learner.act(obs, generator=generator), calls, device, warmup=1)
    return {"env_steps_per_s": timing.per_second * envs, "episodes_at_once": envs,
            "plans_per_call": envs * learner.config.plan_samples, "calls": calls,
            "minutes_per_eval": 1000 / timing.per_second / 60}


CASES = {"synther_fit": synther_fit, "synther_sample": synther_sample, "diffuser_update": diffuser_update,
         "diffuser_plan": diffuser_plan}
