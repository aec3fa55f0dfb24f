"""Online SAC that trains the behaviour policies of D4RL's `medium` and `medium-replay` datasets.

D4RL built its locomotion data with an online SAC agent (tanh-Gaussian policy, two hidden layers
of 256): `medium` is 1M transitions from a snapshot stopped early at about a third of expert
return, with actions sampled from the policy; `medium-replay` is that agent's replay buffer up to
the snapshot. This module reproduces the training half: it runs `baselines.sac.SAC` (its networks,
losses and entropy tuning, unchanged) in the env and adds only what online training needs:

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

Outputs in `out_dir`:
    policy.pt      the snapshot's actor + how it was made (see adept.data.policy_datasets)
    replay.hdf5    every transition collected before the snapshot (the medium-replay data), D4RL layout
    eval.csv       step, return_mean, return_std, episode_length_mean, wall_time_s
    summary.json   written last, the completion marker: steps, returns, wall time, sha256s
    checkpoint.pt  resume state while the run is going (removed when it completes)

Learning only bootstraps through timeouts: the learner's `dones` are env terminations, never the
1000-step limit.
"""
from __future__ import annotations

import json
import logging
import math
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

log = logging.getLogger("adept.online_sac")

# Mean episode return of D4RL's v2 `medium` datasets (the behaviour policy's level, sampled actions).
D4RL_MEDIUM_RETURNS: dict[str, float] = {"halfcheetah": 4770.0, "hopper": 1422.0, "walker2d": 2852.0}
SNAPSHOT_RULES = ("first", "closest")


@dataclass
class OnlineSACConfig:
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


def make_config(overrides: dict | None = None) -> OnlineSACConfig:
    """OnlineSACConfig from a (possibly nested) dict; unknown keys raise ConfigError naming the valid ones."""
    return from_dict(OnlineSACConfig, overrides or {}, "online_sac")


def make_sac(env: str, sac_overrides: dict, seed: int, device: torch.device):
    """A baselines.sac.SAC for the env, seeded with `seed` unless the overrides set one.

    Observations are not normalized (identity stats), as in the rlkit SAC that D4RL used: online,
    there is no dataset to compute statistics from.
    """
    from baselines.common import DataStats
    from baselines.sac import SAC, SACConfig

    spec = get_env_spec(env)
    sac_config = from_dict(SACConfig, {"seed": seed, "normalize_obs": False, **sac_overrides}, "online_sac.sac")
    return SAC(spec.obs_dim, spec.act_dim, sac_config, device, DataStats.identity(spec.obs_dim))


