"""Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905) trained offline
without any regularization: the "SAC" column of the ADEPT paper.

  J_Q(theta)  = E_D[ sum_i 1/2 (Q_theta_i(s, a) - (r + gamma (1 - d) (min_i Q_target_i(s', a') - alpha log pi(a'|s'))))^2 ],
                a' ~ pi(.|s')
  J_pi(phi)   = E_D[ alpha log pi_phi(a~|s) - min_i Q_theta_i(s, a~) ],  a~ ~ pi_phi(.|s) (reparameterized)
  J(alpha)    = E_D[ -alpha (log pi_phi(a~|s) + target_entropy) ],  target_entropy = -act_dim
The critic takes its step first; the actor and temperature then use the updated critic.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from adept.config import require
from baselines.common import (CriticEnsemble, LearnerConfig, OfflineLearner, TanhGaussianActor, frozen,
                              require_in, soft_update)


@dataclass
class SACConfig(LearnerConfig):
    gamma: float = 0.99
    tau: float = 0.005                  # target-critic soft update rate (Table 3)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    initial_alpha: float = 1.0          # entropy temperature at the start
    autotune_alpha: bool = True         # automatic entropy tuning towards target_entropy
    target_entropy: float | None = None  # None: -act_dim (SAC)
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    def validate(self) -> None:
        super().validate()
        require_in("gamma", self.gamma, 0.0, 1.0)
        require_in("tau", self.tau, 0.0, 1.0, low_open=True)
        for key in ("actor_lr", "critic_lr", "alpha_lr", "initial_alpha"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        require(self.log_std_min < self.log_std_max,
                f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max})")


class SAC(OfflineLearner):
    name = "sac"
    label = "SAC"
    checkpointed = ("actor", "critic", "critic_target", "log_alpha", "actor_optimizer", "critic_optimizer",
                    "alpha_optimizer")
    config: SACConfig

    def _build(self) -> None:
        c, device = self.config, self.device
        self.actor = TanhGaussianActor(self.obs_dim, self.act_dim, c.hidden_dim, c.depth,
                                       c.log_std_min, c.log_std_max).to(device)
        self.critic = CriticEnsemble(self.obs_dim, self.act_dim, c.hidden_dim, c.depth, num_critics=2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(c.initial_alpha), device=device, requires_grad=True)
        self.target_entropy = -float(self.act_dim) if c.target_entropy is None else c.target_entropy
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam(self.critic.parameters(), c.critic_lr)
        self.alpha_optimizer = self.adam([self.log_alpha], c.alpha_lr)

    def _update_step(self, obs, actions, rewards, next_obs, dones) -> dict[str, torch.Tensor]:
        c = self.config
        alpha = self.log_alpha.detach().exp()

        # Critic: soft Bellman backup with the target critics' min Q.
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.sample(next_obs, self.generator)
            next_q = self.critic_target(next_obs, next_actions).min(dim=0).values
            td_target = rewards + c.gamma * (1.0 - dones) * (next_q - alpha * next_log_pi)
        q = self.critic(obs, actions)
        critic_loss = 0.5 * (q - td_target).square().mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # Actor and temperature.
        new_actions, log_pi = self.actor.sample(obs, self.generator)
        with frozen(self.critic):
            q_new = self.critic(obs, new_actions).min(dim=0).values
        actor_loss = (alpha * log_pi - q_new).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss = actor_loss
        if c.autotune_alpha:
            alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
            self.alpha_optimizer.zero_grad(set_to_none=True)
            loss = loss + alpha_loss
        loss.backward()
        self.actor_optimizer.step()
        if c.autotune_alpha:
            self.alpha_optimizer.step()
        soft_update(self.critic_target, self.critic, c.tau)

        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
                "entropy": -log_pi.detach().mean(), "q_mean": q.detach().mean()}
