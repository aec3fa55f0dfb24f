"""D4RL `medium` and `medium-replay` recipes for the generated source, from online SAC behaviour policies.

- `medium`: `size` transitions (default 1M) collected with a saved behaviour policy, actions
  *sampled* from it, episodes reset after a terminal or the 1000-step limit, the last one cut where
  `size` ends (D4RL's recipe). The policy is a snapshot of online SAC stopped at about a third of
  expert return (adept.online_sac); by default the one shipped in adept/behavior_checkpoints/.
  The data are a pure function of (checkpoint, seed) on one machine.
- `medium-replay`: every transition the online agent collected before the snapshot, in collection
  order (D4RL: "the replay buffer of the agent until it reached medium"). It is a product of the
  training run, not of the checkpoint: it is read from the run's `replay.hdf5` in
  `behavior_run_dir(env, seed)`, made by `python -m adept behavior-agent train` (deterministic
  given the seed on one machine). The buffer is not shipped: it is tens of MB per env.

The snapshot file (`policy.pt`, written by `save_behavior_policy`) holds the SAC actor only
(float32), the observation statistics, the SAC config needed to rebuild it, and how it was made.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adept.data.generated import collect_transitions, default_data_dir, register_recipe, split_seed
from adept.data.hdf5 import read_d4rl_hdf5, write_d4rl_hdf5
from adept.data.schema import validate_layout
from adept.envs import EnvSpec, get_env_spec

POLICY_FORMAT = "adept-behavior-policy-v1"
MEDIUM_DEFAULT_SIZE = 1_000_000  # D4RL's medium datasets hold 1M transitions
SHIPPED_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "behavior_checkpoints"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shipped_checkpoint(env: str) -> Path:
    """The behaviour policy shipped with the package for `env` (trained with seed 0, see its README)."""
    get_env_spec(env)
    return SHIPPED_CHECKPOINT_DIR / f"{env}-medium.pt"


def behavior_run_dir(env: str, seed: int = 0) -> Path:
    """Default output folder of `behavior-agent train`: $ADEPT_BEHAVIOR_DIR (else <data dir>/behavior)/<env>/seed<seed>."""
    root = os.environ.get("ADEPT_BEHAVIOR_DIR")
    base = Path(root).expanduser() if root else default_data_dir() / "behavior"
    return base / env / f"seed{seed}"


def save_behavior_policy(path: str | Path, learner, info: dict[str, Any]) -> str:
    """Write the SAC actor (float32, CPU), its config and stats, and `info` atomically; return the file's sha256."""
    from adept.config import to_dict

    spec = get_env_spec(info["env"])
    return _write_policy_file(path, {
        "format": POLICY_FORMAT, "env": spec.name, "obs_dim": spec.obs_dim, "act_dim": spec.act_dim,
        "actor": {k: v.detach().to("cpu", torch.float32).clone() for k, v in learner.actor.state_dict().items()},
        "stats": learner.stats.to_dict(), "sac_config": json.dumps(to_dict(learner.config)),
        "info": json.dumps(info),
    })


def _write_policy_file(path: str | Path, state: dict[str, Any]) -> str:
    """torch.save through a buffer: saving to a path names the zip archive after the (temporary) file,
    which would make identical policies differ byte-wise. Returns the sha256 of the bytes written."""
    from adept.outputs import atomic_path

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


@dataclass
class BehaviorSnapshot:
    """A saved behaviour policy rebuilt as a baselines.sac.SAC whose actor holds the snapshot's weights."""

    learner: Any
    env: str
    info: dict[str, Any]
    sha256: str
    path: Path

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions sampled from the policy for raw observations (B, obs_dim), and their log-probabilities (B,)."""
        actions = self.learner.act(obs, deterministic=False, generator=generator)
        return actions, self.learner.log_prob(obs, actions)


def load_behavior_policy(path: str | Path, device: str | torch.device = "cpu") -> BehaviorSnapshot:
    from adept.config import from_dict
    from baselines.common import DataStats
    from baselines.sac import SAC, SACConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"behaviour policy {path} does not exist; train one with "
                                f"`python -m adept behavior-agent train --env ENV --out-dir DIR` (it writes DIR/policy.pt)")
    from adept.outputs import load_torch_file

    state = load_torch_file(path, "behaviour policy saved by adept.online_sac",
                            "pass a policy.pt written by `python -m adept behavior-agent train`", fmt=POLICY_FORMAT,
                            required=("env", "sac_config", "stats", "actor", "info"))
    spec = get_env_spec(state["env"])
    learner = SAC(spec.obs_dim, spec.act_dim, from_dict(SACConfig, json.loads(state["sac_config"]), "sac_config"),
                  torch.device(device), DataStats.from_dict(state["stats"]))
    learner.actor.load_state_dict(state["actor"])
    return BehaviorSnapshot(learner, spec.name, json.loads(state["info"]), file_sha256(path), path)


def policy_metadata(snapshot: BehaviorSnapshot) -> dict[str, Any]:
    """What the dataset's `metadata/policy` records about the behaviour policy."""
    info = snapshot.info
    return {
        "type": "online SAC snapshot (tanh-Gaussian actor), actions sampled",
        "checkpoint": snapshot.path.name, "checkpoint_sha256": snapshot.sha256,
        "train_seed": info["seed"], "train_steps": info["train_steps"], "target_return": info["target_return"],
        "reached_target": info["reached_target"], "stop_eval_return_mean": info["stop_eval_return_mean"],
        "measured_return_mean": info["measured_return_mean"], "measured_return_std": info["measured_return_std"],
        "measured_episodes": info["measured_episodes"], "command": info["command"],
    }


