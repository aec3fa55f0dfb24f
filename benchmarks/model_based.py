"""MOPO and COMBO at their published sizes: the dynamics ensemble's fit step, and a whole epoch of each
method (one rollout batch of 50,000 start states x h = 5 steps in the 7-member ensemble, then 1000
learner updates on batches of 256 with the method's real fraction).

`steps` sets the learner updates timed; the rollout batch runs once per 1000 updates, so its cost is
charged pro rata. The headline is gradient steps per second including rollouts; `hours_per_1M`
projects a 1M-step run. Registered into benchmarks.throughput as `ensemble_fit`, `mopo_epoch`,
`combo_epoch`.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from adept.envs import get_env_spec
from adept.ensemble import EnsembleConfig, EnsembleDynamics
from adept.model_rollouts import ModelRolloutConfig, ModelRollouts
from baselines import make_learner
from baselines.replay import MixedSampler, TensorBuffer, fraction_real_rows
from benchmarks.timing import time_steps

REAL_FRACTION = {"mopo": 0.05, "combo": 0.5}


def _data(env: str, device: torch.device, n: int = 100_000):
    spec = get_env_spec(env)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, spec.obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, spec.act_dim)).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    next_obs = (obs + 0.1 * rng.normal(size=obs.shape)).astype(np.float32)
    real = TensorBuffer.from_arrays(obs, actions, rewards, next_obs, np.zeros(n, np.float32), device)
    ensemble = EnsembleDynamics(spec.obs_dim, spec.act_dim, spec.name, EnsembleConfig(), device)
    ensemble.set_data_stats(obs, actions, rewards)
    return spec, real, ensemble


def ensemble_fit(device: torch.device, settings: SimpleNamespace) -> dict:
    spec, real, ensemble = _data(getattr(settings, "env_dims", "halfcheetah"), device)
    config = ensemble.config
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.lr)
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        rows = torch.randint(0, real.size, (config.num_members, config.batch_size), device=device, generator=generator)
        loss, _ = ensemble.fit_loss(real.observations[rows], real.actions[rows], real.rewards[rows],
                                    real.next_observations[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    timing = time_steps(step, settings.steps, device, settings.warmup)
    return {"steps_per_s": timing.per_second, "members": config.num_members, "hidden_dim": config.hidden_dim,
            "depth": config.depth, "batch_size_per_member": config.batch_size,
            "epoch_s_1M": 1e6 / config.batch_size / timing.per_second}


def model_based_epoch(method: str):
    def run(device: torch.device, settings: SimpleNamespace) -> dict:
        spec, real, ensemble = _data(getattr(settings, "env_dims", "halfcheetah"), device)
        updates = getattr(settings, "steps", 200)
        batch = settings.batch_size
        overrides = {"seed": 0, "batch_size": batch}
        if method == "combo":
            overrides["real_rows"] = fraction_real_rows(batch, REAL_FRACTION[method])
        learner = make_learner("sac" if method == "mopo" else "combo", spec.obs_dim, spec.act_dim, device,
                               overrides=overrides)
        generator = torch.Generator(device=device).manual_seed(0)
        config = ModelRolloutConfig(horizon=5, penalty_coef=1.0 if method == "mopo" else 0.0,
                                    diagnostics_samples=0, ground_truth_states=0)
        source = ModelRollouts(config, ensemble, real, generator=generator)
        sampler = MixedSampler(real, source.synthetic, batch, rule="fraction", real_fraction=REAL_FRACTION[method],
                               generator=generator)

        source.before_update(0, learner)  # warm-up, and D-hat is not empty
        size_before = source.synthetic.size
        rollout_seconds = time_steps(lambda: source.before_update(0, learner), steps=1, device=device, warmup=0).seconds
        transitions = source.synthetic.size - size_before if source.synthetic.size < source.synthetic.capacity \
            else config.rollouts_per_epoch * config.horizon
        update_seconds = time_steps(lambda: learner.update(sampler.sample()), steps=updates, device=device,
                                    warmup=5).seconds
        epoch_seconds = rollout_seconds + update_seconds * 1000 / updates
        return {"method": method, "steps_per_s": 1000 / epoch_seconds, "epoch_s": epoch_seconds,
                "rollout_batch_s": rollout_seconds, "rollout_transitions_per_s": transitions / rollout_seconds,
                "updates_per_s": updates / update_seconds, "hours_per_1M": epoch_seconds * 1000 / 3600,
                "timed_updates": updates, "batch_size": batch}

    return run


CASES = {"ensemble_fit": ensemble_fit, "mopo_epoch": model_based_epoch("mopo"),
         "combo_epoch": model_based_epoch("combo")}
