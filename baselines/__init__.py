"""Offline RL learners (one readable file each) and the registry the harness builds them from.

    learner = make_learner("iql", obs_dim, act_dim, device, dataset=dataset, overrides={"beta": 3.0})
    metrics = learner.update(batch)          # dict of scalar tensors, no host sync
    actions = learner.act(observations)      # raw observations in, actions in [-1, 1]
    save_learner("policy.pt", learner); learner = load_learner("policy.pt", device)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from adept.config import from_dict, to_dict
from adept.outputs import atomic_torch_save
from baselines.bc import BC, BCConfig
from baselines.combo import COMBO, COMBOConfig
from baselines.common import DataStats, LearnerConfig, OfflineLearner
from baselines.cql import CQL, CQLConfig
from baselines.diffuser import Diffuser, DiffuserConfig
from baselines.iql import IQL, IQLConfig
from baselines.replay import Batch, MixedSampler, TensorBuffer
from baselines.sac import SAC, SACConfig
from baselines.td3bc import TD3BC, TD3BCConfig

LEARNERS: dict[str, tuple[type[OfflineLearner], type[LearnerConfig]]] = {
    "iql": (IQL, IQLConfig),
    "sac": (SAC, SACConfig),
    "bc": (BC, BCConfig),
    "td3bc": (TD3BC, TD3BCConfig),
    "cql": (CQL, CQLConfig),
    "combo": (COMBO, COMBOConfig),   # COMBO's critic: needs model rollouts (the `combo` method)
    "diffuser": (Diffuser, DiffuserConfig),  # a planner trained on trajectory segments (the `diffuser` method)
}

SAVE_FORMAT = "adept-learner/1"


def _lookup(name: str) -> tuple[type[OfflineLearner], type[LearnerConfig]]:
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; valid learners are {sorted(LEARNERS)}")
    return LEARNERS[name]


def learner_config(name: str, overrides: dict | None = None) -> LearnerConfig:
    """The learner's config dataclass: defaults, then `overrides` (validated; unknown keys rejected)."""
    return from_dict(_lookup(name)[1], overrides or {}, where=f"learner ({name})")


def make_learner(name: str, obs_dim: int, act_dim: int, device: str | torch.device,
                 stats: DataStats | None = None, overrides: dict | None = None, *,
                 dataset: Any = None) -> OfflineLearner:
    """Build learner `name`. Normalization comes from `stats`, or else is computed from `dataset`
    (an OfflineDataset) as the learner's config asks (normalize_obs, reward_normalization), or else
    is the identity."""
    learner_cls, _ = _lookup(name)
    config = learner_config(name, overrides)
    if stats is None and dataset is not None:
        stats = DataStats.from_dataset(dataset, normalize_obs=config.normalize_obs,
                                       reward_normalization=config.reward_normalization,
                                       normalize_actions=getattr(config, "normalize_actions", False))
    return learner_cls(obs_dim, act_dim, config, device, stats)


def save_learner(path: str | os.PathLike, learner: OfflineLearner, trained_on: dict | None = None) -> None:
    """Everything needed to rebuild the learner later (name, sizes, config, statistics, state), written
    atomically; `trained_on` ({"env", "dataset", "source"}) lets loaders refuse it for another env."""
    atomic_torch_save({"format": SAVE_FORMAT, "name": learner.name, "obs_dim": learner.obs_dim,
                       "act_dim": learner.act_dim, "config": to_dict(learner.config),
                       "stats": learner.stats.to_dict(), "state_dict": learner.state_dict(),
                       "trained_on": trained_on}, path)


def read_learner_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The payload of a file written by `save_learner`; a corrupt or foreign file is a one-line UserError."""
    from adept.outputs import load_torch_file

    return load_torch_file(path, "learner saved by baselines.save_learner",
                           "pass a policy.pt written by `python -m adept train` or a pi_D written by "
                           "`python -m adept behavior-policy`", fmt=SAVE_FORMAT,
                           required=("name", "obs_dim", "act_dim", "config", "stats", "state_dict"),
                           map_location=map_location)


def load_learner(path: str | os.PathLike, device: str | torch.device, env: str | None = None) -> OfflineLearner:
    """A learner saved by `save_learner`, on `device`; with `env`, one trained for another env is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"learner file {path} does not exist")
    saved = read_learner_file(path, map_location=device)
    if env is not None:
        from adept.envs import check_trained_for

        check_trained_for(env, path, "learner", saved["obs_dim"], saved["act_dim"],
                          (saved.get("trained_on") or {}).get("env"), f"pass a policy trained on {env}")
    learner = make_learner(saved["name"], saved["obs_dim"], saved["act_dim"], device,
                           stats=DataStats.from_dict(saved["stats"]), overrides=saved["config"])
    learner.load_state_dict(saved["state_dict"])
    return learner


__all__ = ["LEARNERS", "Batch", "BC", "BCConfig", "COMBO", "COMBOConfig", "CQL", "CQLConfig", "DataStats",
           "Diffuser", "DiffuserConfig", "IQL", "IQLConfig",
           "LearnerConfig", "MixedSampler", "OfflineLearner", "SAC", "SACConfig", "TD3BC", "TD3BCConfig",
           "TensorBuffer", "learner_config", "load_learner", "make_learner",
           "read_learner_file", "save_learner"]
