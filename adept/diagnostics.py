"""Estimates of the quantities in Theorem 4.4: J(pi) >= J_hat(pi) - C with

    C = 2 r_max ( (eps_r + 2 eps_pi) / (1 - gamma) + gamma (2 eps_pi + eps_m) / (1 - gamma)^2 ).   Eq. (9)

eps_r and eps_m are defined as total-variation distances between the true and the model's reward
and next-state distributions under the current policy (Defs. 4.1-4.2). The paper says they "could be
estimated by measuring the mean square error"; we follow that: importance-weighted (to the current
policy) mean squared one-step errors on held-out offline transitions, in normalized units (states
z-scored per dimension and averaged over dimensions; rewards divided by the dataset's reward std).
MSE-as-TV is the paper's HEURISTIC, not a bound: an MSE is neither in [0, 1] nor an upper bound on a
TV distance, so C computed from it is a diagnostic to compare across runs, not a guarantee. With
gamma = 0.99 the 1/(1-gamma)^2 factor is 1e4, so C is large unless the errors are tiny.

eps_pi (Def. 4.3) is a TV distance between two policies, which we can estimate without heuristics:
TV(p, q) = E_{a~p}[max(0, 1 - q(a|s)/p(a|s))], a Monte Carlo average over dataset states and
actions drawn from the old policy. Def. 4.3 takes the max over states; we report the mean over states
(`eps_pi`, used in C: it is what Lemma A.1's proof actually bounds before taking the max) and the max
over states of the per-state estimates (`eps_pi_max`, noisy and biased upward with few samples).
"""
from __future__ import annotations

from typing import Protocol

import torch

from adept.importance import ImportanceConfig, importance_weights
from adept.rollouts import generate_rollouts
from adept.world_model import WorldModel


class StochasticPolicy(Protocol):
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor: ...
    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def model_errors(world_model: WorldModel, observations: torch.Tensor, actions: torch.Tensor,
                 rewards: torch.Tensor, next_observations: torch.Tensor, weights: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """eps_m and eps_r estimates: (weighted) mean squared one-step errors of `world_model.step`.

    The model transition is exactly the one PE uses (guided sampling, clipping). Weights are
    normalized to sum 1 here, so unnormalized importance weights are fine; None = uniform.
    """
    pred_next, pred_reward, _ = world_model.step(observations, actions, generator)
    state_error = (world_model.normalize_obs(pred_next) - world_model.normalize_obs(next_observations)) \
        .square().mean(-1)
    reward_error = ((pred_reward - rewards) / world_model.reward_std).square()
    if weights is None:
        weights = torch.ones_like(reward_error)
    weights = weights / weights.sum()
    return {"eps_m": (weights * state_error).sum(), "eps_r": (weights * reward_error).sum()}


@torch.no_grad()
def policy_tv_distance(old_policy: StochasticPolicy, new_policy: StochasticPolicy, observations: torch.Tensor,
                       num_action_samples: int = 8) -> dict[str, torch.Tensor]:
    """Monte Carlo TV(old(.|s), new(.|s)) = E_{a~old}[max(0, 1 - new(a|s)/old(a|s))] on states (N, obs_dim).

    Returns `eps_pi` (mean over states) and `eps_pi_max` (max over states of the per-state estimate).
    """
    if num_action_samples < 1:
        raise ValueError(f"num_action_samples must be >= 1, got {num_action_samples}")
    repeated = observations.repeat(num_action_samples, 1)
    sampled = old_policy.act(repeated, deterministic=False)
    log_ratio = new_policy.log_prob(repeated, sampled) - old_policy.log_prob(repeated, sampled)
    # max(0, 1 - exp(d)) = -expm1(min(d, 0)), exact and stable for any d.
    per_sample = -torch.expm1(torch.clamp(log_ratio, max=0.0))
    per_state = per_sample.view(num_action_samples, observations.shape[0]).mean(0)
    return {"eps_pi": per_state.mean(), "eps_pi_max": per_state.max()}


def return_gap_bound(eps_r: torch.Tensor | float, eps_m: torch.Tensor | float, eps_pi: torch.Tensor | float,
                     r_max: torch.Tensor | float, gamma: float) -> torch.Tensor | float:
    """C of Eq. (9)."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1) for the bound of Eq. (9), got {gamma}")
    return 2.0 * r_max * ((eps_r + 2.0 * eps_pi) / (1.0 - gamma) + gamma * (2.0 * eps_pi + eps_m) / (1.0 - gamma) ** 2)


def return_gap_bound_appendix(eps_r: torch.Tensor | float, eps_m: torch.Tensor | float,
                              eps_pi: torch.Tensor | float, r_max: torch.Tensor | float, gamma: float,
                              horizon: int | None = None) -> torch.Tensor | float:
    """C as the last line of Theorem A.4's proof sums it: 2 r_max sum_t gamma^t (eps_r + (t+1) eps_m + 2 (t+1) eps_pi).

    horizon=None: the infinite sum, 2 r_max (eps_r / (1-gamma) + (eps_m + 2 eps_pi) / (1-gamma)^2). It
    exceeds Eq. (9) by exactly 2 r_max eps_m / (1-gamma): sum_t (t+1) gamma^t = 1/(1-gamma)^2 =
    1/(1-gamma) + gamma/(1-gamma)^2, and the proof's closing equality keeps both parts for eps_pi but
    only the second for eps_m. horizon=H: the sum over t = 0..H-1, the bound for H-step returns.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1) for the bound of Theorem A.4, got {gamma}")
    if horizon is None:
        return 2.0 * r_max * (eps_r / (1.0 - gamma) + (eps_m + 2.0 * eps_pi) / (1.0 - gamma) ** 2)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 (or None for the infinite sum), got {horizon}")
    discounted = sum(gamma ** t for t in range(horizon))
    discounted_steps = sum((t + 1) * gamma ** t for t in range(horizon))
    return 2.0 * r_max * (eps_r * discounted + (eps_m + 2.0 * eps_pi) * discounted_steps)


