"""D4RL `medium` and `medium-replay` recipes for the generated source, from the collector's snapshots and buffers.

- `medium`: `size` transitions (default 1M) collected with a saved collector snapshot, actions
  *sampled* from it, episodes reset after a terminal or the 1000-step limit, the last one cut where
  `size` ends (D4RL's recipe). The snapshot is online SAC stopped at about a third of expert
  return (adept.collector); by default the one shipped in adept/collector_snapshots/.
  The data are a pure function of (snapshot, seed) on one machine.
- `medium-replay`: every transition the collector collected before the snapshot, in collection
  order (D4RL: "the replay buffer of the agent until it reached medium"). It is a product of the
  training run, not of the snapshot: it is read from the run's `replay.hdf5` in
  `collector_run_dir(env, seed)`, made by `python -m adept collector train` (deterministic
  given the seed on one machine). The buffer is not shipped: it is tens of MB per env.

The snapshot file (`policy.pt`) and its loader live in adept.collector. The metadata these recipes
write into the dataset files keep their keys (`policy`, `checkpoint_sha256`,
`matches_shipped_checkpoint`, ...) as before the collector got its name, so that datasets generated
before and after it are identical byte for byte.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from adept.collector import CollectorSnapshot, collector_run_dir, load_collector_snapshot, same_actor, shipped_snapshot
from adept.data.generated import collect_transitions, register_recipe, split_seed
from adept.data.hdf5 import read_d4rl_hdf5, write_d4rl_hdf5
from adept.data.schema import validate_layout
from adept.envs import EnvSpec, get_env_spec

MEDIUM_DEFAULT_SIZE = 1_000_000  # D4RL's medium datasets hold 1M transitions


def policy_metadata(snapshot: CollectorSnapshot) -> dict[str, Any]:
    """What the dataset's `metadata/policy` records about the collector snapshot."""
    info = snapshot.info
    return {
        "type": "online SAC snapshot (tanh-Gaussian actor), actions sampled",
        "checkpoint": snapshot.path.name, "checkpoint_sha256": snapshot.sha256,
        "train_seed": info["seed"], "train_steps": info["train_steps"], "target_return": info["target_return"],
        "reached_target": info["reached_target"], "stop_eval_return_mean": info["stop_eval_return_mean"],
        "measured_return_mean": info["measured_return_mean"], "measured_return_std": info["measured_return_std"],
        "measured_episodes": info["measured_episodes"], "command": info["command"],
    }


def collect_with_policy(spec: EnvSpec, snapshot: CollectorSnapshot, size: int, seed: int,
                        progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`size` transitions with actions sampled from `snapshot`, D4RL style; deterministic given (snapshot, seed)."""
    if snapshot.env != spec.name:
        raise ValueError(f"collector snapshot {snapshot.path} was trained on {snapshot.env}, not {spec.name}")
    env_seed, action_seed = split_seed(seed, 2)
    device = snapshot.learner.device
    generator = torch.Generator(device=device).manual_seed(action_seed)

    def sampled_action(obs: np.ndarray) -> tuple[np.ndarray, float]:
        actions, log_probs = snapshot.sample(torch.as_tensor(obs, dtype=torch.float32, device=device)[None], generator)
        row = torch.cat([actions[0], log_probs]).cpu().numpy()  # one host transfer per step
        return row[:-1], float(row[-1])

    arrays = collect_transitions(spec, sampled_action, size, env_seed, progress, desc=f"{spec.name}-medium")
    return arrays, {"policy": policy_metadata(snapshot), "env_seed": env_seed, "action_seed": action_seed}


def medium_recipe(spec: EnvSpec, size: int | None, seed: int, progress: bool,
                  policy_path: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """D4RL `medium`: 1M transitions (or `size`) from a collector snapshot (default: the shipped one)."""
    path = Path(policy_path) if policy_path is not None else shipped_snapshot(spec.name)
    if policy_path is None and not path.is_file():
        raise FileNotFoundError(f"no shipped collector snapshot for {spec.name} ({path}); train one with "
                                f"`python -m adept collector train --env {spec.name}` and collect with "
                                f"`python -m adept collector collect --policy <run dir>/policy.pt`")
    snapshot = load_collector_snapshot(path)
    return collect_with_policy(spec, snapshot, MEDIUM_DEFAULT_SIZE if size is None else size, seed, progress)


def medium_replay_recipe(spec: EnvSpec, size: int | None, seed: int, progress: bool,
                         run_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """D4RL `medium-replay`: the training run's replay buffer up to the snapshot (first `size` rows if given).

    `seed` is the training seed: the buffer comes from `collector_run_dir(env, seed)` unless `run_dir`
    is given.
    """
    run_dir = Path(run_dir) if run_dir is not None else collector_run_dir(spec.name, seed)
    replay_path = run_dir / "replay.hdf5"
    if not replay_path.is_file():
        raise FileNotFoundError(
            f"medium-replay needs the replay buffer of a collector training run, and {replay_path} does not "
            f"exist. Make it with `python -m adept collector train --env {spec.name} --seed {seed} "
            f"--out-dir {run_dir}` (hours on a CPU; deterministic given the seed on one machine).")
    arrays, metadata = read_d4rl_hdf5(replay_path, header_check=lambda a: validate_layout(a, spec, str(replay_path)))
    if metadata.get("env") != spec.name:
        raise ValueError(f"{replay_path} holds {metadata.get('env')!r} data, not {spec.name}")
    available = len(arrays["rewards"])
    if size is not None:
        if size > available:
            raise ValueError(f"size={size} but the replay buffer in {replay_path} holds {available} transitions; "
                             f"leave size unset to take all of it")
        arrays = {key: value[:size] for key, value in arrays.items()}
    behavior = metadata.get("behavior", {})  # the collector's record (key kept from before the rename)
    policy = {
        "type": "replay buffer of online SAC up to the snapshot (uniform actions first, then sampled)",
        "replay_file": str(replay_path), "checkpoint_sha256": metadata["policy_sha256"],
        "matches_shipped_checkpoint": same_actor(run_dir / "policy.pt", shipped_snapshot(spec.name)),
        **{k: behavior[k] for k in ("seed", "train_steps", "target_return", "reached_target",
                                   "measured_return_mean", "command") if k in behavior},
    }
    return arrays, {"policy": policy, "replay_transitions": available}


def write_policy_dataset(policy_path: str | Path, out: str | Path, *, size: int | None = None, seed: int = 0,
                         progress: bool = True) -> tuple[Path, CollectorSnapshot]:
    """A `medium`-recipe file from any saved collector snapshot (not only the shipped one), written atomically."""
    snapshot = load_collector_snapshot(policy_path)
    spec = get_env_spec(snapshot.env)
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of transitions, got {size}")
    arrays, recipe_metadata = collect_with_policy(spec, snapshot, MEDIUM_DEFAULT_SIZE if size is None else size,
                                                  seed, progress)
    metadata = {"generator": "adept.data.policy_datasets", "recipe": "medium", "env": spec.name,
                "dataset": "medium", "env_id": spec.gym_id, "max_episode_steps": spec.max_episode_steps,
                "seed": seed, "size": len(arrays["rewards"]), **recipe_metadata}
    return write_d4rl_hdf5(out, arrays, metadata), snapshot


register_recipe("medium", medium_recipe)
register_recipe("medium-replay", medium_replay_recipe)
