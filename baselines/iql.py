"""Implicit Q-Learning (Kostrikov, Nair and Levine 2021, https://arxiv.org/abs/2110.06169).

IQL never evaluates Q on actions outside the dataset:
  L_V(psi)   = E_D[ L2^tau( min_i Q_target_i(s, a) - V_psi(s) ) ],   L2^tau(u) = |tau - 1(u < 0)| u^2
  L_Q(theta) = E_D[ sum_i (r + gamma (1 - d) V_psi(s') - Q_theta_i(s, a))^2 ]
  L_pi(phi)  = -E_D[ min(exp(beta (min_i Q_target_i(s, a) - V_psi(s))), 100) log pi_phi(a|s) ]
In the order of the reference implementation, V takes its step first and the Q and policy losses
use the updated V. Defaults: Table 3 of the ADEPT paper (tau 0.7, beta 3.0, soft update 0.005)
and the IQL locomotion setup for the rest (see docs/notes/learners.md).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch

from adept.config import require
from baselines.common import (CriticEnsemble, GaussianActor, LearnerConfig, OfflineLearner, mlp,
                              require_in, soft_update)


@dataclass
class IQLConfig(LearnerConfig):
    gamma: float = 0.99
    tau: float = 0.005                  # target-critic soft update rate (the ADEPT paper's alpha)
    expectile: float = 0.7              # IQL's tau: the expectile V regresses to
    beta: float = 3.0                   # inverse temperature of the advantage weights exp(beta * A)
    max_weight: float = 100.0           # advantage weights are clipped at this value (IQL)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    lr_decay_steps: int = 1_000_000     # cosine decay of the actor LR to 0 over this many updates; 0: constant
    log_std_min: float = -5.0           # bounds of the state-independent policy log-std (IQL)
    log_std_max: float = 2.0
    reward_normalization: Literal["none", "return_range"] = "return_range"  # IQL's locomotion reward scaling

    def validate(self) -> None:
        super().validate()
        require_in("gamma", self.gamma, 0.0, 1.0)
        require_in("tau", self.tau, 0.0, 1.0, low_open=True)
        require_in("expectile", self.expectile, 0.0, 1.0, low_open=True, high_open=True)
        require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        require(self.max_weight > 0, f"max_weight must be > 0, got {self.max_weight}")
        for key in ("actor_lr", "critic_lr", "value_lr"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        require(self.lr_decay_steps >= 0, f"lr_decay_steps must be >= 0 (0 = constant), got {self.lr_decay_steps}")
        require(self.log_std_min < self.log_std_max,
                f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max})")


class IQL(OfflineLearner):
    name = "iql"
    label = "IQL"
    checkpointed = ("actor", "critic", "critic_target", "value", "actor_optimizer", "critic_optimizer",
                    "value_optimizer")
    config: IQLConfig

    def _build(self) -> None:
        c, device = self.config, self.device
        self.actor = GaussianActor(self.obs_dim, self.act_dim, c.hidden_dim, c.depth,
                                   c.log_std_min, c.log_std_max).to(device)
        self.critic = CriticEnsemble(self.obs_dim, self.act_dim, c.hidden_dim, c.depth, num_critics=2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(self.obs_dim, 1, c.hidden_dim, c.depth).to(device)
        # A tensor LR, updated in place by the cosine schedule: no torch.compile guard on its value.
        self.actor_optimizer = self.adam(self.actor.parameters(), torch.tensor(c.actor_lr, device=device))
        self.critic_optimizer = self.adam(self.critic.parameters(), c.critic_lr)
        self.value_optimizer = self.adam(self.value.parameters(), c.value_lr)

    def actor_lr(self) -> float:
        """Cosine decay from actor_lr to 0 over lr_decay_steps updates (optax.cosine_decay_schedule in IQL)."""
        c = self.config
        if c.lr_decay_steps == 0:
            return c.actor_lr
        progress = min(self.num_updates, c.lr_decay_steps) / c.lr_decay_steps
        return c.actor_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def update(self, batch) -> dict[str, torch.Tensor]:
        # Derived from the update counter, so resuming from a checkpoint restores it.
        if self.config.lr_decay_steps:
            self.actor_optimizer.param_groups[0]["lr"].fill_(self.actor_lr())
        return super().update(batch)

    def _update_step(self, obs, actions, rewards, next_obs, dones) -> dict[str, torch.Tensor]:
        c = self.config

        # Value: expectile regression of V(s) onto the target critics' min Q(s, a).
        with torch.no_grad():
            target_q = self.critic_target(obs, actions).min(dim=0).values
        diff = target_q - self.value(obs).squeeze(-1)
        expectile_weight = torch.where(diff < 0, 1.0 - c.expectile, c.expectile)
        value_loss = (expectile_weight * diff.square()).mean()
        self.value_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_optimizer.step()

        # Q towards r + gamma V(s'), policy by advantage-weighted regression; both use the updated V.
        with torch.no_grad():
            value, next_value = self.value(torch.cat([obs, next_obs])).squeeze(-1).chunk(2)
            td_target = rewards + c.gamma * (1.0 - dones) * next_value
            advantage = target_q - value
            weights = torch.exp(c.beta * advantage).clamp(max=c.max_weight)
        q = self.critic(obs, actions)
        critic_loss = (q - td_target).square().sum(dim=0).mean()
        actor_loss = -(weights * self.actor.log_prob(obs, actions)).mean()
        # The two losses share no parameters, so one backward pass serves both optimizers.
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.actor_optimizer.zero_grad(set_to_none=True)
        (critic_loss + actor_loss).backward()
        self.critic_optimizer.step()
        self.actor_optimizer.step()
        soft_update(self.critic_target, self.critic, c.tau)

        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                "actor_loss": actor_loss.detach(), "q_mean": q.detach().mean(), "v_mean": value.mean(),
                "advantage_mean": advantage.mean(), "weight_mean": weights.mean()}
