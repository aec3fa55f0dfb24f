"""The three D4RL MuJoCo locomotion tasks: specs, D4RL reference scores, env construction.

We run the gymnasium `-v4` environments. D4RL's v2 datasets were collected on gym's `-v2`/`-v3`
(mujoco-py) classes; `-v4` uses the same MJCF models, observation layout, reward terms and
termination rules on the `mujoco` bindings, while `-v5` changes the dynamics and rewards
(walker2d right-foot friction 0.9 -> 1.9; hopper/walker2d no healthy reward on the terminal step).
The evidence is in docs/notes/datasets-and-envs.md.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import mujoco
import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    name: str
    gym_id: str
    obs_dim: int
    act_dim: int
    ref_min_score: float  # D4RL normalized score 0: return of a random policy
    ref_max_score: float  # D4RL normalized score 100: return of an expert SAC policy
    max_episode_steps: int = 1000


# Reference returns from D4RL's d4rl/infos.py (REF_MIN_SCORE / REF_MAX_SCORE, keys "<env>-random-v2" etc.;
# the values are the same for every dataset of an env), also listed in /work/shared/README.md.
ENV_SPECS: dict[str, EnvSpec] = {
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetah-v4", 17, 6, -280.178953, 12135.0),
    "hopper": EnvSpec("hopper", "Hopper-v4", 11, 3, -20.272305, 3234.3),
    "walker2d": EnvSpec("walker2d", "Walker2d-v4", 17, 6, 1.629008, 4592.3),
}
ENV_NAMES: tuple[str, ...] = tuple(ENV_SPECS)


def get_env_spec(name: str) -> EnvSpec:
    try:
        return ENV_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown env {name!r}; valid envs are {list(ENV_NAMES)}") from None


def check_trained_for(env: str, path, what: str, obs_dim: int, act_dim: int, trained_env: str | None,
                      fix: str) -> None:
    """Raise UserError if a saved model (`what` at `path`) was trained for another env or dimensions.

    `trained_env` is the env the file records (None for files that predate the record: then only the
    dimensions can be compared, and halfcheetah and walker2d share them)."""
    from adept.errors import UserError

    spec = get_env_spec(env)
    if trained_env is not None and trained_env != spec.name:
        raise UserError(f"the {what} was trained on {trained_env}, not on this run's env {spec.name}", path, fix)
    if (obs_dim, act_dim) != (spec.obs_dim, spec.act_dim):
        fits = [s.name for s in ENV_SPECS.values() if (s.obs_dim, s.act_dim) == (obs_dim, act_dim)]
        raise UserError(f"the {what} has obs_dim {obs_dim} and act_dim {act_dim} (an env like "
                        f"{' or '.join(fits) or 'none of ' + str(list(ENV_NAMES))}), but this run's env {spec.name} "
                        f"has {spec.obs_dim} and {spec.act_dim}", path, fix)


def normalized_score(env: str, returns):
    """D4RL normalized score, 100 * (return - random) / (expert - random); float in, float out."""
    spec = get_env_spec(env)
    score = 100.0 * (np.asarray(returns, dtype=np.float64) - spec.ref_min_score) / (
        spec.ref_max_score - spec.ref_min_score
    )
    return float(score) if score.ndim == 0 else score


def _forward_mujoco_warning(message: str) -> None:
    # half_cheetah.xml's `settotalmass` is deprecated in MuJoCo >= 3.3 but still applied (total mass 14,
    # checked in tests/test_envs.py). Without a handler MuJoCo prints it and appends it to MUJOCO_LOG.TXT
    # in the working directory every time a halfcheetah env is built.
    if "settotalmass" not in message:
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def _quiet_known_warnings():
    """Hide the two expected warnings of building a v4 env, and only those.

    gymnasium's "Hopper-v4 is out of date" (we use v4 on purpose, see the module docstring) and
    MuJoCo's compiler warning about half_cheetah.xml (see `_forward_mujoco_warning`).
    """
    previous_handler = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_forward_mujoco_warning)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*-v4 is out of date", category=DeprecationWarning)
            yield
    finally:
        mujoco.set_mju_user_warning(previous_handler)


def make_env(name: str, seed: int | None = None) -> gym.Env:
    """One gymnasium env with D4RL's 1000-step limit; `seed` seeds the first reset and the action space."""
    spec = get_env_spec(name)
    with _quiet_known_warnings():
        env = gym.make(spec.gym_id, max_episode_steps=spec.max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vector_env(name: str, num_envs: int, seed: int | None = None) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies in a SyncVectorEnv; with `seed`, copy i is reset with seed + i."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    get_env_spec(name)  # fail with the list of valid names before building anything
    envs = gym.vector.SyncVectorEnv([partial(make_env, name) for _ in range(num_envs)])
    if seed is not None:
        envs.reset(seed=[seed + i for i in range(num_envs)])
    return envs
