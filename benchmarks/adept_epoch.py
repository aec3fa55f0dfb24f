"""The whole ADEPT epoch: one PE batch (N_e = 1000 rollouts x H = 10, K = 10 guided denoising steps),
then learner updates with IWU steps spread over them (B_m = 1024), all at the paper's sizes.

`steps` sets the learner updates timed (an epoch is 1000); the PE batch runs once per epoch, so its
cost is charged pro rata. The headline is ADEPT gradient steps per second; `hours_per_1M` projects a
1M-step run (the paper: ~5 h on an RTX A6000; target: < 0.5 h on an H100). Registered into
benchmarks.throughput as `adept_epoch_iql` and `adept_epoch_sac`; `epoch_rate` takes any learner,
world-model and closed-loop config (benchmarks/estimate.py measures each configured method with it).
"""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from adept.closed_loop import ClosedLoop, ClosedLoopConfig
from adept.world_model import WorldModel, WorldModelConfig
from baselines import make_learner
from baselines.replay import MixedSampler, TensorBuffer
from benchmarks.timing import time_steps, warmup_seconds

ENV_DIMS = {"halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6)}


def epoch_rate(device: torch.device, learner_name: str, *, obs_dim: int = 17, act_dim: int = 6, updates: int = 200,
               batch_size: int = 256, learner_overrides: dict | None = None,
               world_model: WorldModelConfig | None = None, loop: ClosedLoopConfig | None = None,
               compile: str = "off", warmup: int = 5) -> dict:
    """ADEPT (or, with loop.refit_world_model=False, Diff+X) gradient steps/s of one epoch: PE batch +
    epoch_steps learner updates + iwu_steps_per_epoch IWU steps, each part timed on its own."""
    loop_config = loop or ClosedLoopConfig()
    rng = np.random.default_rng(0)
    n = 100_000
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    next_obs = (obs + 0.1 * rng.normal(size=obs.shape)).astype(np.float32)
    real = TensorBuffer.from_arrays(obs, actions, rewards, next_obs, np.zeros(n, np.float32), device)
    model = WorldModel.from_arrays(obs, actions, rewards, next_obs, world_model or WorldModelConfig(), device)
    model.set_compile(compile)
    overrides = {**(learner_overrides or {}), "seed": 0, "batch_size": batch_size, "compile": compile}
    learner = make_learner(learner_name, obs_dim, act_dim, device, overrides=overrides)
    behavior = make_learner("bc", obs_dim, act_dim, device, overrides={"seed": 1})
    generator = torch.Generator(device=device).manual_seed(0)
    closed_loop = ClosedLoop(loop_config, model, real, behavior, generator=generator)
    sampler = MixedSampler(real, closed_loop.synthetic, batch_size, generator=generator)

    def pe_batch():
        closed_loop.before_update(0, learner)

    def update():
        learner.update(sampler.sample())

    def iwu():
        closed_loop.importance_sampled_update(learner)

    warm = warmup_seconds(pe_batch, 1, device)  # also fills D-hat, as after the first epoch
    size_before = closed_loop.synthetic.size
    pe = time_steps(pe_batch, steps=1, device=device, warmup=0)
    pe_transitions = closed_loop.synthetic.size - size_before
    warm += warmup_seconds(update, warmup, device)
    learner_timing = time_steps(update, updates, device, warmup=0)
    iwu_per_epoch = loop_config.iwu_steps_per_epoch if loop_config.refit_world_model else 0
    if iwu_per_epoch:
        warm += warmup_seconds(iwu, warmup, device)
        iwu_timing = time_steps(iwu, updates, device, warmup=0)
        iwu_s, iwu_cpu_s = iwu_timing.seconds / updates, iwu_timing.cpu_seconds / updates
    else:
        iwu_s = iwu_cpu_s = 0.0
    steps = loop_config.epoch_steps
    pe_share = pe.seconds if loop_config.rollouts_per_epoch else 0.0
    epoch_s = pe_share + steps * learner_timing.seconds / updates + iwu_per_epoch * iwu_s
    epoch_cpu_s = (pe.cpu_seconds if loop_config.rollouts_per_epoch else 0.0) \
        + steps * learner_timing.cpu_seconds / updates + iwu_per_epoch * iwu_cpu_s
    return {"learner": learner_name, "adept_steps_per_s": steps / epoch_s, "cpu_adept_steps_per_s": steps / epoch_cpu_s,
            "epoch_s": epoch_s, "pe_batch_s": pe.seconds, "pe_transitions_per_s": pe_transitions / pe.seconds,
            "learner_updates_per_s": learner_timing.per_second,
            "iwu_steps_per_s": 1.0 / iwu_s if iwu_s else None, "iwu_steps_per_epoch": iwu_per_epoch,
            "hours_per_1M": epoch_s * 1e6 / steps / 3600, "timed_updates": updates, "warmup_s": warm,
            "diffusion_steps": model.config.diffusion_steps, "is_batch_size": model.config.is_batch_size}


def adept_epoch(learner_name: str):
    def run(device: torch.device, settings: SimpleNamespace) -> dict:
        obs_dim, act_dim = ENV_DIMS[getattr(settings, "env_dims", "halfcheetah")]
        return epoch_rate(device, learner_name, obs_dim=obs_dim, act_dim=act_dim, updates=getattr(settings, "steps", 200),
                          compile=getattr(settings, "compile", "off"))

    return run


def diff_loop(config: ClosedLoopConfig) -> ClosedLoopConfig:
    """Diff+X's closed loop: PE only, the world model is never refitted."""
    return replace(config, refit_world_model=False)


CASES = {"adept_epoch_iql": adept_epoch("iql"), "adept_epoch_sac": adept_epoch("sac")}
