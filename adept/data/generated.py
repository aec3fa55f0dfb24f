"""D4RL-recipe datasets generated locally with the gymnasium v4 envs, for machines without D4RL files.

Files use the D4RL layout (adept.data.hdf5) with `infos/qpos`, `infos/qvel` (the simulator state
*before* each step, as in D4RL's collect_data.py, so `observations[t]` can be reproduced exactly),
`infos/action_log_probs` when the behaviour policy defines it, and a `metadata/` group that records
how the file was made. Scores on generated data are not the paper's D4RL numbers: same recipe,
different samples (and, for medium/medium-replay, a different behaviour policy).

A recipe is `fn(spec, size, seed, progress) -> (arrays, metadata)` registered under a dataset name
with `register_recipe`; `size=None` means the recipe's own default. This module defines `random`.
Recipes living in other modules register themselves when imported; list those modules in
RECIPE_MODULES so that they are imported on first use.
"""
from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from adept.data.dataset import OfflineDataset
from adept.data.hdf5 import CorruptFileError, read_d4rl_hdf5, write_d4rl_hdf5
from adept.data.schema import DATASET_NAMES, check_names, validate_layout
from adept.envs import EnvSpec, make_env

RANDOM_DEFAULT_SIZE = 1_000_000  # D4RL's random datasets hold 1M transitions

Recipe = Callable[[EnvSpec, int | None, int, bool], tuple[dict[str, np.ndarray], dict[str, Any]]]
# A behaviour policy for collect_transitions: observation (obs_dim,) -> (action (act_dim,), log-prob or None).
BehaviorPolicy = Callable[[np.ndarray], tuple[np.ndarray, float | None]]

RECIPES: dict[str, Recipe] = {}
RECIPE_MODULES: tuple[str, ...] = ("adept.data.policy_datasets",)  # modules that call register_recipe at import


def register_recipe(name: str, fn: Recipe) -> Recipe:
    if name not in DATASET_NAMES:
        raise ValueError(f"cannot register recipe {name!r}: dataset names are {list(DATASET_NAMES)}")
    RECIPES[name] = fn
    return fn


def get_recipe(name: str) -> Recipe:
    for module in RECIPE_MODULES:
        importlib.import_module(module)
    if name not in RECIPES:
        raise ValueError(
            f"no generator recipe for dataset {name!r}; source=generated can make {sorted(RECIPES)}. "
            "Use source=d4rl for the official file, or register a recipe in adept.data.generated."
        )
    return RECIPES[name]


def default_data_dir() -> Path:
    return Path(os.environ.get("ADEPT_DATA_DIR", "~/.adept/datasets")).expanduser()


def generated_filename(env: str, dataset: str, seed: int, size: int | None = None) -> str:
    suffix = f"-n{size}" if size is not None else ""
    return f"{env}-{dataset}-seed{seed}{suffix}.hdf5"


def generated_path(env: str, dataset: str, seed: int, size: int | None = None, data_dir: str | Path | None = None) -> Path:
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return folder / "generated" / generated_filename(env, dataset, seed, size)


