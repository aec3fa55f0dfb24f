"""Behaviour cloning by maximum likelihood: the learner, and the model of the behaviour-policy estimate
pi_D that ADEPT's importance weights pi(a|s) / pi_D(a|s) need.

  L(phi) = -E_D[ log pi_phi(a|s) ],  pi_phi a tanh-Gaussian with learned state-dependent std

The std is learned (bounded in [exp(log_std_min), exp(log_std_max)]) so that log pi_D(a|s) is a
calibrated density, not just a mean-action regressor. pi_D's fit (held-out model selection, never on
environment returns) is adept.behavior_policy_training.fit_behavior_policy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from adept.config import require
from baselines.common import LearnerConfig, OfflineLearner, TanhGaussianActor


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
    label = "BC"
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
