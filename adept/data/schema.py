"""Validation of the D4RL array layout: required keys, one length, dtypes and per-env dimensions.

The checks run on anything with `.shape` and `.dtype` (numpy arrays or h5py datasets), so a wrong
file is rejected from its header before its arrays are read.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adept.envs import EnvSpec, get_env_spec

DATASET_NAMES = ("random", "medium", "medium-replay")
SOURCE_NAMES = ("d4rl", "generated", "minari")
REQUIRED_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
FLAG_KEYS = ("terminals", "timeouts")


def check_names(env: str, dataset: str, source: str = "d4rl") -> EnvSpec:
    """Reject unknown env/dataset/source names with the list of valid ones; return the env's spec."""
    spec = get_env_spec(env)
    if dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets are {list(DATASET_NAMES)}")
    if source not in SOURCE_NAMES:
        raise ValueError(f"unknown source {source!r}; valid sources are {list(SOURCE_NAMES)}")
    return spec


def validate_layout(arrays: Mapping[str, Any], spec: EnvSpec, where: str) -> int:
    """Check keys, shapes and dtypes against `spec`; return the number of transitions.

    `where` names the data in error messages (usually the file path). Optional `infos/*` arrays
    must have one row per transition.
    """
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{where} is missing required key(s) {missing}; a D4RL-layout file needs {list(REQUIRED_KEYS)}")
    n = arrays["observations"].shape[0] if arrays["observations"].ndim else 0
    if n == 0:
        raise ValueError(f"{where} holds no transitions")
    expected_shapes = {
        "observations": [(n, spec.obs_dim)],
        "next_observations": [(n, spec.obs_dim)],
        "actions": [(n, spec.act_dim)],
        "rewards": [(n,), (n, 1)],  # some D4RL versions store rewards as a column
        "terminals": [(n,), (n, 1)],
        "timeouts": [(n,), (n, 1)],
    }
    for key, shapes in expected_shapes.items():
        shape = tuple(arrays[key].shape)
        if shape not in shapes:
            raise ValueError(
                f"{where}: {key} has shape {shape}, expected {' or '.join(map(str, shapes))} "
                f"({spec.name}: obs_dim={spec.obs_dim}, act_dim={spec.act_dim}); "
                "is the file for another env, or truncated?"
            )
    for key in FLOAT_KEYS:
        if arrays[key].dtype.kind != "f":
            raise ValueError(f"{where}: {key} has dtype {arrays[key].dtype}, expected a float type")
    for key in FLAG_KEYS:
        if arrays[key].dtype.kind not in "biuf":
            raise ValueError(f"{where}: {key} has dtype {arrays[key].dtype}, expected bool")
    for key, array in arrays.items():
        if key.startswith("infos/") and (array.ndim == 0 or array.shape[0] != n):
            raise ValueError(f"{where}: {key} has shape {tuple(array.shape)}, expected {n} rows (one per transition)")
    return n


def validate_values(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Value checks once the arrays are in memory: finite floats, 0/1 flags."""
    for key in FLOAT_KEYS:
        if not np.isfinite(arrays[key]).all():
            bad = int(np.flatnonzero(~np.isfinite(arrays[key]).reshape(len(arrays[key]), -1).all(axis=1))[0])
            raise ValueError(f"{where}: {key} contains NaN or inf (first at transition {bad})")
    for key in FLAG_KEYS:
        flags = arrays[key]
        if flags.dtype != np.bool_ and not np.isin(flags, (0, 1)).all():
            raise ValueError(f"{where}: {key} must hold only 0/1 (true/false) values")
