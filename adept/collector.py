"""The collector: the online SAC agent that collects the generated `medium` and `medium-replay` datasets.

D4RL built its locomotion data with an online SAC agent (tanh-Gaussian policy, two hidden layers
of 256): `medium` is 1M transitions from a snapshot stopped early at about a third of expert
return, with actions sampled from the policy; `medium-replay` is that agent's replay buffer up to
the snapshot. This module reproduces that agent, the *collector* (not to be confused with the
behaviour policy pi_D that `python -m adept behavior-policy` fits to a dataset for importance
weights). It runs `baselines.sac.SAC` (its networks, losses and entropy tuning, unchanged) in the
env and adds only what online training needs:

- the interaction loop: uniform random actions for `start_steps`, then actions sampled from the
  policy, one gradient update per env step once `start_steps` transitions are stored;
- a record of everything collected, in collection order (observations, actions, rewards,
  next_observations, terminals, timeouts, the simulator state qpos/qvel before each step, and the
  log-probability of each action under the policy that chose it);
- evaluation of the *stochastic* policy (sampled actions, as the datasets are collected) at the
  first episode end after every `eval_every` env steps, and the stop once its mean return reaches
  the target (default: the mean return of D4RL's medium data for the env). The saved snapshot is
  the policy that reached it (`snapshot="first"`) or, of the evaluations so far, the one closest to
  the target (`snapshot="closest"`); when `max_steps` runs out first, the best evaluated policy;
- checkpoints at episode ends, from which an interrupted run resumes with the same result.

It also owns the collector's snapshot file (`save_collector_snapshot` / `load_collector_snapshot`,
`ship_collector_snapshot` into adept/collector_snapshots/); adept.data.policy_datasets turns
snapshots and replay buffers into the medium / medium-replay datasets.

Outputs in `out_dir` (default `collector_run_dir(env, seed)`):
    policy.pt      the snapshot's actor + how it was made (see save_collector_snapshot)
    replay.hdf5    every transition collected before the snapshot (the medium-replay data), D4RL layout
    eval.csv       step, return_mean, return_std, episode_length_mean, wall_time_s
    summary.json   written last, the completion marker: steps, returns, wall time, sha256s
    checkpoint.pt  resume state while the run is going (removed when it completes)

Learning only bootstraps through timeouts: the learner's `dones` are env terminations, never the
1000-step limit.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adept.config import from_dict, require, to_dict
from adept.envs import get_env_spec, make_env
from adept.errors import DivergenceError, UserError
from adept.locks import run_folder_lock
from adept.outputs import CsvLog, atomic_torch_save, atomic_write_text, load_torch_file, non_finite_entries
from adept.provenance import file_sha256, machine_summary

log = logging.getLogger("adept.collector")

# Mean episode return of D4RL's v2 `medium` datasets (the collector's level, sampled actions).
D4RL_MEDIUM_RETURNS: dict[str, float] = {"halfcheetah": 4770.0, "hopper": 1422.0, "walker2d": 2852.0}
SNAPSHOT_RULES = ("first", "closest")
# The format tag stored in every snapshot file. It keeps the name from before the collector was
# called the collector: the shipped snapshots hold it, their sha256s are recorded in manifest.json
# and in the tests, and the medium datasets made from them record those sha256s in their metadata.
# Changing it would invalidate all of them; it names a file format, not the module.
SNAPSHOT_FORMAT = "adept-behavior-policy-v1"
SHIPPED_SNAPSHOT_DIR = Path(__file__).resolve().parent / "collector_snapshots"
# What the medium-replay buffer (replay.hdf5) records as its `generator`. Kept as written before the
# rename so that a rerun of the same seed writes the same bytes as the runs made before it.
REPLAY_GENERATOR = "adept.online_sac"


@dataclass
class CollectorConfig:
    """The online schedule around baselines.sac.SAC (whose own hyperparameters go in `sac`)."""

    target_return: float | None = None  # stop once the evaluated mean return reaches it; None: D4RL_MEDIUM_RETURNS[env]
    max_steps: int = 1_000_000          # env-step budget (rounded up to the end of the episode in progress)
    start_steps: int = 5_000            # uniform random actions, no updates, for the first steps (CleanRL: 5e3)
    eval_every: int = 5_000             # env steps between evaluations, each at the next episode end
    eval_episodes: int = 10             # episodes per evaluation (vector env, one episode per copy)
    final_eval_episodes: int = 50       # fresh episodes that measure the saved snapshot once more
    snapshot: str = "first"             # "first": the policy of the evaluation that reached the target;
                                        # "closest": of the evaluations up to the stop, the one closest to the target
    checkpoint_every: int = 25_000      # env steps between checkpoints, each at the next episode end
    log_every: int = 5_000              # env steps between progress lines
    sac: dict = field(default_factory=dict)  # overrides of baselines.sac.SACConfig (batch_size, lrs...), e.g. {"actor_lr": 1e-4}

    def validate(self) -> None:
        require(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        require(self.start_steps >= 1, f"start_steps must be >= 1 (the first update needs data), got {self.start_steps}")
        for key in ("eval_every", "eval_episodes", "final_eval_episodes", "checkpoint_every", "log_every"):
            value = getattr(self, key)
            require(value >= 1, f"{key} must be >= 1, got {value}")
        require(self.snapshot in SNAPSHOT_RULES, f"snapshot must be one of {list(SNAPSHOT_RULES)}, got {self.snapshot!r}")
        require(self.target_return is None or math.isfinite(self.target_return),
                f"target_return must be a finite number or None, got {self.target_return}")


def default_target_return(env: str) -> float:
    get_env_spec(env)  # unknown names fail with the list of valid ones
    return D4RL_MEDIUM_RETURNS[env]


def make_config(overrides: dict | None = None) -> CollectorConfig:
    """CollectorConfig from a (possibly nested) dict; unknown keys raise ConfigError naming the valid ones."""
    return from_dict(CollectorConfig, overrides or {}, "collector")


def make_sac(env: str, sac_overrides: dict, seed: int, device: torch.device):
    """A baselines.sac.SAC for the env, seeded with `seed` unless the overrides set one.

    Observations are not normalized (identity stats), as in the rlkit SAC that D4RL used: online,
    there is no dataset to compute statistics from.
    """
    from baselines.common import DataStats
    from baselines.sac import SAC, SACConfig

    spec = get_env_spec(env)
    sac_config = from_dict(SACConfig, {"seed": seed, "normalize_obs": False, **sac_overrides}, "collector.sac")
    return SAC(spec.obs_dim, spec.act_dim, sac_config, device, DataStats.identity(spec.obs_dim))


class Collected:
    """Everything the collector collected, in collection order, plus a device buffer to sample from.

    The learner's fields live in a `baselines.replay.TensorBuffer` on the training device (its
    capacity covers the whole run, so nothing is ever overwritten and its rows stay in collection
    order); the fields only the dataset file needs (timeouts, qpos, qvel, log-probs) stay on the host.
    """

    def __init__(self, obs_dim: int, act_dim: int, qpos_dim: int, qvel_dim: int, capacity: int,
                 device: torch.device):
        from baselines.replay import TensorBuffer

        self.buffer = TensorBuffer(capacity, obs_dim, act_dim, device)
        self.timeouts = np.zeros(capacity, bool)
        self.qpos = np.zeros((capacity, qpos_dim), np.float64)
        self.qvel = np.zeros((capacity, qvel_dim), np.float64)
        self.action_log_probs = np.zeros(capacity, np.float32)

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, obs, action, reward, next_obs, terminal, timeout, qpos, qvel, log_prob) -> None:
        t = len(self.buffer)
        if t == self.buffer.capacity:
            raise RuntimeError("the collection record is full; its capacity must cover max_steps plus one episode")
        self.buffer.add(obs[None], action[None], np.array([reward]), next_obs[None], np.array([float(terminal)]))
        self.timeouts[t] = timeout
        self.qpos[t], self.qvel[t] = qpos, qvel
        self.action_log_probs[t] = log_prob

    def d4rl_arrays(self, n: int) -> dict[str, np.ndarray]:
        """The first `n` transitions under the D4RL hdf5 keys."""
        rows = {name: getattr(self.buffer, name)[:n].cpu().numpy()
                for name in ("observations", "actions", "rewards", "next_observations", "dones")}
        return {
            "observations": rows["observations"], "actions": rows["actions"], "rewards": rows["rewards"],
            "next_observations": rows["next_observations"], "terminals": rows["dones"] > 0.5,
            "timeouts": self.timeouts[:n].copy(), "infos/qpos": self.qpos[:n].copy(),
            "infos/qvel": self.qvel[:n].copy(), "infos/action_log_probs": self.action_log_probs[:n].copy(),
        }

    def state_dict(self) -> dict:
        n = len(self)
        return {"buffer": self.buffer.state_dict(), "timeouts": torch.from_numpy(self.timeouts[:n].copy()),
                "qpos": torch.from_numpy(self.qpos[:n].copy()), "qvel": torch.from_numpy(self.qvel[:n].copy()),
                "action_log_probs": torch.from_numpy(self.action_log_probs[:n].copy())}

    def load_state_dict(self, state: dict) -> None:
        size = int(state["buffer"]["size"])
        if size > self.buffer.capacity:
            raise ValueError(f"the checkpoint holds {size} transitions, more than this run's capacity "
                             f"{self.buffer.capacity} (max_steps + one episode); raise max_steps")
        # Only the stored rows matter; the allocation may differ when max_steps changed between resumes.
        self.buffer.load_state_dict({**state["buffer"], "capacity": self.buffer.capacity})
        n = len(self)
        for name in ("timeouts", "qpos", "qvel", "action_log_probs"):
            getattr(self, name)[:n] = state[name].numpy()


def evaluate_stochastic(learner, env: str, episodes: int, seed: int, device: torch.device) -> dict[str, float]:
    """Return statistics of `episodes` episodes with actions sampled from the policy (not its mean).

    The datasets are collected with sampled actions, so this is the return their episodes have.
    Sampling uses its own generator seeded with `seed`: evaluating does not change the training run.
    """
    from adept.evaluation import evaluate, torch_policy

    generator = torch.Generator(device=device).manual_seed(seed)
    policy = torch_policy(lambda obs: learner.act(obs, deterministic=False, generator=generator), device)
    result = evaluate(policy, env, episodes, seed=seed)
    return {"return_mean": result.return_mean, "return_std": result.return_std,
            "episode_length_mean": result.length_mean}


def _eval_seed(seed: int, step: int) -> int:
    # Depends on (run seed, step) only, so a resumed run evaluates identically; far from the train env's seed.
    return 1_000_003 * (seed + 1) + step


def _resume_key(identity: dict) -> dict:
    """What a checkpoint must share with the run resuming it. max_steps, target_return and snapshot only
    decide when the run stops and what it keeps (both snapshot rules keep the best evaluation until the
    target is reached, and the run stops there), so a resumed run may change them, e.g. to end early
    with its best snapshot."""
    config = {k: v for k, v in identity["config"].items() if k not in ("max_steps", "target_return", "snapshot")}
    return {**identity, "config": config}


def _replaces(new_return: float, kept_return: float, target: float, rule: str) -> bool:
    """Whether a new evaluation replaces the kept snapshot. Below the target both rules keep the best;
    "first" keeps the evaluation that reached the target, "closest" the one nearest to it (learning can
    jump past the target between two evaluations: hopper went from 1404 to 2000 within 5,000 steps)."""
    if rule == "closest":
        return abs(new_return - target) < abs(kept_return - target)
    return new_return > kept_return


def _actor_copy(learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.actor.state_dict().items()}




# ------------------------------------------------------------------------------- the snapshot file

def shipped_snapshot(env: str) -> Path:
    """The collector snapshot shipped with the package for `env` (trained with seed 0, see its README)."""
    get_env_spec(env)
    return SHIPPED_SNAPSHOT_DIR / f"{env}-medium.pt"


def collector_run_dir(env: str, seed: int = 0) -> Path:
    """Default output folder of `collector train`: $ADEPT_COLLECTOR_DIR (else <data dir>/collectors)/<env>/seed<seed>."""
    from adept.data.generated import default_data_dir

    root = os.environ.get("ADEPT_COLLECTOR_DIR")
    base = Path(root).expanduser() if root else default_data_dir() / "collectors"
    return base / env / f"seed{seed}"


def save_collector_snapshot(path: str | Path, learner, info: dict[str, Any]) -> str:
    """Write the SAC actor (float32, CPU), its config and stats, and `info` atomically; return the file's sha256."""
    spec = get_env_spec(info["env"])
    return _write_snapshot_file(path, {
        "format": SNAPSHOT_FORMAT, "env": spec.name, "obs_dim": spec.obs_dim, "act_dim": spec.act_dim,
        "actor": {k: v.detach().to("cpu", torch.float32).clone() for k, v in learner.actor.state_dict().items()},
        "stats": learner.stats.to_dict(), "sac_config": json.dumps(to_dict(learner.config)),
        "info": json.dumps(info),
    })


