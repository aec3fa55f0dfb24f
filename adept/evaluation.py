"""Policy evaluation in the real environment: batched over a gymnasium vector env.

A policy is any callable mapping an observation batch (n, obs_dim) float32 to actions (n, act_dim)
in [-1, 1]; it is called once per env step for all running episodes. Episode i is reset with seed
`seed + i`, so results do not depend on `num_envs` (checked against one env at a time in
tests/test_evaluation.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adept.envs import get_env_spec, make_vector_env, normalized_score

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    env: str
    returns: np.ndarray  # (n_episodes,) float64 undiscounted returns
    lengths: np.ndarray  # (n_episodes,) int steps, 1000 unless the episode terminated
    scores: np.ndarray  # (n_episodes,) D4RL normalized scores (0-100 scale)

    # std is over this evaluation's episodes (ddof=0); across-seed spread is computed by reporting
    @property
    def return_mean(self) -> float:
        return float(self.returns.mean())

    @property
    def return_std(self) -> float:
        return float(self.returns.std())

    @property
    def score_mean(self) -> float:
        return float(self.scores.mean())

    @property
    def score_std(self) -> float:
        return float(self.scores.std())

    @property
    def length_mean(self) -> float:
        return float(self.lengths.mean())

    def summary(self) -> dict[str, float]:
        """The eval.csv columns (without step and wall_time_s)."""
        return {"return_mean": self.return_mean, "return_std": self.return_std, "score_mean": self.score_mean,
                "score_std": self.score_std, "episode_length_mean": self.length_mean}


def evaluate(policy: Policy, env: str, n_episodes: int, seed: int, num_envs: int | None = None) -> EvalResult:
    """Run `n_episodes` full episodes (until termination or the 1000-step limit) and score them.

    `num_envs` parallel copies (default: one per episode) run the episodes in rounds; an env that
    finished its episode keeps being stepped with the batch but its rewards are ignored.
    """
    spec = get_env_spec(env)
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    num_envs = min(num_envs or n_episodes, n_episodes)
    returns = np.zeros(n_episodes, dtype=np.float64)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    envs = make_vector_env(env, num_envs)
    try:
        for first in range(0, n_episodes, num_envs):
            episodes = np.arange(first, min(first + num_envs, n_episodes))
            running = np.zeros(num_envs, dtype=bool)
            running[: len(episodes)] = True  # spare copies in a last, partial round are ignored
            obs, _ = envs.reset(seed=[seed + first + i for i in range(num_envs)])
            while running.any():
                actions = np.asarray(policy(obs.astype(np.float32)))
                if actions.shape != (num_envs, spec.act_dim):
                    raise ValueError(f"policy returned actions of shape {actions.shape}, expected {(num_envs, spec.act_dim)}")
                obs, rewards, terminated, truncated, _ = envs.step(actions)
                live = running[: len(episodes)]
                returns[episodes[live]] += rewards[: len(episodes)][live]
                lengths[episodes[live]] += 1
                running &= ~(terminated | truncated)
    finally:
        envs.close()
    return EvalResult(env=env, returns=returns, lengths=lengths, scores=normalized_score(env, returns))


def random_policy(act_dim: int, seed: int) -> Policy:
    """Uniform actions in [-1, 1], reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, (len(obs), act_dim)).astype(np.float32)


def torch_policy(act_fn: Callable[[Any], Any], device: Any) -> Policy:
    """Adapt `act_fn(obs_tensor) -> action_tensor` (e.g. a learner's act) to the numpy policy interface.

    One host-to-device copy of the observation batch and one copy of the actions back per env step:
    the MuJoCo envs live on the CPU, so this transfer is the unavoidable minimum.
    """
    import torch

    device = torch.device(device)

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            actions = act_fn(torch.as_tensor(obs, dtype=torch.float32, device=device))
        return actions.cpu().numpy()

    return policy