def collect_with_policy(spec: EnvSpec, snapshot: BehaviorSnapshot, size: int, seed: int,
                        progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`size` transitions with actions sampled from `snapshot`, D4RL style; deterministic given (snapshot, seed)."""
    if snapshot.env != spec.name:
        raise ValueError(f"behaviour policy {snapshot.path} was trained on {snapshot.env}, not {spec.name}")
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
    """D4RL `medium`: 1M transitions (or `size`) from the behaviour policy (default: the shipped one)."""
    path = Path(policy_path) if policy_path is not None else shipped_checkpoint(spec.name)
    if policy_path is None and not path.is_file():
        raise FileNotFoundError(f"no shipped behaviour policy for {spec.name} ({path}); train one with "
                                f"`python -m adept behavior-agent train --env {spec.name}` and collect with "
                                f"`python -m adept behavior-agent collect --policy <run dir>/policy.pt`")
    snapshot = load_behavior_policy(path)
    return collect_with_policy(spec, snapshot, MEDIUM_DEFAULT_SIZE if size is None else size, seed, progress)


def medium_replay_recipe(spec: EnvSpec, size: int | None, seed: int, progress: bool,
                         run_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """D4RL `medium-replay`: the training run's replay buffer up to the snapshot (first `size` rows if given).

    `seed` is the training seed: the buffer comes from `behavior_run_dir(env, seed)` unless `run_dir`
    is given.
    """
    run_dir = Path(run_dir) if run_dir is not None else behavior_run_dir(spec.name, seed)
    replay_path = run_dir / "replay.hdf5"
    if not replay_path.is_file():
        raise FileNotFoundError(
            f"medium-replay needs the replay buffer of a behaviour-agent training run, and {replay_path} does not "
            f"exist. Make it with `python -m adept behavior-agent train --env {spec.name} --seed {seed} "
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
    behavior = metadata.get("behavior", {})
    policy = {
        "type": "replay buffer of online SAC up to the snapshot (uniform actions first, then sampled)",
        "replay_file": str(replay_path), "checkpoint_sha256": metadata["policy_sha256"],
        "matches_shipped_checkpoint": _same_actor(run_dir / "policy.pt", shipped_checkpoint(spec.name)),
        **{k: behavior[k] for k in ("seed", "train_steps", "target_return", "reached_target",
                                   "measured_return_mean", "command") if k in behavior},
    }
    return arrays, {"policy": policy, "replay_transitions": available}


def _same_actor(policy_path: Path, other_path: Path) -> bool:
    """Whether two saved behaviour policies hold identical actor weights (their files also record
    wall times, so file checksums differ between otherwise identical runs)."""
    if not (policy_path.is_file() and other_path.is_file()):
        return False
    ours = torch.load(policy_path, map_location="cpu", weights_only=True)["actor"]
    theirs = torch.load(other_path, map_location="cpu", weights_only=True)["actor"]
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def write_policy_dataset(policy_path: str | Path, out: str | Path, *, size: int | None = None, seed: int = 0,
                         progress: bool = True) -> tuple[Path, BehaviorSnapshot]:
    """A `medium`-recipe file from any saved behaviour policy (not only the shipped one), written atomically."""
    snapshot = load_behavior_policy(policy_path)
    spec = get_env_spec(snapshot.env)
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of transitions, got {size}")
    arrays, recipe_metadata = collect_with_policy(spec, snapshot, MEDIUM_DEFAULT_SIZE if size is None else size,
                                                  seed, progress)
    metadata = {"generator": "adept.data.policy_datasets", "recipe": "medium", "env": spec.name,
                "dataset": "medium", "env_id": spec.gym_id, "max_episode_steps": spec.max_episode_steps,
                "seed": seed, "size": len(arrays["rewards"]), **recipe_metadata}
    return write_d4rl_hdf5(out, arrays, metadata), snapshot


def ship_behavior_policy(run_dir: str | Path, dest_dir: str | Path = SHIPPED_CHECKPOINT_DIR) -> dict[str, Any]:
    """Copy a finished run's policy.pt to `<dest_dir>/<env>-medium.pt` and record it in `<dest_dir>/manifest.json`."""
    import gymnasium
    import mujoco

    from adept.outputs import atomic_write_text

    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} does not exist: the run in {run_dir} has not finished "
                                f"(re-run its `behavior-agent train` command to resume it)")
    summary = json.loads(summary_path.read_text())
    snapshot = load_behavior_policy(run_dir / "policy.pt")
    if snapshot.sha256 != summary["policy_sha256"]:
        raise ValueError(f"{run_dir / 'policy.pt'} does not match the sha256 in {summary_path}; the run folder was modified")
    target = dest_dir / f"{snapshot.env}-medium.pt"
    # Re-serialized in the canonical form of save_behavior_policy (same content, reproducible bytes).
    sha256 = _write_policy_file(target, torch.load(run_dir / "policy.pt", map_location="cpu", weights_only=True))
    entry = {
        "file": target.name, "sha256": sha256, "bytes": target.stat().st_size, "run_policy_sha256": snapshot.sha256,
        **{k: summary[k] for k in ("seed", "train_steps", "run_steps", "target_return", "reached_target",
                                   "stop_eval_return_mean", "stop_eval_return_std", "stop_eval_episodes",
                                   "measured_return_mean", "measured_return_std", "measured_episodes",
                                   "evaluation", "wall_time_s", "command", "online_config", "sac_config")},
        "machine": f"{platform.machine()} cpu, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"gymnasium {gymnasium.__version__}, mujoco {mujoco.__version__}",
    }
    manifest_path = dest_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[snapshot.env] = entry
    atomic_write_text(manifest_path, json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return entry


register_recipe("medium", medium_recipe)
register_recipe("medium-replay", medium_replay_recipe)