def _write_snapshot_file(path: str | Path, state: dict[str, Any]) -> str:
    """torch.save through a buffer: saving to a path names the zip archive after the (temporary) file,
    which would make identical snapshots differ byte-wise. Returns the sha256 of the bytes written."""
    from adept.outputs import atomic_path

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


@dataclass
class CollectorSnapshot:
    """A saved collector snapshot rebuilt as a baselines.sac.SAC whose actor holds the snapshot's weights."""

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


def load_collector_snapshot(path: str | Path, device: str | torch.device = "cpu") -> CollectorSnapshot:
    from baselines.common import DataStats
    from baselines.sac import SAC, SACConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"collector snapshot {path} does not exist; train one with "
                                f"`python -m adept collector train --env ENV --out-dir DIR` (it writes DIR/policy.pt)")
    state = load_torch_file(path, "collector snapshot saved by adept.collector",
                            "pass a policy.pt written by `python -m adept collector train`", fmt=SNAPSHOT_FORMAT,
                            required=("env", "sac_config", "stats", "actor", "info"))
    spec = get_env_spec(state["env"])
    learner = SAC(spec.obs_dim, spec.act_dim, from_dict(SACConfig, json.loads(state["sac_config"]), "sac_config"),
                  torch.device(device), DataStats.from_dict(state["stats"]))
    learner.actor.load_state_dict(state["actor"])
    return CollectorSnapshot(learner, spec.name, json.loads(state["info"]), file_sha256(path), path)


