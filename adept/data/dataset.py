"""OfflineDataset: the transitions of one offline dataset as numpy arrays, with episode helpers.

Transition t is (observations[t], actions[t], rewards[t], next_observations[t], terminals[t]).
`next_observations` comes from the file, never from observations[t + 1], so no transition spans
two episodes.

How episode ends are treated:
- `terminals[t]`: the env terminated (hopper/walker2d fell). Learners do not bootstrap from s'.
- `timeouts[t]`: the episode was cut by the 1000-step limit. This is not a terminal: learners
  bootstrap through it (the `dones` of a Batch are terminals only). The transition is kept, unlike
  d4rl.qlearning_dataset, because the file stores its true next observation.
- `episode_ends` marks terminals, timeouts, the last transition (a collection cut mid-episode),
  and unflagged boundaries (next_observations[t] differs from observations[t + 1]) which some
  replay-buffer files contain.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from adept.data.schema import validate_layout, validate_values
from adept.envs import get_env_spec, normalized_score


@dataclass(eq=False)
class OfflineDataset:
    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    env: str
    dataset: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # "qpos", "qvel", "action_log_probs" when present
    path: Path | None = None

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        env: str,
        dataset: str,
        source: str,
        metadata: dict[str, Any] | None = None,
        path: Path | None = None,
    ) -> OfflineDataset:
        """Validate D4RL-layout arrays (keys as in the hdf5 file) and convert them to the contract dtypes."""
        where = str(path) if path is not None else f"{source} {env}-{dataset} data"
        validate_layout(arrays, get_env_spec(env), where)
        validate_values(arrays, where)
        return cls(
            observations=np.asarray(arrays["observations"], dtype=np.float32),
            actions=np.asarray(arrays["actions"], dtype=np.float32),
            rewards=np.asarray(arrays["rewards"], dtype=np.float32).reshape(-1),
            next_observations=np.asarray(arrays["next_observations"], dtype=np.float32),
            terminals=np.asarray(arrays["terminals"]).astype(bool).reshape(-1),
            timeouts=np.asarray(arrays["timeouts"]).astype(bool).reshape(-1),
            env=env,
            dataset=dataset,
            source=source,
            metadata=dict(metadata or {}),
            infos={key.removeprefix("infos/"): value for key, value in arrays.items() if key.startswith("infos/")},
            path=path,
        )

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @cached_property
    def unflagged_boundaries(self) -> np.ndarray:
        """(N,) bool: transitions whose next observation is not the following observation, without a flag."""
        jumps = np.zeros(len(self), dtype=bool)
        same = np.isclose(self.next_observations[:-1], self.observations[1:], rtol=1e-5, atol=1e-6).all(axis=1)
        jumps[:-1] = ~same & ~self.terminals[:-1] & ~self.timeouts[:-1]
        return jumps

    @cached_property
    def episode_ends(self) -> np.ndarray:
        """(N,) bool: the last transition of each episode (see the module docstring)."""
        ends = self.terminals | self.timeouts | self.unflagged_boundaries
        ends[-1] = True
        return ends

    @property
    def episode_starts(self) -> np.ndarray:
        """(num_episodes,) int: index of the first transition of each episode."""
        return np.concatenate(([0], np.flatnonzero(self.episode_ends[:-1]) + 1))

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.append(self.episode_starts, len(self)))

    def episode_returns(self) -> np.ndarray:
        """(num_episodes,) float64 undiscounted return of each episode, the last one possibly partial."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def summary(self) -> dict[str, Any]:
        """Counts and return statistics, as printed by `python -m adept datasets inspect`."""
        returns = self.episode_returns()
        return {
            "env": self.env,
            "dataset": self.dataset,
            "source": self.source,
            "transitions": len(self),
            "episodes": self.num_episodes,
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
            "unflagged_boundaries": int(self.unflagged_boundaries.sum()),
            "episode_length_mean": float(self.episode_lengths().mean()),
            "return_mean": float(returns.mean()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "score_mean": normalized_score(self.env, float(returns.mean())),
            "score_min": normalized_score(self.env, float(returns.min())),
            "score_max": normalized_score(self.env, float(returns.max())),
        }


def split_holdout(n: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, held-out) index split, at least one transition on each side.

    Training indices are sorted; held-out indices stay in random order, so any prefix of them
    (the evaluation subset) is a uniform sample.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if n < 2:
        raise ValueError(f"the dataset has {n} transitions; need at least 2 to hold some out")
    order = np.random.default_rng(seed).permutation(n)
    n_holdout = min(max(1, round(n * holdout_fraction)), n - 1)
    return np.sort(order[n_holdout:]), order[:n_holdout]