class PolicyWithGenerator:
    """`policy` whose sampled actions come from `generator` instead of the policy's own generator.

    Evaluation-time sampling (diagnostics, ground truth) must not advance the learner's training
    generator, or training would depend on how often evaluation runs."""

    def __init__(self, policy, generator: torch.Generator):
        self.policy, self.generator = policy, generator

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.policy.act(obs, deterministic, generator=self.generator)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.policy.log_prob(obs, actions)


@torch.no_grad()
def return_gap_report(world_model: WorldModel, policy: StochasticPolicy, batch, *, gamma: float = 0.99,
                      horizon: int = 10, behavior_policy: StochasticPolicy | None = None,
                      previous_policy: StochasticPolicy | None = None, importance: ImportanceConfig | None = None,
                      start_obs: torch.Tensor | None = None, num_action_samples: int = 8,
                      generator: torch.Generator | None = None) -> dict[str, float]:
    """Everything of Theorem 4.4 in one dict of floats, for the runner to log next to the real return J.

    batch: offline transitions (fields of baselines.replay.Batch, raw units), ideally held out from
      the world model's training data.
    behavior_policy: pi_D (e.g. a BC fit); with it, eps_r/eps_m are importance-weighted to `policy`,
      without it they are plain MSEs (errors under the data distribution).
    previous_policy: the policy at the previous report; eps_pi = TV(previous, policy), 0 if None.
    start_obs: start states of the J-hat rollouts (default: the batch's observations), H = `horizon`
      steps as in PE. J_hat is a discounted H-step model return from dataset states while J is a
      full episode from the env's initial states: they are logged side by side, not expected equal.
    """
    obs, act = batch.observations, batch.actions
    weights, is_stats = None, {}
    if behavior_policy is not None:
        weights, is_stats = importance_weights(policy.log_prob(obs, act), behavior_policy.log_prob(obs, act),
                                               importance)
    errors = model_errors(world_model, obs, act, batch.rewards, batch.next_observations, weights, generator)
    if previous_policy is not None:
        tv = policy_tv_distance(previous_policy, policy, obs, num_action_samples)
    else:
        zero = torch.zeros((), device=obs.device)
        tv = {"eps_pi": zero, "eps_pi_max": zero}
    rollouts = generate_rollouts(world_model, policy, obs if start_obs is None else start_obs, horizon, gamma,
                                 generator)
    r_max = world_model.reward_abs_max
    bound = return_gap_bound(errors["eps_r"], errors["eps_m"], tv["eps_pi"], r_max, gamma)
    j_hat = rollouts.stats["model_return"]
    report = {
        **errors, **tv, "r_max": r_max, "bound_C": bound, "J_hat": j_hat, "J_hat_minus_C": j_hat - bound,
        **{key: is_stats[key] for key in ("is_ess_fraction", "is_clipped_fraction") if key in is_stats},
    }
    names = list(report)
    values = torch.stack([report[name].float().reshape(()) for name in names]).tolist()  # one host sync
    return dict(zip(names, values))