def same_actor(snapshot_path: Path, other_path: Path) -> bool:
    """Whether two saved collector snapshots hold identical actor weights (their files also record
    wall times, so file checksums differ between otherwise identical runs)."""
    if not (snapshot_path.is_file() and other_path.is_file()):
        return False
    ours = torch.load(snapshot_path, map_location="cpu", weights_only=True)["actor"]
    theirs = torch.load(other_path, map_location="cpu", weights_only=True)["actor"]
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def ship_collector_snapshot(run_dir: str | Path, dest_dir: str | Path = SHIPPED_SNAPSHOT_DIR) -> dict[str, Any]:
    """Copy a finished run's policy.pt to `<dest_dir>/<env>-medium.pt` and record it in `<dest_dir>/manifest.json`."""
    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} does not exist: the run in {run_dir} has not finished "
                                f"(re-run its `collector train` command to resume it)")
    summary = json.loads(summary_path.read_text())
    snapshot = load_collector_snapshot(run_dir / "policy.pt")
    if snapshot.sha256 != summary["policy_sha256"]:
        raise ValueError(f"{run_dir / 'policy.pt'} does not match the sha256 in {summary_path}; the run folder was modified")
    target = dest_dir / f"{snapshot.env}-medium.pt"
    # Re-serialized in the canonical form of save_collector_snapshot (same content, reproducible bytes).
    sha256 = _write_snapshot_file(target, torch.load(run_dir / "policy.pt", map_location="cpu", weights_only=True))
    entry = {
        "file": target.name, "sha256": sha256, "bytes": target.stat().st_size, "run_policy_sha256": snapshot.sha256,
        **{k: summary[k] for k in ("seed", "train_steps", "run_steps", "target_return", "reached_target",
                                   "stop_eval_return_mean", "stop_eval_return_std", "stop_eval_episodes",
                                   "measured_return_mean", "measured_return_std", "measured_episodes",
                                   "evaluation", "wall_time_s", "command", "online_config", "sac_config")},
        "machine": machine_summary(),
    }
    manifest_path = dest_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[snapshot.env] = entry
    atomic_write_text(manifest_path, json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return entry


# ------------------------------------------------------------------------------------ training

def train_collector(env: str, out_dir: str | Path, config: CollectorConfig | None = None,
                    **options) -> dict[str, Any]:
    """Train (or resume) the collector on `env` until its stochastic policy's evaluated return reaches the target.

    Options (keywords): seed=0, device="cpu", progress=True, command=None. Writes policy.pt,
    replay.hdf5, eval.csv and summary.json to `out_dir` (see the module docstring) and returns the
    summary. If `max_steps` runs out first, the best evaluated snapshot is saved with
    `reached_target = False`. `command` is recorded in the outputs (how the files were made). Holds
    the folder's lock throughout: a second process on the same `out_dir` fails at once.
    """
    with run_folder_lock(out_dir, f"collector run folder {out_dir}",
                         "wait for that run to finish (or stop it), or choose another --out-dir"):
        return _train_collector(env, out_dir, config, **options)


def _train_collector(env: str, out_dir: str | Path, config: CollectorConfig | None = None, *, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = True,
                     command: str | None = None) -> dict[str, Any]:
    config = config or CollectorConfig()
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    if summary_path.exists() and not (out_dir / "checkpoint.pt").exists():
        log.info("[%s] %s is complete (summary.json exists); delete the folder to train again", env, out_dir)
        return json.loads(summary_path.read_text())
    run = CollectorRun(env, out_dir, config, seed=seed, device=torch.device(device), progress=progress)
    while True:
        if run.step() and run.end_episode():  # an episode ended and the run stops there
            return run.finish(command)


class CollectorRun:
    """One training run of the collector, in three steps: `step` (one env interaction and one SAC
    update), `end_episode` (the periodic stochastic evaluation, the stop rule and checkpoints, all at
    episode ends) and `finish` (the final measurement, policy.pt, replay.hdf5 and summary.json).
    Construction starts the run, or resumes it from `out_dir/checkpoint.pt`."""

    def __init__(self, env: str, out_dir: Path, config: CollectorConfig, *, seed: int, device: torch.device,
                 progress: bool):
        self.env, self.out_dir, self.config, self.seed, self.device = env, out_dir, config, seed, device
        self.progress = progress
        self.spec = spec = get_env_spec(env)
        self.target = default_target_return(env) if config.target_return is None else config.target_return
        self.checkpoint_path = out_dir / "checkpoint.pt"
        self.identity = {"env": env, "seed": seed, "config": to_dict(config)}

        self.learner = make_sac(env, config.sac, seed, device)  # its own generator drives update and acting noise
        self.sample_generator = torch.Generator(device=device).manual_seed(seed)  # replay indices
        self.action_rng = np.random.default_rng(seed)  # uniform actions of the first start_steps
        self.train_env = make_env(env)
        self.sim = self.train_env.unwrapped.data
        capacity = config.max_steps + spec.max_episode_steps
        self.collected = Collected(spec.obs_dim, spec.act_dim, self.sim.qpos.size, self.sim.qvel.size, capacity,
                                   device)
        self.uniform_log_prob = -spec.act_dim * math.log(2.0)  # density of U[-1, 1]^act_dim

        self.eval_log = CsvLog(out_dir / "eval.csv")
        # The policy the run will save. Before the target is reached both rules keep the best evaluation.
        self.snapshot: dict[str, Any] = {"return_mean": -math.inf, "step": 0, "actor": _actor_copy(self.learner),
                                         "eval": None}
        self.episode_returns: list[float] = []
        self.last_eval = self.last_checkpoint = 0
        elapsed_before = 0.0
        if self.checkpoint_path.exists():
            elapsed_before = self._resume()
        else:
            self.eval_log.reset()
            self.obs, _ = self.train_env.reset(seed=seed)

        self.run_start = time.perf_counter() - elapsed_before
        self.rate_clock, self.rate_steps = time.perf_counter(), len(self.collected)
        self.next_log = (len(self.collected) // config.log_every + 1) * config.log_every
        self.episode_return, self.reached = 0.0, False

    # -- resume state

    def _resume(self) -> float:
        """Restore the run from its checkpoint; returns the wall time spent before it."""
        # On the CPU: RNG states must stay CPU ByteTensors; load_state_dict moves the rest to `device`.
        state = load_torch_file(self.checkpoint_path, "collector checkpoint",
                                "delete it to start the run over", required=("identity", "learner", "collected"),
                                map_location="cpu", weights_only=False)
        if _resume_key(state["identity"]) != _resume_key(self.identity):
            raise ValueError(f"{self.checkpoint_path} belongs to another run ({state['identity']}), not "
                             f"{self.identity}; use another --out-dir or delete the checkpoint")
        self.learner.load_state_dict(state["learner"])
        self.collected.load_state_dict(state["collected"])
        self.sample_generator.set_state(state["sample_generator"])
        self.action_rng.bit_generator.state = state["action_rng"]
        self.train_env.unwrapped.np_random = np.random.default_rng()
        self.train_env.unwrapped.np_random.bit_generator.state = state["env_rng"]
        self.snapshot, self.episode_returns = state["snapshot"], state["episode_returns"]
        self.last_eval, self.last_checkpoint = state["last_eval"], state["last_checkpoint"]
        self.eval_log.truncate_after(len(self.collected))
        self.obs, _ = self.train_env.reset()  # checkpoints are taken at episode ends: the next step starts a new episode
        log.info("[%s] resuming at env step %d from %s", self.env, len(self.collected), self.checkpoint_path)
        return state["elapsed_s"]

    def save_checkpoint(self) -> None:
        elapsed = time.perf_counter() - self.run_start
        state = {
            "identity": self.identity, "learner": self.learner.state_dict(), "collected": self.collected.state_dict(),
            "sample_generator": self.sample_generator.get_state(), "action_rng": self.action_rng.bit_generator.state,
            "env_rng": self.train_env.unwrapped.np_random.bit_generator.state,
            "snapshot": self.snapshot, "episode_returns": self.episode_returns, "last_eval": self.last_eval,
            "last_checkpoint": self.last_checkpoint, "elapsed_s": elapsed,
        }
        bad = non_finite_entries(state)  # a checkpoint, what a rerun resumes from, never holds NaN/inf
        if bad:
            exists = self.checkpoint_path.exists()
            kept = "the previous checkpoint was kept" if exists else "no checkpoint exists yet"
            raise DivergenceError(f"online SAC diverged: non-finite values at env step {len(self.collected)} in "
                                  f"{', '.join(bad[:5])}", self.checkpoint_path if exists else self.out_dir,
                                  f"{kept}; change the SAC settings (e.g. --set sac.actor_lr=1e-4) and delete "
                                  f"the folder to start over")
        atomic_torch_save(state, self.checkpoint_path)

    # -- train: interaction and update

    def _action(self) -> tuple[np.ndarray, float]:
        """The next action and its log-probability: uniform for the first start_steps, then sampled."""
        if len(self.collected) < self.config.start_steps:
            return self.action_rng.uniform(-1.0, 1.0, self.spec.act_dim).astype(np.float32), self.uniform_log_prob
        obs_t = torch.as_tensor(self.obs, dtype=torch.float32, device=self.device)[None]
        with torch.no_grad():
            action_t = self.learner.act(obs_t, deterministic=False)
            log_prob_t = self.learner.log_prob(obs_t, action_t)
        # One host transfer per env step: the env needs the action on the host anyway.
        action_and_log_prob = torch.cat([action_t[0], log_prob_t]).cpu().numpy()
        return action_and_log_prob[:-1], float(action_and_log_prob[-1])

    def step(self) -> bool:
        """One env step, recorded, then one SAC update once start_steps are stored. True at an episode end."""
        qpos, qvel = self.sim.qpos.copy(), self.sim.qvel.copy()
        action, log_prob = self._action()
        next_obs, reward, terminated, truncated, _ = self.train_env.step(action)
        self.collected.add(self.obs, action, reward, next_obs, terminated, truncated and not terminated, qpos, qvel,
                           log_prob)
        self.episode_return += float(reward)
        self.obs = next_obs
        if len(self.collected) >= self.config.start_steps:
            self.learner.update(self.collected.buffer.sample(self.learner.config.batch_size, self.sample_generator))
        if self.progress and len(self.collected) >= self.next_log:
            self._log_progress()
        return terminated or truncated

    def _log_progress(self) -> None:
        now, steps = time.perf_counter(), len(self.collected)
        recent = self.episode_returns[-10:]
        log.info("[%s] env step %d  episodes %d  train return (last %d) %.0f  best eval %.0f / target %.0f  "
                 "%.0f steps/s", self.env, steps, len(self.episode_returns), len(recent),
                 float(np.mean(recent)) if recent else float("nan"), self.snapshot["return_mean"], self.target,
                 (steps - self.rate_steps) / max(now - self.rate_clock, 1e-9))
        self.rate_clock, self.rate_steps, self.next_log = now, steps, self.next_log + self.config.log_every

    # -- evaluate: the periodic stochastic evaluation and the stop rule

    def end_episode(self) -> bool:
        """At an episode end, the only place where the run evaluates, checkpoints or stops. True: stop."""
        self.episode_returns.append(self.episode_return)
        self.episode_return = 0.0
        step = len(self.collected)
        if step - self.last_eval >= self.config.eval_every:
            self.last_eval = step
            if self.evaluate(step):
                self.reached = True
                return True
        if step >= self.config.max_steps:
            return True
        if step - self.last_checkpoint >= self.config.checkpoint_every:
            self.last_checkpoint = step
            self.save_checkpoint()  # before the reset: resuming starts with it
        self.obs, _ = self.train_env.reset()
        return False

    def evaluate(self, step: int) -> bool:
        """Evaluate the stochastic policy, keep it as the snapshot if the snapshot rule says so; True
        when its mean return reached the target."""
        result = evaluate_stochastic(self.learner, self.env, self.config.eval_episodes, _eval_seed(self.seed, step),
                                     self.device)
        row = {"step": step, **result, "wall_time_s": time.perf_counter() - self.run_start}
        self.eval_log.append(row)
        if self.progress:
            log.info("[%s] eval at env step %d: return %.0f ± %.0f (target %.0f)", self.env, step,
                     row["return_mean"], row["return_std"], self.target)
        if _replaces(row["return_mean"], self.snapshot["return_mean"], self.target, self.config.snapshot):
            self.snapshot = {"return_mean": row["return_mean"], "step": step, "actor": _actor_copy(self.learner),
                             "eval": row}
        return row["return_mean"] >= self.target

    # -- snapshot: what the finished run writes

    def finish(self, command: str | None) -> dict[str, Any]:
        """Measure the kept snapshot on fresh episodes; write policy.pt, replay.hdf5 and summary.json (last)."""
        from adept.data.hdf5 import write_d4rl_hdf5

        env, spec, config, learner = self.env, self.spec, self.config, self.learner
        wall_time = time.perf_counter() - self.run_start
        if self.snapshot["eval"] is None:
            raise UserError(f"[{env}] the run ended after {len(self.collected)} env steps without an evaluation",
                            self.out_dir, f"make max_steps larger than eval_every ({config.eval_every})")
        snapshot_step, snapshot_eval = self.snapshot["step"], self.snapshot["eval"]
        learner.actor.load_state_dict(self.snapshot["actor"])
        measured = evaluate_stochastic(learner, env, config.final_eval_episodes, _eval_seed(self.seed, 0) - 1,
                                       self.device)
        info = {
            "env": env, "seed": self.seed, "train_steps": snapshot_step, "run_steps": len(self.collected),
            "target_return": self.target, "reached_target": self.reached,
            "stop_eval_return_mean": snapshot_eval["return_mean"], "stop_eval_return_std": snapshot_eval["return_std"],
            "stop_eval_episodes": config.eval_episodes,
            "measured_return_mean": measured["return_mean"], "measured_return_std": measured["return_std"],
            "measured_episodes": config.final_eval_episodes, "evaluation": "stochastic policy (sampled actions)",
            "wall_time_s": wall_time, "online_config": to_dict(config), "command": command or "",
        }
        policy_sha256 = save_collector_snapshot(self.out_dir / "policy.pt", learner, info)
        # The metadata keys ("behavior", "online_config", ...) are read back by the medium-replay recipe
        # and were written so before the rename: kept, so old and new buffers read alike.
        replay_path = write_d4rl_hdf5(self.out_dir / "replay.hdf5", self.collected.d4rl_arrays(snapshot_step), {
            "generator": REPLAY_GENERATOR, "env": env, "env_id": spec.gym_id, "dataset": "medium-replay",
            "max_episode_steps": spec.max_episode_steps, "policy_sha256": policy_sha256,
            "behavior": {k: v for k, v in info.items() if k != "online_config"},
            "online_config": json.dumps(to_dict(config)), "sac_config": json.dumps(to_dict(learner.config)),
        })
        summary = {**info, "policy": "policy.pt", "policy_sha256": policy_sha256, "replay": replay_path.name,
                   "replay_transitions": snapshot_step, "sac_config": to_dict(learner.config)}
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.checkpoint_path.unlink(missing_ok=True)
        log.info("[%s] %s at env step %d: stochastic return %.0f ± %.0f over %d episodes (target %.0f), %.0f s",
                 env, "reached the target" if self.reached else "best snapshot (target NOT reached)", snapshot_step,
                 measured["return_mean"], measured["return_std"], config.final_eval_episodes, self.target, wall_time)
        return summary
