"""One training run: (method, env, dataset, seed) -> eval.csv, train.csv, final.json.

Every method of the harness goes through this loop: plain offline RL learners, ADEPT and Diff+X
(which add a synthetic-data source, `adept.closed_loop.ClosedLoop`). The loop keeps everything on
the training device and reads values back to the host only at the logging and evaluation cadence.

Interrupted runs resume from `<out_dir>/checkpoint.pt` and give the same result as an
uninterrupted run on the same machine: the checkpoint holds the learner (networks, optimizers),
the world model and the synthetic buffer, every random generator, and the step.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adept.closed_loop import ClosedLoop, ClosedLoopConfig
from adept.config import ConfigError, from_dict, require, to_dict
from adept.methods import MethodSpec, parse_method
from adept.outputs import CsvLog, atomic_torch_save, atomic_write_text
from adept.world_model import WorldModel

log = logging.getLogger("adept.runner")


@dataclass
class RunConfig:
    """The training schedule (Table 3: 1000 epochs x 1000 gradient steps, batch 256)."""

    steps: int = 1_000_000             # learner gradient steps
    batch_size: int = 256              # B_p
    eval_every: int = 5_000            # gradient steps between evaluations in the real env
    eval_episodes: int = 10
    final_eval_window: int = 10        # final_score = mean over the last k evaluations
    log_every: int = 1_000             # train.csv cadence (also the NaN/inf check cadence)
    checkpoint_every: int = 50_000
    mixing: str = "uniform"            # "uniform" over D ∪ D-hat (Algorithm 1) or "fraction"
    real_fraction: float = 0.5         # used when mixing == "fraction"
    deterministic_eval: bool = True    # evaluate the policy's mean action

    def validate(self) -> None:
        require(self.steps >= 1, f"run.steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"run.batch_size must be >= 1, got {self.batch_size}")
        for key in ("eval_every", "log_every", "checkpoint_every"):
            value = getattr(self, key)
            require(value >= 1, f"run.{key} must be >= 1, got {value}")
        require(self.eval_episodes >= 1, f"run.eval_episodes must be >= 1, got {self.eval_episodes}")
        require(self.final_eval_window >= 1,
                f"run.final_eval_window must be >= 1, got {self.final_eval_window}")
        require(self.mixing in ("uniform", "fraction"),
                f"run.mixing must be 'uniform' or 'fraction', got {self.mixing!r}")
        require(0.0 <= self.real_fraction <= 1.0,
                f"run.real_fraction must be in [0, 1], got {self.real_fraction}")


@dataclass
class TrainConfig:
    """Everything one run needs; the YAML given to `python -m adept train --config` has these sections."""

    run: RunConfig = field(default_factory=RunConfig)
    learner: dict = field(default_factory=dict)        # overrides of the learner's dataclass
    world_model: dict = field(default_factory=dict)    # runtime overrides of the loaded world model's config
    adept: ClosedLoopConfig = field(default_factory=ClosedLoopConfig)  # adept-* and diff-* only

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainConfig":
        return from_dict(cls, values or {})


class DivergenceError(RuntimeError):
    """A loss or generated value became NaN/inf; the last good checkpoint is kept."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(device)


def versions() -> dict[str, str]:
    import gymnasium
    import mujoco

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__, "commit": git_commit()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _host_metrics(sums: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, float]:
    """One host transfer for all running sums: {name: mean over the steps that reported it}.

    Metrics come at different cadences (learner: every update; rollouts: once per epoch; IWU: as
    scheduled), so each is averaged over its own count."""
    if not sums:
        return {}
    names = list(sums)
    values = torch.stack([sums[n].float().reshape(()) for n in names]).cpu().tolist()
    return {n: v / counts[n] for n, v in zip(names, values)}


@dataclass
class RunInputs:
    method: str
    env: str
    dataset: str
    seed: int
    out_dir: Path
    data_path: Path | None = None
    source: str = "d4rl"
    world_model_path: Path | None = None
    behavior_policy_path: Path | None = None
    device: str = "auto"
    progress: bool = True


