"""The fit of pi_D, the behaviour policy of an offline dataset, that ADEPT's importance weights
pi(a|s) / pi_D(a|s) need: a tanh-Gaussian BC learner (baselines.bc.BC) fitted by maximum likelihood
on all but a held-out fraction of the transitions, keeping the parameters with the lowest held-out
negative log-likelihood. It never looks at environment returns.

The held-out split is the world model's rule (adept.data.dataset.split_holdout with the seed). The
fit is short and not resumable: `adept behavior-policy` writes the policy and a report next to it.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from adept.config import from_dict, require, to_dict
from adept.data.dataset import split_holdout
from baselines.bc import BC, BCConfig
from baselines.common import DataStats

__all__ = ["BehaviorPolicyFitConfig", "BehaviorPolicyFitSettings", "fit_behavior_policy"]


@dataclass
class BehaviorPolicyFitConfig:
    """The fit's settings: the `behavior_policy` section of `adept behavior-policy --config`."""

    steps: int = 100_000            # gradient steps at most
    eval_every: int = 2_000         # steps between held-out evaluations
    patience: int = 10              # evaluations without a better held-out NLL before it stops (0: never)
    holdout_fraction: float = 0.05
    learner: BCConfig = field(default_factory=BCConfig)  # the BC learner's hyperparameters (its seed: the fit's)

    def validate(self) -> None:
        require(self.steps >= 1 and self.eval_every >= 1,
                f"behavior_policy.steps and eval_every must be >= 1, got {self.steps} and {self.eval_every}")
        require(self.patience >= 0, f"behavior_policy.patience must be >= 0 (0: never stop early), got {self.patience}")
        require(0.0 < self.holdout_fraction < 1.0,
                f"behavior_policy.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


@dataclass
class BehaviorPolicyFitSettings:
    """Everything `adept behavior-policy` takes from --config / --set."""

    behavior_policy: BehaviorPolicyFitConfig = field(default_factory=BehaviorPolicyFitConfig)


def fit_behavior_policy(observations: np.ndarray, actions: np.ndarray, *, config: BCConfig | dict | None = None,
                        device: str | torch.device = "cpu", seed: int = 0,
                        max_steps: int = BehaviorPolicyFitConfig.steps,
                        eval_every: int = BehaviorPolicyFitConfig.eval_every,
                        holdout_fraction: float = BehaviorPolicyFitConfig.holdout_fraction,
                        patience: int | None = BehaviorPolicyFitConfig.patience,
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
