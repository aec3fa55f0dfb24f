"""Conservative Q-Learning (Kumar et al. 2020, https://arxiv.org/abs/2006.04779), the SAC-based
continuous CQL(H) of the authors' code and CORL.

  critic: sum_i [ (Q_i(s, a) - (r + gamma (1 - d) min_j Q_target_j(s', a')))^2
                  + cql_alpha * ( temperature * logsumexp_a~( (Q_i(s, a~) - log mu(a~)) / temperature ) - Q_i(s, a) ) ]
          where a~ are num_sampled_actions uniform actions (mu = 0.5^act_dim), policy actions at s and
          policy actions at s' (mu = pi), all evaluated at s: the importance-sampled logsumexp.
  actor:  alpha log pi(a~|s) - min_i Q_i(s, a~)   (behaviour cloning -log pi(a|s) instead of -Q during
          the first bc_warmup_steps updates, the authors' policy_eval_start)
  alpha:  automatic entropy tuning towards -act_dim, as SAC.
With `lagrange`, the CQL weight is cql_alpha * alpha' with alpha' tuned so that the gap reaches
target_action_gap (CQL-Lagrange). All losses are computed from the same parameters and stepped
together, as in CORL.
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
class CQLConfig(LearnerConfig):
    depth: int = 3                      # CQL's Q-networks and policy have 3 hidden layers
    gamma: float = 0.99
    tau: float = 0.005                  # target-critic soft update rate
    actor_lr: float = 3e-4              # Table 3 (the CQL code uses 1e-4, CORL 3e-5)
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    target_entropy: float | None = None  # None: -act_dim
    cql_alpha: float = 5.0              # weight of the conservative term (min_q_weight)
    num_sampled_actions: int = 10       # per state and per proposal (uniform, pi(.|s), pi(.|s'))
    temperature: float = 1.0            # of the logsumexp
    backup_entropy: bool = False        # the CQL code's deterministic backup: no entropy in the target
    bc_warmup_steps: int = 40_000       # policy trained by BC first (the CQL code's policy_eval_start)
    lagrange: bool = False              # tune the conservative weight (CQL-Lagrange)
    target_action_gap: float = 5.0      # used only with lagrange
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    def validate(self) -> None:
        super().validate()
        require_in("gamma", self.gamma, 0.0, 1.0)
        require_in("tau", self.tau, 0.0, 1.0, low_open=True)
        for key in ("actor_lr", "critic_lr", "alpha_lr", "temperature"):
            require(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}")
        require(self.cql_alpha >= 0, f"cql_alpha must be >= 0, got {self.cql_alpha}")
        require(self.num_sampled_actions >= 1, f"num_sampled_actions must be >= 1, got {self.num_sampled_actions}")
        require(self.bc_warmup_steps >= 0, f"bc_warmup_steps must be >= 0, got {self.bc_warmup_steps}")
        require(self.log_std_min < self.log_std_max,
                f"log_std_min ({self.log_std_min}) must be < log_std_max ({self.log_std_max})")


class CQL(OfflineLearner):
    name = "cql"
    label = "CQL"
    checkpointed = ("actor", "critic", "critic_target", "log_alpha", "log_alpha_prime", "actor_optimizer",
                    "critic_optimizer", "alpha_optimizer", "alpha_prime_optimizer")
    config: CQLConfig

    def _build(self) -> None:
        c, device = self.config, self.device
        self.actor = TanhGaussianActor(self.obs_dim, self.act_dim, c.hidden_dim, c.depth,
                                       c.log_std_min, c.log_std_max).to(device)
        self.critic = CriticEnsemble(self.obs_dim, self.act_dim, c.hidden_dim, c.depth, num_critics=2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.log_alpha_prime = torch.ones((), device=device, requires_grad=True)  # CORL's initial value
        self.target_entropy = -float(self.act_dim) if c.target_entropy is None else c.target_entropy
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam(self.critic.parameters(), c.critic_lr)
        self.alpha_optimizer = self.adam([self.log_alpha], c.alpha_lr)
        self.alpha_prime_optimizer = self.adam([self.log_alpha_prime], c.critic_lr)
        # log of the uniform proposal density on [-1, 1]^act_dim
        self.uniform_log_density = self.act_dim * math.log(0.5)

    def update(self, batch) -> dict[str, torch.Tensor]:
        bc_warmup = self.num_updates < self.config.bc_warmup_steps
        metrics = self._step(self, *self._normalized(batch), bc_warmup=bc_warmup)
        self.num_updates += 1
        return metrics

    def _sampled_q_logsumexp(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """temperature * logsumexp_a~((Q_i(s, a~) - log mu(a~)) / temperature) for each critic: (2, B).

        a~: num_sampled_actions uniform actions (mu = 0.5^act_dim), policy actions at s and at s'
        (mu = pi), all scored at s (the importance-sampled estimate of CQL(H); COMBO reuses it)."""
        c = self.config
        batch_size, n = obs.shape[0], c.num_sampled_actions
        with torch.no_grad():
            repeated = torch.cat([obs, next_obs]).repeat_interleave(n, dim=0)   # (2 B n, obs_dim)
            policy_actions, policy_log_pi = self.actor.sample(repeated, self.generator)
            random_actions = 2.0 * torch.rand(batch_size * n, self.act_dim, device=obs.device,
                                              generator=self.generator) - 1.0
            sampled_actions = torch.cat([random_actions, policy_actions])        # (3 B n, act_dim)
            log_density = torch.cat([torch.full((batch_size * n,), self.uniform_log_density, device=obs.device),
                                     policy_log_pi])
        obs_repeated = obs.repeat_interleave(n, dim=0).repeat(3, 1)             # every action is scored at s
        q_sampled = self.critic(obs_repeated, sampled_actions) - log_density    # (2, 3 B n)
        # (2, [uniform, pi(s), pi(s')], B, n) -> (2, B, 3 n)
        q_sampled = q_sampled.view(2, 3, batch_size, n).permute(0, 2, 1, 3).reshape(2, batch_size, 3 * n)
        return torch.logsumexp(q_sampled / c.temperature, dim=-1) * c.temperature

    def _conservative_gap(self, obs: torch.Tensor, next_obs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """E_s[logsumexp_a~ Q_i(s, a~)] - E_D[Q_i(s, a)] per critic, (2,); q = Q(s, a) of the batch, (2, B).
        COMBO (baselines/combo.py) overrides which rows each side is taken on."""
        return (self._sampled_q_logsumexp(obs, next_obs) - q).mean(dim=1)

    def _update_step(self, obs, actions, rewards, next_obs, dones, bc_warmup: bool) -> dict[str, torch.Tensor]:
        c = self.config

        # Policy and temperature.
        new_actions, log_pi = self.actor.sample(obs, self.generator)
        alpha = self.log_alpha.detach().exp()
        alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        if bc_warmup:
            actor_loss = (alpha * log_pi - self.actor.log_prob(obs, actions)).mean()
        else:
            with frozen(self.critic):
                q_new = self.critic(obs, new_actions).min(dim=0).values
            actor_loss = (alpha * log_pi - q_new).mean()

        # Critic: TD loss.
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.sample(next_obs, self.generator)
            next_q = self.critic_target(next_obs, next_actions).min(dim=0).values
            if c.backup_entropy:
                next_q = next_q - alpha * next_log_pi
            td_target = rewards + c.gamma * (1.0 - dones) * next_q
        q = self.critic(obs, actions)                                    # (2, B)
        td_loss = (q - td_target).square().mean(dim=1).sum()

        # Critic: conservative term, logsumexp over importance-sampled actions at s.
        cql_gap = self._conservative_gap(obs, next_obs, q)                     # (2,), one per critic
        if c.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            cql_loss = (alpha_prime.detach() * c.cql_alpha * (cql_gap - c.target_action_gap)).sum()
            alpha_prime_loss = -0.5 * (alpha_prime * c.cql_alpha * (cql_gap.detach() - c.target_action_gap)).sum()
        else:
            alpha_prime = torch.ones((), device=obs.device)
            cql_loss = c.cql_alpha * cql_gap.sum()
            alpha_prime_loss = torch.zeros((), device=obs.device)
        critic_loss = td_loss + cql_loss

        # All losses come from the same parameters and touch disjoint ones: one backward pass.
        optimizers = [self.actor_optimizer, self.critic_optimizer, self.alpha_optimizer]
        if c.lagrange:
            optimizers.append(self.alpha_prime_optimizer)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        (actor_loss + alpha_loss + critic_loss + alpha_prime_loss).backward()
        for optimizer in optimizers:
            optimizer.step()
        soft_update(self.critic_target, self.critic, c.tau)

        return {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach(), "cql_gap": cql_gap.detach().mean(),
                "actor_loss": actor_loss.detach(), "alpha": alpha, "alpha_prime": alpha_prime.detach(),
                "entropy": -log_pi.detach().mean(), "q_mean": q.detach().mean()}