def split_seed(seed: int, n: int) -> list[int]:
    """`n` independent seeds from one (env resets and action sampling must not share a stream)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n)]


def collect_transitions(spec: EnvSpec, policy: BehaviorPolicy, size: int, env_seed: int, progress: bool = True,
                        desc: str = "collect") -> dict[str, np.ndarray]:
    """Run `policy` in the env for `size` steps, D4RL style: reset after a terminal or the 1000-step timeout.

    The last episode is cut wherever `size` ends (as in D4RL). `timeouts[t]` is set when the time
    limit ends a non-terminal episode; an episode that terminates on its last allowed step counts as
    terminal (D4RL's collect_data.py would label it a timeout).
    """
    env = make_env(spec.name)
    sim = env.unwrapped.data
    arrays = {
        "observations": np.empty((size, spec.obs_dim), np.float32),
        "actions": np.empty((size, spec.act_dim), np.float32),
        "rewards": np.empty(size, np.float32),
        "next_observations": np.empty((size, spec.obs_dim), np.float32),
        "terminals": np.zeros(size, bool),
        "timeouts": np.zeros(size, bool),
        "infos/qpos": np.empty((size, sim.qpos.size), np.float64),
        "infos/qvel": np.empty((size, sim.qvel.size), np.float64),
    }
    log_probs = np.empty(size, np.float32)
    has_log_prob = True
    obs, _ = env.reset(seed=env_seed)
    for t in tqdm(range(size), desc=desc, unit="step", unit_scale=True, disable=not progress, mininterval=1.0):
        arrays["infos/qpos"][t] = sim.qpos
        arrays["infos/qvel"][t] = sim.qvel
        action, log_prob = policy(obs)
        action = np.asarray(action, dtype=np.float32)  # step with exactly the stored action
        next_obs, reward, terminated, truncated, _ = env.step(action)
        arrays["observations"][t] = obs
        arrays["actions"][t] = action
        arrays["rewards"][t] = reward
        arrays["next_observations"][t] = next_obs
        arrays["terminals"][t] = terminated
        arrays["timeouts"][t] = truncated and not terminated
        has_log_prob = has_log_prob and log_prob is not None
        if has_log_prob:
            log_probs[t] = log_prob
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    if has_log_prob:
        arrays["infos/action_log_probs"] = log_probs
    return arrays


def random_recipe(spec: EnvSpec, size: int | None, seed: int, progress: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """D4RL `random`: actions uniform in [-1, 1]^act_dim, as collect_data.py --random in D4RL."""
    size = RANDOM_DEFAULT_SIZE if size is None else size
    env_seed, action_seed = split_seed(seed, 2)
    rng = np.random.default_rng(action_seed)
    log_density = -spec.act_dim * math.log(2.0)  # uniform on a box of side 2

    def uniform_policy(obs: np.ndarray) -> tuple[np.ndarray, float]:
        return rng.uniform(-1.0, 1.0, spec.act_dim), log_density

    arrays = collect_transitions(spec, uniform_policy, size, env_seed, progress, desc=f"{spec.name}-random")
    policy = {"type": "uniform", "low": -1.0, "high": 1.0,
              "description": "actions i.i.d. uniform in [-1, 1]^act_dim, independent of the observation"}
    return arrays, {"policy": policy, "env_seed": env_seed, "action_seed": action_seed}


register_recipe("random", random_recipe)


def generate(env: str, dataset: str, *, seed: int = 0, size: int | None = None, out: str | Path | None = None,
             data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Generate a dataset with its recipe and write it (atomically) to `out` or the default path."""
    spec = check_names(env, dataset, "generated")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of transitions, got {size}")
    from adept.provenance import versions  # imports torch, which the random recipe does not need

    recipe = get_recipe(dataset)
    arrays, recipe_metadata = recipe(spec, size, seed, progress)
    metadata = {
        "generator": "adept.data.generated",
        "recipe": dataset,
        "env": env,
        "dataset": dataset,
        "env_id": spec.gym_id,
        "max_episode_steps": spec.max_episode_steps,
        "seed": seed,
        "size": len(arrays["rewards"]),
        "versions": versions("h5py", commit=False),
        **recipe_metadata,
    }
    path = Path(out).expanduser() if out is not None else generated_path(env, dataset, seed, size, data_dir)
    return write_d4rl_hdf5(path, arrays, metadata)


def load_generated(env: str, dataset: str, *, path: str | Path | None = None, data_dir: str | Path | None = None,
                   size: int | None = None, seed: int = 0) -> OfflineDataset:
    """Load a generated dataset, generating it first (with a progress bar) when the file is missing."""
    spec = check_names(env, dataset, "generated")
    path = Path(path).expanduser() if path is not None else generated_path(env, dataset, seed, size, data_dir)
    if not path.is_file():
        generate(env, dataset, seed=seed, size=size, out=path)
    try:
        arrays, metadata = read_d4rl_hdf5(path, header_check=lambda arrays: validate_layout(arrays, spec, str(path)))
    except CorruptFileError as err:
        command = f"python -m adept datasets generate --env {env} --dataset {dataset} --seed {seed} --out {path}"
        command += f" --size {size}" if size is not None else ""
        raise CorruptFileError(f"{err}. Delete it and generate it again with `{command}`") from err
    for key, wanted in (("env", env), ("dataset", dataset)):
        if metadata.get(key, wanted) != wanted:
            raise ValueError(f"{path} was generated for {key} {metadata[key]!r}, not {wanted!r}")
    return OfflineDataset.from_arrays(arrays, env=env, dataset=dataset, source="generated", metadata=metadata, path=path)
