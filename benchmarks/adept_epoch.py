"""The whole ADEPT epoch: one PE batch (N_e = 1000 rollouts x H = 10, K = 10 guided denoising steps),
then learner updates with IWU steps interleaved (one per update, B_m = 1024), all at the paper's sizes.

`steps` sets the learner updates timed (an epoch is 1000); the PE batch runs once per 1000 updates,
so its cost is charged pro rata. The headline is ADEPT gradient steps per second; `hours_per_1M`
projects a 1M-step run (the paper: ~5 h on an RTX A6000; target: < 0.5 h on an H100).
Registered into benchmarks.throughput as `adept_epoch_iql` and `adept_epoch_sac`.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from adept.closed_loop import ClosedLoop, ClosedLoopConfig
from adept.world_model import WorldModel, WorldModelConfig
from baselines import make_learner
from baselines.replay import MixedSampler, TensorBuffer
from benchmarks.timing import time_steps

ENV_DIMS = {"halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6)}


def adept_epoch(learner_name: str):
    def run(device: torch.device, settings: SimpleNamespace) -> dict:
        obs_dim, act_dim = ENV_DIMS[getattr(settings, "env_dims", "halfcheetah")]
        updates = getattr(settings, "steps", 200)
        rng = np.random.default_rng(0)
        n = 100_000
        obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
        actions = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
        rewards = rng.normal(size=n).astype(np.float32)
        next_obs = (obs + 0.1 * rng.normal(size=obs.shape)).astype(np.float32)
        real = TensorBuffer.from_arrays(obs, actions, rewards, next_obs, np.zeros(n, np.float32), device)
        world_model = WorldModel.from_arrays(obs, actions, rewards, next_obs, WorldModelConfig(), device)
        learner = make_learner(learner_name, obs_dim, act_dim, device, overrides={"seed": 0})
        behavior = make_learner("bc", obs_dim, act_dim, device, overrides={"seed": 1})
        generator = torch.Generator(device=device).manual_seed(0)
        loop = ClosedLoop(ClosedLoopConfig(), world_model, real, behavior, generator=generator)
        sampler = MixedSampler(real, loop.synthetic, 256, generator=generator)

        def pe_batch():
            loop.before_update(0, learner)

        def update_with_iwu():
            learner.update(sampler.sample())
            loop.importance_sampled_update(learner)

        pe_batch()  # warm-up
        size_before = loop.synthetic.size
        pe_seconds = time_steps(pe_batch, steps=1, device=device, warmup=0).seconds
        pe_transitions = loop.synthetic.size - size_before
        update_seconds = time_steps(update_with_iwu, steps=updates, device=device, warmup=5).seconds
        epoch_seconds = pe_seconds + update_seconds * 1000 / updates
        return {"learner": learner_name, "adept_steps_per_s": 1000 / epoch_seconds,
                "epoch_s": epoch_seconds, "pe_batch_s": pe_seconds,
                "pe_transitions_per_s": pe_transitions / pe_seconds,
                "update_plus_iwu_per_s": updates / update_seconds,
                "hours_per_1M": epoch_seconds * 1000 / 3600, "timed_updates": updates}

    return run


CASES = {"adept_epoch_iql": adept_epoch("iql"), "adept_epoch_sac": adept_epoch("sac")}
