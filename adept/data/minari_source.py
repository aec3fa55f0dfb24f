"""Optional source: Minari's MuJoCo datasets converted to the D4RL layout (`pip install -e '.[minari]'`).

Scores on these data are NOT comparable with D4RL's or the paper's: Minari's `mujoco/*` datasets were
collected on the gymnasium v5 envs (different walker2d friction and hopper/walker2d terminal reward,
see docs/notes/datasets-and-envs.md) with other behaviour policies, and Minari has no counterpart
of D4RL's `random` or `medium-replay` (it offers simple, medium and expert). Only `medium` maps.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from adept.data.dataset import OfflineDataset
from adept.data.schema import check_names

MINARI_DATASET_IDS = {"medium": "mujoco/{env}/medium-v0"}


def minari_dataset_id(env: str, dataset: str) -> str:
    check_names(env, dataset, "minari")
    if dataset not in MINARI_DATASET_IDS:
        raise ValueError(
            f"Minari has no dataset matching D4RL {dataset!r}; source=minari offers {sorted(MINARI_DATASET_IDS)}. "
            f"Use source=d4rl or source=generated for {dataset!r}."
        )
    return MINARI_DATASET_IDS[dataset].format(env=env)


def episodes_to_arrays(episodes: Iterable[Any]) -> dict[str, np.ndarray]:
    """Minari episodes -> D4RL-layout arrays.

    Each episode (a minari EpisodeData or a dict with the same fields) holds `observations` with
    T + 1 rows (the final observation included) and T `actions`, `rewards`, `terminations`,
    `truncations`; transition t gets next_observation = observations[t + 1] of the same episode.
    """
    parts: dict[str, list[np.ndarray]] = {key: [] for key in
                                          ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    for index, episode in enumerate(episodes):
        observations = np.asarray(_field(episode, "observations"))
        rewards = np.asarray(_field(episode, "rewards")).reshape(-1)
        steps = len(rewards)
        if observations.ndim != 2 or len(observations) != steps + 1:
            raise ValueError(
                f"Minari episode {index}: expected {steps + 1} observations (one more than its {steps} rewards), "
                f"got shape {observations.shape}"
            )
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(np.asarray(_field(episode, "actions")))
        parts["rewards"].append(rewards)
        terminals = np.asarray(_field(episode, "terminations"), dtype=bool).reshape(-1)
        parts["terminals"].append(terminals)
        parts["timeouts"].append(np.asarray(_field(episode, "truncations"), dtype=bool).reshape(-1) & ~terminals)
    if not parts["rewards"]:
        raise ValueError("the Minari dataset has no episodes")
    dtypes = {"terminals": bool, "timeouts": bool}
    return {key: np.concatenate(chunks).astype(dtypes.get(key, np.float32)) for key, chunks in parts.items()}


def load_minari(env: str, dataset: str, *, download: bool = True) -> OfflineDataset:
    dataset_id = minari_dataset_id(env, dataset)
    try:
        import minari
    except ImportError:
        raise ValueError(
            "source=minari needs the optional package minari: pip install -e '.[minari]' "
            "(or use source=d4rl / source=generated)"
        ) from None
    minari_dataset = minari.load_dataset(dataset_id, download=download)
    arrays = episodes_to_arrays(minari_dataset.iterate_episodes())
    metadata = {
        "minari_dataset_id": dataset_id,
        "minari_version": minari.__version__,
        "comparable_with_d4rl": False,
    }
    return OfflineDataset.from_arrays(arrays, env=env, dataset=dataset, source="minari", metadata=metadata)


def _field(episode: Any, name: str) -> Any:
    return episode[name] if isinstance(episode, Mapping) else getattr(episode, name)