def train(inputs: RunInputs, config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) one training run and return the content of final.json."""
    from adept.data import load_dataset
    from adept.envs import get_env_spec
    from adept.evaluation import evaluate, torch_policy
    from baselines import make_learner
    from baselines.replay import MixedSampler, TensorBuffer

    method = parse_method(inputs.method)
    spec = get_env_spec(inputs.env)
    run_cfg = config.run
    _check_inputs(method, inputs)
    device = resolve_device(inputs.device)
    out_dir = Path(inputs.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{inputs.method} {inputs.env}-{inputs.dataset} seed{inputs.seed}"

    seed_everything(inputs.seed)
    dataset = load_dataset(inputs.env, inputs.dataset, inputs.source, path=inputs.data_path)
    learner = make_learner(method.learner, spec.obs_dim, spec.act_dim, device,
                           overrides=_learner_overrides(method.learner, config, inputs.seed), dataset=dataset)
    real = TensorBuffer.from_dataset(dataset, device)
    generator = torch.Generator(device=device).manual_seed(inputs.seed)

    loop = _make_closed_loop(method, inputs, config, dataset, real, device, learner, generator)
    sampler = MixedSampler(real, loop.synthetic if loop else None, run_cfg.batch_size,
                           rule=run_cfg.mixing, real_fraction=run_cfg.real_fraction, generator=generator)

    eval_log = CsvLog(out_dir / "eval.csv")
    train_log = CsvLog(out_dir / "train.csv")
    checkpoint_path = out_dir / "checkpoint.pt"
    start_step, elapsed_before = 0, 0.0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        _check_resumable(state, inputs, config)
        learner.load_state_dict(state["learner"])
        if loop is not None:
            loop.load_state_dict(state["closed_loop"], learner)
        generator.set_state(state["generator"])
        _set_rng_state(state["rng"], device)
        start_step, elapsed_before = state["step"], state["elapsed_s"]
        eval_log.truncate_after(start_step)
        train_log.truncate_after(start_step)
        log.info("[%s] resuming from step %d (%s)", tag, start_step, checkpoint_path)
    else:
        eval_log.reset()
        train_log.reset()

    def save_checkpoint(step: int, elapsed: float) -> None:
        atomic_torch_save({
            "step": step, "elapsed_s": elapsed, "learner": learner.state_dict(),
            "closed_loop": loop.state_dict() if loop else None, "generator": generator.get_state(),
            "rng": _rng_state(device), "method": inputs.method, "env": inputs.env,
            "dataset": inputs.dataset, "seed": inputs.seed, "config": to_dict(config),
        }, checkpoint_path)

    def run_evaluation(step: int, elapsed: float) -> dict[str, float]:
        policy = torch_policy(lambda obs: learner.act(obs, deterministic=run_cfg.deterministic_eval), device)
        # Seeds depend on (run seed, step) only, so resumed runs evaluate identically.
        result = evaluate(policy, inputs.env, run_cfg.eval_episodes, seed=10_000 * (inputs.seed + 1) + step)
        row = {"step": step, "return_mean": result.return_mean, "return_std": result.return_std,
               "score_mean": result.score_mean, "score_std": result.score_std,
               "episode_length_mean": result.length_mean, "wall_time_s": elapsed}
        if loop is not None:
            row.update(loop.diagnostics(learner))
            if "J_hat" in row:
                row["J"] = result.return_mean
        eval_log.append(row)
        return row

    step_timer = time.perf_counter()
    run_start = time.perf_counter() - elapsed_before
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    since_log = 0
    for step in range(start_step, run_cfg.steps):
        metrics: dict[str, torch.Tensor] = {}
        if loop is not None:
            metrics.update(loop.before_update(step, learner))
        metrics.update(learner.update(sampler.sample()))
        if loop is not None:
            metrics.update(loop.after_update(step, learner))
        for name, value in metrics.items():
            sums[name] = sums[name] + value.detach() if name in sums else value.detach().clone()
            counts[name] = counts.get(name, 0) + 1
        since_log += 1
        done = step + 1
        if done % run_cfg.log_every == 0 or done == run_cfg.steps:
            host = _host_metrics(sums, counts)
            bad = sorted(k for k, v in host.items() if not math.isfinite(v))
            if bad:
                raise DivergenceError(
                    f"[{tag}] non-finite values at step {done}: {', '.join(f'{k}={host[k]}' for k in bad)} "
                    f"(learner losses are unprefixed; wm/ = world-model update, rollout/ = generated "
                    f"data, iw/ = importance weights). The last good checkpoint ({checkpoint_path}) was kept.")
            if host.get("iw/is_collapsed", 0.0) > 0.0:
                log.warning("[%s] importance weights collapsed (ESS/N below the threshold) in %.0f%% of IWU "
                            "steps before step %d; mean ESS/N %.3f", tag, 100 * host["iw/is_collapsed"], done,
                            host.get("iw/is_ess_fraction", float("nan")))
            now = time.perf_counter()
            host["updates_per_s"] = since_log / max(now - step_timer, 1e-9)
            step_timer, sums, counts, since_log = now, {}, {}, 0
            train_log.append({"step": done, **host})
        if done % run_cfg.eval_every == 0 or done == run_cfg.steps:
            elapsed = time.perf_counter() - run_start
            row = run_evaluation(done, elapsed)
            if inputs.progress:
                rate = (done - start_step) / max(elapsed - elapsed_before, 1e-9)
                eta = (run_cfg.steps - done) / max(rate, 1e-9)
                log.info("[%s] step %d/%d  score %.1f ± %.1f  return %.0f  %.0f upd/s  ETA %s", tag, done,
                         run_cfg.steps, row["score_mean"], row["score_std"], row["return_mean"], rate,
                         _fmt_duration(eta))
        if done % run_cfg.checkpoint_every == 0 and done < run_cfg.steps:
            save_checkpoint(done, time.perf_counter() - run_start)

    wall = time.perf_counter() - run_start
    evals = eval_log.rows()
    window = evals[-run_cfg.final_eval_window:]
    final = {
        "method": inputs.method, "learner": method.learner, "synthetic": method.synthetic,
        "env": inputs.env, "dataset": inputs.dataset, "source": inputs.source, "seed": inputs.seed,
        "env_id": spec.gym_id,
        "final_score": float(np.mean([r["score_mean"] for r in window])),
        "final_score_window": len(window),
        "best_score": float(max(r["score_mean"] for r in evals)),
        "final_return": float(np.mean([r["return_mean"] for r in window])),
        "steps": run_cfg.steps, "wall_time_s": wall,
        "updates_per_s": (run_cfg.steps - start_step) / max(wall - elapsed_before, 1e-9),
        "device": device_name(device), "data_path": str(inputs.data_path) if inputs.data_path else None,
        "dataset_metadata": _jsonable(dataset.metadata),
        "world_model": str(inputs.world_model_path) if inputs.world_model_path else None,
        "behavior_policy": str(inputs.behavior_policy_path) if inputs.behavior_policy_path else None,
        "config": to_dict(config), "learner_config": to_dict(learner.config),
        "versions": versions(),
    }
    from baselines import save_learner
    save_learner(out_dir / "policy.pt", learner)
    atomic_write_text(out_dir / "final.json", json.dumps(final, indent=2, default=str) + "\n")
    if checkpoint_path.exists():
        checkpoint_path.unlink()  # the run is complete; policy.pt holds the final learner
    log.info("[%s] done: final score %.1f (best %.1f) in %s", tag, final["final_score"],
             final["best_score"], _fmt_duration(wall))
    return final


def _learner_overrides(learner: str, config: TrainConfig, seed: int) -> dict:
    """The learner's config overrides with what the run decides: its seed (unless set), the batch
    size (run.batch_size is the one the sampler uses) and, for learning-rate schedules, the run length."""
    from baselines import learner_config

    given = dict(config.learner)
    if "batch_size" in given and given["batch_size"] != config.run.batch_size:
        raise ConfigError(f"learner.batch_size ({given['batch_size']}) differs from run.batch_size "
                          f"({config.run.batch_size}); set the batch size with run.batch_size only")
    decided: dict[str, Any] = {"seed": seed, "batch_size": config.run.batch_size}
    if hasattr(learner_config(learner), "lr_decay_steps"):
        decided["lr_decay_steps"] = config.run.steps  # e.g. IQL's cosine actor schedule spans the run
    return {**decided, **given}


def _check_inputs(method: MethodSpec, inputs: RunInputs) -> None:
    if method.needs_world_model and inputs.world_model_path is None:
        raise ValueError(f"method {method.name!r} needs a trained world model: pass --world-model "
                         f"(train one with `python -m adept world-model`)")
    if method.needs_behavior_policy and inputs.behavior_policy_path is None:
        raise ValueError(f"method {method.name!r} needs the behaviour policy pi_D for importance weights: "
                         f"pass --behavior-policy (fit one with `python -m adept behavior-policy`)")
    for label, path in (("--data", inputs.data_path), ("--world-model", inputs.world_model_path),
                        ("--behavior-policy", inputs.behavior_policy_path)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{label} file {path} does not exist")


def _check_resumable(state: dict, inputs: RunInputs, config: TrainConfig) -> None:
    for key in ("method", "env", "dataset", "seed"):
        if state[key] != getattr(inputs, key):
            raise ValueError(f"checkpoint in {inputs.out_dir} belongs to {key}={state[key]!r}, not "
                             f"{getattr(inputs, key)!r}; use another --out-dir or delete the checkpoint")
    if state["config"] != to_dict(config):
        raise ValueError(f"checkpoint in {inputs.out_dir} was made with a different config; resume with "
                         f"the same config or delete {Path(inputs.out_dir) / 'checkpoint.pt'} to start over")


def _make_closed_loop(method: MethodSpec, inputs: RunInputs, config: TrainConfig, dataset, real, device,
                      learner, generator):
    if not method.needs_world_model:
        return None
    from baselines import load_learner

    loop_cfg = config.adept
    if method.synthetic == "diff":  # Diff+X: the world model trained once is never refitted
        loop_cfg = replace(loop_cfg, refit_world_model=False)
    world_model = WorldModel.load(inputs.world_model_path, device)
    world_model.apply_runtime_overrides(config.world_model)
    # pi_D is needed only for ADEPT's importance weights (Diff+X never refits the world model).
    behavior = load_learner(inputs.behavior_policy_path, device) if method.needs_behavior_policy else None
    gamma = float(getattr(learner.config, "gamma", 0.99))
    return ClosedLoop(loop_cfg, world_model, real, behavior, gamma=gamma, generator=generator,
                      heldout=_heldout_transitions(inputs.world_model_path, dataset, device))


def _heldout_transitions(world_model_path: Path, dataset, device):
    """The transitions the world model's initial fit held out (from its report next to the model),
    or None (diagnostics then use training data) if the report is missing or is for other data."""
    from adept.data.dataset import split_holdout
    from adept.world_model_training import output_paths
    from baselines.replay import TensorBuffer

    report_path = output_paths(world_model_path)["report"]
    if not report_path.is_file():
        log.warning("no report %s next to the world model: Theorem 4.4 errors will be measured on its "
                    "training data", report_path)
        return None
    report = json.loads(report_path.read_text())
    n = len(dataset.observations)
    if report.get("train_transitions", 0) + report.get("heldout_transitions", 0) != n:
        log.warning("the world model's report %s describes a dataset of another size: Theorem 4.4 errors "
                    "will be measured on training data", report_path)
        return None
    _, heldout = split_holdout(n, report["holdout_fraction"], report["seed"])
    return TensorBuffer.from_dataset(dataset, device, indices=heldout)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"<array {value.shape} {value.dtype}>"
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def load_train_config(path: str | os.PathLike | None, overrides: list[str] | None) -> TrainConfig:
    from adept.config import load_yaml, merge, parse_overrides

    values = load_yaml(path) if path else {}
    values = merge(values, parse_overrides(overrides))
    unknown = sorted(set(values) - {"run", "learner", "world_model", "adept"})
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid sections are "
                          f"['adept', 'learner', 'run', 'world_model']")
    return TrainConfig.from_dict(values)