class Collected:
    """Everything the agent collected, in collection order, plus a device buffer to sample from.

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


def train_behavior_agent(env: str, out_dir: str | Path, config: OnlineSACConfig | None = None,
                         **options) -> dict[str, Any]:
    """Train (or resume) online SAC on `env` until the stochastic policy's evaluated return reaches the target.

    Options (keywords): seed=0, device="cpu", progress=True, command=None. Writes policy.pt,
    replay.hdf5, eval.csv and summary.json to `out_dir` (see the module docstring) and returns the
    summary. If `max_steps` runs out first, the best evaluated snapshot is saved with
    `reached_target = False`. `command` is recorded in the outputs (how the files were made). Holds
    the folder's lock throughout: a second process on the same `out_dir` fails at once.
    """
    with run_folder_lock(out_dir, f"behaviour-agent run folder {out_dir}",
                     "wait for that run to finish (or stop it), or choose another --out-dir"):
        return _train_behavior_agent(env, out_dir, config, **options)


def _train_behavior_agent(env: str, out_dir: str | Path, config: OnlineSACConfig | None = None, *, seed: int = 0,
                          device: str | torch.device = "cpu", progress: bool = True,
                          command: str | None = None) -> dict[str, Any]:
    from adept.data.hdf5 import write_d4rl_hdf5
    from adept.data.policy_datasets import save_behavior_policy

    config = config or OnlineSACConfig()
    config.validate()
    spec = get_env_spec(env)
    target = default_target_return(env) if config.target_return is None else config.target_return
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    summary_path = out_dir / "summary.json"
    if summary_path.exists() and not checkpoint_path.exists():
        summary = json.loads(summary_path.read_text())
        log.info("[%s] %s is complete (summary.json exists); delete the folder to train again", env, out_dir)
        return summary
    run_identity = {"env": env, "seed": seed, "config": to_dict(config)}

    learner = make_sac(env, config.sac, seed, device)  # its own generator drives update and acting noise
    sample_generator = torch.Generator(device=device).manual_seed(seed)  # replay indices
    action_rng = np.random.default_rng(seed)  # uniform actions of the first start_steps
    train_env = make_env(env)
    sim = train_env.unwrapped.data
    capacity = config.max_steps + spec.max_episode_steps
    collected = Collected(spec.obs_dim, spec.act_dim, sim.qpos.size, sim.qvel.size, capacity, device)
    uniform_log_prob = -spec.act_dim * math.log(2.0)  # density of U[-1, 1]^act_dim

    eval_log = CsvLog(out_dir / "eval.csv")
    # The policy the run will save. Before the target is reached both rules keep the best evaluation.
    snapshot: dict[str, Any] = {"return_mean": -math.inf, "step": 0, "actor": _actor_copy(learner), "eval": None}
    episode_returns: list[float] = []
    last_eval = last_checkpoint = 0
    elapsed_before = 0.0
    if checkpoint_path.exists():
        # On the CPU: RNG states must stay CPU ByteTensors; load_state_dict moves the rest to `device`.
        state = load_torch_file(checkpoint_path, "behaviour-agent checkpoint",
                                "delete it to start the run over", required=("identity", "learner", "collected"),
                                map_location="cpu", weights_only=False)
        if _resume_key(state["identity"]) != _resume_key(run_identity):
            raise ValueError(f"{checkpoint_path} belongs to another run ({state['identity']}), not {run_identity}; "
                             f"use another --out-dir or delete the checkpoint")
        learner.load_state_dict(state["learner"])
        collected.load_state_dict(state["collected"])
        sample_generator.set_state(state["sample_generator"])
        action_rng.bit_generator.state = state["action_rng"]
        train_env.unwrapped.np_random = np.random.default_rng()
        train_env.unwrapped.np_random.bit_generator.state = state["env_rng"]
        snapshot, episode_returns = state["snapshot"], state["episode_returns"]
        last_eval, last_checkpoint, elapsed_before = state["last_eval"], state["last_checkpoint"], state["elapsed_s"]
        eval_log.truncate_after(len(collected))
        obs, _ = train_env.reset()  # checkpoints are taken at episode ends: the next step starts a new episode
        log.info("[%s] resuming at env step %d from %s", env, len(collected), checkpoint_path)
    else:
        eval_log.reset()
        obs, _ = train_env.reset(seed=seed)

    def save_checkpoint(elapsed: float) -> None:
        state = {
            "identity": run_identity, "learner": learner.state_dict(), "collected": collected.state_dict(),
            "sample_generator": sample_generator.get_state(), "action_rng": action_rng.bit_generator.state,
            "env_rng": train_env.unwrapped.np_random.bit_generator.state,
            "snapshot": snapshot, "episode_returns": episode_returns, "last_eval": last_eval,
            "last_checkpoint": last_checkpoint, "elapsed_s": elapsed,
        }
        bad = non_finite_entries(state)  # a checkpoint, what a rerun resumes from, never holds NaN/inf
        if bad:
            kept = "the previous checkpoint was kept" if checkpoint_path.exists() else "no checkpoint exists yet"
            raise DivergenceError(f"online SAC diverged: non-finite values at env step {len(collected)} in "
                                  f"{', '.join(bad[:5])}", checkpoint_path if checkpoint_path.exists() else out_dir,
                                  f"{kept}; change the SAC settings (e.g. --set sac.actor_lr=1e-4) and delete "
                                  f"the folder to start over")
        atomic_torch_save(state, checkpoint_path)

    run_start = time.perf_counter() - elapsed_before
    rate_clock, rate_steps = time.perf_counter(), len(collected)
    next_log = (len(collected) // config.log_every + 1) * config.log_every
    episode_return, reached = 0.0, False
    while True:
        step = len(collected)
        qpos, qvel = sim.qpos.copy(), sim.qvel.copy()
        if step < config.start_steps:
            action = action_rng.uniform(-1.0, 1.0, spec.act_dim).astype(np.float32)
            log_prob = uniform_log_prob
        else:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
            with torch.no_grad():
                action_t = learner.act(obs_t, deterministic=False)
                log_prob_t = learner.log_prob(obs_t, action_t)
            # One host transfer per env step: the env needs the action on the host anyway.
            action_and_log_prob = torch.cat([action_t[0], log_prob_t]).cpu().numpy()
            action, log_prob = action_and_log_prob[:-1], float(action_and_log_prob[-1])
        next_obs, reward, terminated, truncated, _ = train_env.step(action)
        collected.add(obs, action, reward, next_obs, terminated, truncated and not terminated, qpos, qvel, log_prob)
        episode_return += float(reward)
        obs = next_obs
        if len(collected) >= config.start_steps:
            learner.update(collected.buffer.sample(learner.config.batch_size, sample_generator))

        if progress and len(collected) >= next_log:
            now = time.perf_counter()
            recent = episode_returns[-10:]
            log.info("[%s] env step %d  episodes %d  train return (last %d) %.0f  best eval %.0f / target %.0f  "
                     "%.0f steps/s", env, len(collected), len(episode_returns), len(recent),
                     float(np.mean(recent)) if recent else float("nan"), snapshot["return_mean"], target,
                     (len(collected) - rate_steps) / max(now - rate_clock, 1e-9))
            rate_clock, rate_steps, next_log = now, len(collected), next_log + config.log_every
        if not (terminated or truncated):
            continue

        # Episode end: the only place where the run evaluates, checkpoints or stops.
        episode_returns.append(episode_return)
        episode_return = 0.0
        step = len(collected)
        if step - last_eval >= config.eval_every:
            last_eval = step
            row = {"step": step, **evaluate_stochastic(learner, env, config.eval_episodes, _eval_seed(seed, step), device),
                   "wall_time_s": time.perf_counter() - run_start}
            eval_log.append(row)
            if progress:
                log.info("[%s] eval at env step %d: return %.0f ± %.0f (target %.0f)", env, step,
                         row["return_mean"], row["return_std"], target)
            if _replaces(row["return_mean"], snapshot["return_mean"], target, config.snapshot):
                snapshot = {"return_mean": row["return_mean"], "step": step, "actor": _actor_copy(learner), "eval": row}
            if row["return_mean"] >= target:
                reached = True
                break
        if step >= config.max_steps:
            break
        if step - last_checkpoint >= config.checkpoint_every:
            last_checkpoint = step
            save_checkpoint(time.perf_counter() - run_start)  # before the reset: resuming starts with it
        obs, _ = train_env.reset()

    wall_time = time.perf_counter() - run_start
    if snapshot["eval"] is None:
        raise UserError(f"[{env}] the run ended after {len(collected)} env steps without an evaluation", out_dir,
                        f"make max_steps larger than eval_every ({config.eval_every})")
    snapshot_step, snapshot_eval = snapshot["step"], snapshot["eval"]
    learner.actor.load_state_dict(snapshot["actor"])
    measured = evaluate_stochastic(learner, env, config.final_eval_episodes, _eval_seed(seed, 0) - 1, device)
    info = {
        "env": env, "seed": seed, "train_steps": snapshot_step, "run_steps": len(collected),
        "target_return": target, "reached_target": reached,
        "stop_eval_return_mean": snapshot_eval["return_mean"], "stop_eval_return_std": snapshot_eval["return_std"],
        "stop_eval_episodes": config.eval_episodes,
        "measured_return_mean": measured["return_mean"], "measured_return_std": measured["return_std"],
        "measured_episodes": config.final_eval_episodes, "evaluation": "stochastic policy (sampled actions)",
        "wall_time_s": wall_time, "online_config": to_dict(config), "command": command or "",
    }
    policy_sha256 = save_behavior_policy(out_dir / "policy.pt", learner, info)
    replay_path = write_d4rl_hdf5(out_dir / "replay.hdf5", collected.d4rl_arrays(snapshot_step), {
        "generator": "adept.online_sac", "env": env, "env_id": spec.gym_id, "dataset": "medium-replay",
        "max_episode_steps": spec.max_episode_steps, "policy_sha256": policy_sha256,
        "behavior": {k: v for k, v in info.items() if k != "online_config"},
        "online_config": json.dumps(to_dict(config)), "sac_config": json.dumps(to_dict(learner.config)),
    })
    summary = {**info, "policy": "policy.pt", "policy_sha256": policy_sha256, "replay": replay_path.name,
               "replay_transitions": snapshot_step, "sac_config": to_dict(learner.config)}
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    checkpoint_path.unlink(missing_ok=True)
    log.info("[%s] %s at env step %d: stochastic return %.0f ± %.0f over %d episodes (target %.0f), %.0f s",
             env, "reached the target" if reached else "best snapshot (target NOT reached)", snapshot_step,
             measured["return_mean"], measured["return_std"], config.final_eval_episodes, target, wall_time)
    return summary
