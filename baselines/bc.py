"""Behaviour cloning by maximum likelihood, and the behaviour-policy estimate pi_D that ADEPT's
importance weights pi(a|s) / pi_D(a|s) need.

  L(phi) = -E_D[ log pi_phi(a|s) ],  pi_phi a tanh-Gaussian with learned state-dependent std

The std is learned (bounded in [exp(log_std_min), exp(log_std_max)]) so that log pi_D(a|s) is a
calibrated density, not just a mean-action regressor. `fit_behavior_policy` selects the parameters
with the lowest held-out negative log-likelihood; it never looks at environment returns.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from adept.config import from_dict, require, to_dict
from baselines.common import DataStats, LearnerConfig, OfflineLearner, TanhGaussianActor


@dataclass
class BCConfig(LearnerConfig):
    lr: float = 3e-4
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    def validate(self) -> None:
        super().validate()
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.log_std_min < self.log_std_max,
                f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max})")


class BC(OfflineLearner):
    name = "bc"
    checkpointed = ("actor", "actor_optimizer")
    config: BCConfig

    def _build(self) -> None:
        c = self.config
        self.actor = TanhGaussianActor(self.obs_dim, self.act_dim, c.hidden_dim, c.depth,
                                       c.log_std_min, c.log_std_max).to(self.device)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.lr)

    def update(self, batch) -> dict[str, torch.Tensor]:
        return self.update_policy(batch.observations, batch.actions)

    def update_policy(self, observations: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """One maximum-likelihood step on raw observations and actions (rewards are not needed)."""
        metrics = self._step(self, self.normalizer.observations(observations), actions)
        self.num_updates += 1
        return metrics

    def _update_step(self, obs, actions) -> dict[str, torch.Tensor]:
        nll = -self.actor.log_prob(obs, actions).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        nll.backward()
        self.actor_optimizer.step()
        return {"nll": nll.detach()}

    @torch.no_grad()
    def mean_nll(self, observations: torch.Tensor, actions: torch.Tensor, chunk_size: int = 65_536) -> float:
        """Mean -log pi(a|s) over a whole data set, evaluated in chunks (one host read at the end)."""
        total = torch.zeros((), device=self.device)
        for start in range(0, len(observations), chunk_size):
            stop = start + chunk_size
            total += self.log_prob(observations[start:stop], actions[start:stop]).sum()
        return -float(total) / len(observations)


def fit_behavior_policy(observations: np.ndarray, actions: np.ndarray, *, config: BCConfig | dict | None = None,
                        device: str | torch.device = "cpu", seed: int = 0, max_steps: int = 100_000,
                        eval_every: int = 2_000, holdout_fraction: float = 0.05, patience: int | None = 10,
                        progress: Callable[[dict[str, Any]], None] | None = None) -> tuple[BC, dict[str, Any]]:
    """Fit pi_D(a|s) to (observations, actions) by maximum likelihood with model selection on held-out data.

    A random `holdout_fraction` of the transitions is held out (adept.data.dataset.split_holdout
    with `seed`). Every `eval_every` steps the mean
    training NLL (over those steps) and the held-out NLL are recorded; the returned learner has the
    parameters (and optimizer state) of the evaluation with the lowest held-out NLL. Training stops
    after `max_steps` or after `patience` evaluations without improvement (None: never early).
    `progress` is called with each evaluation's record. Returns (learner, report).
    """
    observations = np.asarray(observations, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    if observations.ndim != 2 or actions.ndim != 2 or len(observations) != len(actions):
        raise ValueError(f"observations (N, obs_dim) and actions (N, act_dim) must have the same N, got "
                         f"shapes {observations.shape} and {actions.shape}")
    if not (np.isfinite(observations).all() and np.isfinite(actions).all()):
        raise ValueError("observations and actions must be finite (found NaN or inf)")
    if np.abs(actions).max(initial=0.0) > 1.0 + 1e-6:
        raise ValueError(f"actions must lie in [-1, 1] (found |a| = {np.abs(actions).max():.4g}); "
                         f"rescale them to the action space first")
    if max_steps < 1 or eval_every < 1:
        raise ValueError(f"max_steps and eval_every must be >= 1, got {max_steps} and {eval_every}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None (no early stopping), got {patience}")
    from adept.data.dataset import split_holdout  # the world model's split, same rule

    if not isinstance(config, BCConfig):
        config = from_dict(BCConfig, config or {}, "bc")
    config = replace(config, seed=seed)
    train_idx, heldout_idx = split_holdout(len(observations), holdout_fraction, seed)
    stats = DataStats.compute(observations[train_idx], normalize_obs=config.normalize_obs)
    learner = BC(observations.shape[1], actions.shape[1], config, device, stats)

    train_obs, train_act, heldout_obs, heldout_act = (
        torch.as_tensor(x, device=learner.device)
        for x in (observations[train_idx], actions[train_idx], observations[heldout_idx], actions[heldout_idx]))
    generator = torch.Generator(device=learner.device)
    generator.manual_seed(seed)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"heldout_nll": float("inf"), "step": 0, "state": None}
    evals_since_best = 0
    nll_sum, steps_in_window = torch.zeros((), device=learner.device), 0
    start = time.perf_counter()
    for step in range(1, max_steps + 1):
        idx = torch.randint(0, len(train_idx), (config.batch_size,), device=learner.device, generator=generator)
        nll_sum += learner.update_policy(train_obs[idx], train_act[idx])["nll"]
        steps_in_window += 1
        if step % eval_every != 0 and step != max_steps:
            continue
        record = {"step": step, "train_nll": float(nll_sum) / steps_in_window,
                  "heldout_nll": learner.mean_nll(heldout_obs, heldout_act),
                  "wall_time_s": time.perf_counter() - start}
        history.append(record)
        nll_sum, steps_in_window = torch.zeros((), device=learner.device), 0
        if record["heldout_nll"] < best["heldout_nll"]:
            best = {"heldout_nll": record["heldout_nll"], "step": step,
                    "state": copy.deepcopy(learner.state_dict())}
            evals_since_best = 0
        else:
            evals_since_best += 1
        if progress is not None:
            progress(dict(record, best_step=best["step"], best_heldout_nll=best["heldout_nll"]))
        if patience is not None and evals_since_best >= patience:
            break
    if best["state"] is None:
        raise ValueError("the held-out NLL was never finite; check the data or lower the learning rate "
                         "(--set lr=...)")
    learner.load_state_dict(best["state"])

    report = {
        "best_step": best["step"], "best_heldout_nll": best["heldout_nll"],
        "steps_trained": history[-1]["step"], "stopped_early": history[-1]["step"] < max_steps,
        "num_train": len(train_idx), "num_heldout": len(heldout_idx), "holdout_fraction": holdout_fraction,
        "seed": seed, "max_steps": max_steps, "eval_every": eval_every, "patience": patience,
        "history": history, "config": to_dict(config), "device": str(learner.device),
    }
    return learner, report
