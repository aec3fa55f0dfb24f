"""TD3+BC (Fujimoto and Gu 2021, https://arxiv.org/abs/2106.06860): TD3 with a behaviour-cloning
term in the actor loss and normalized states.

  critic: sum_i (Q_i(s, a) - (r + gamma (1 - d) min_i Q_target_i(s', clip(pi_target(s') + eps, -1, 1))))^2,
          eps = clip(N(0, policy_noise^2), -noise_clip, noise_clip)
  actor (every policy_delay critic steps): -lambda Q_1(s, pi(s)) + (pi(s) - a)^2,
          lambda = alpha / mean |Q_1(s, pi(s))| (not differentiated)
Target networks are updated together with the actor, as in TD3.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adept.config import require
from baselines.common import (CriticEnsemble, DeterministicActor, LearnerConfig, OfflineLearner, frozen,
                              require_in, soft_update)


@dataclass
class TD3BCConfig(LearnerConfig):
    gamma: float = 0.99
    tau: float = 0.005                  # soft update rate of both target networks
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha: float = 2.5                  # weight of the Q term relative to behaviour cloning
    policy_noise: float = 0.2           # target policy smoothing noise (std, action units)
    noise_clip: float = 0.5
    policy_delay: int = 2               # critic updates per actor update
    exploration_noise: float = 0.1      # std of the Gaussian that stands for the policy in act()/log_prob()

    def validate(self) -> None:
        super().validate()
        require_in("gamma", self.gamma, 0.0, 1.0)
        require_in("tau", self.tau, 0.0, 1.0, low_open=True)
        for key in ("actor_lr", "critic_lr", "alpha", "exploration_noise"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        require(self.policy_noise >= 0, f"policy_noise must be >= 0, got {self.policy_noise}")
        require(self.noise_clip >= 0, f"noise_clip must be >= 0, got {self.noise_clip}")
        require(self.policy_delay >= 1, f"policy_delay must be >= 1, got {self.policy_delay}")


class TD3BC(OfflineLearner):
    name = "td3bc"
    label = "TD3+BC"
    checkpointed = ("actor", "actor_target", "critic", "critic_target", "actor_optimizer", "critic_optimizer")
    config: TD3BCConfig

    def _build(self) -> None:
        c, device = self.config, self.device
        self.actor = DeterministicActor(self.obs_dim, self.act_dim, c.hidden_dim, c.depth,
                                        noise_std=c.exploration_noise).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = CriticEnsemble(self.obs_dim, self.act_dim, c.hidden_dim, c.depth, num_critics=2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam(self.critic.parameters(), c.critic_lr)
        # The actor's metrics are repeated on critic-only steps so that every update reports the same keys.
        self._actor_metrics = {"actor_loss": torch.zeros((), device=device),
                               "bc_loss": torch.zeros((), device=device)}

    def update(self, batch) -> dict[str, torch.Tensor]:
        update_actor = (self.num_updates + 1) % self.config.policy_delay == 0
        metrics = self._step(self, *self._normalized(batch), update_actor=update_actor)
        if update_actor:  # kept here, outside the (possibly compiled) step, which stores nothing on self
            self._actor_metrics = {key: metrics[key] for key in self._actor_metrics}
        self.num_updates += 1
        return {**metrics, **self._actor_metrics}

    def state_dict(self) -> dict:
        # The repeated actor metrics are state too: a run resumed before a critic-only step logs what an
        # uninterrupted one does.
        return {**super().state_dict(), "actor_metrics": {k: v.detach().clone() for k, v in self._actor_metrics.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "actor_metrics" in state:
            self._actor_metrics = {k: v.to(self.device) for k, v in state["actor_metrics"].items()}

    def _update_step(self, obs, actions, rewards, next_obs, dones, update_actor: bool) -> dict[str, torch.Tensor]:
        c = self.config

        # Critic: clipped double-Q target with target policy smoothing.
        with torch.no_grad():
            noise = torch.randn(actions.shape, device=actions.device, generator=self.generator)
            noise = (noise * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_actions = (self.actor_target(next_obs) + noise).clamp(-1.0, 1.0)
            next_q = self.critic_target(next_obs, next_actions).min(dim=0).values
            td_target = rewards + c.gamma * (1.0 - dones) * next_q
        q = self.critic(obs, actions)
        critic_loss = (q - td_target).square().mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # Delayed actor: maximize lambda * Q_1 while staying close to the data's actions.
        if update_actor:
            policy_actions = self.actor(obs)
            with frozen(self.critic):
                q1 = self.critic(obs, policy_actions)[0]
            lmbda = c.alpha / q1.abs().mean().detach()
            bc_loss = F.mse_loss(policy_actions, actions)
            actor_loss = -lmbda * q1.mean() + bc_loss
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.critic_target, self.critic, c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
            metrics = {"actor_loss": actor_loss.detach(), "bc_loss": bc_loss.detach()}
        else:
            metrics = {}
        return {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean(), **metrics}
