"""One training run: (method, env, dataset, seed) -> eval.csv, train.csv, final.json.

Every method of the harness goes through this loop: plain offline RL learners, ADEPT and Diff+X
(which add a synthetic-data source, `adept.closed_loop.ClosedLoop`), MOPO and COMBO (model rollouts,
`adept.model_rollouts`), SynthER (samples drawn once, `adept.synther.SyntheticUpsampling`) and Diffuser
(a learner of trajectory segments, `baselines.replay.SegmentSampler`, that plans when it acts). The loop
keeps everything on the training device and reads values back to the host only at the logging and
evaluation cadence.

Interrupted runs resume from `<out_dir>/checkpoint.pt` and give the same result as an
uninterrupted run on the same machine: the checkpoint holds the learner (networks, optimizers),
the world model and the synthetic buffer, every random generator, and the step.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from adept.closed_loop import ClosedLoop, ClosedLoopConfig
from adept.model_rollouts import ModelRolloutConfig, check_method_config, make_model_rollouts
from adept.config import ConfigError, from_dict, require, to_dict
from adept.errors import DivergenceError, UserError, format_error
from adept.locks import run_folder_lock
from adept.loggers import check_loggers, open_trackers
from adept.methods import MethodSpec, parse_method
from adept.outputs import CsvLog, atomic_torch_save, atomic_write_text, non_finite_entries
from adept.provenance import (device_name, file_sha256, global_rng_state, resolve_device, seed_everything,
                              set_global_rng_state, stream_seed, versions)
from adept.run_outputs import (CHECKPOINT, COMPLETION_RECORD, EVAL_LOG, FINAL, POLICY, TRAIN_LOG, eval_row,
                               final_record, read_final, write_final)
from adept.synther import UpsamplingConfig
from adept.world_model import WorldModel
from baselines.compile import COMPILE_MODES, resolve_compile

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
    loggers: tuple[str, ...] = ("csv",)  # + "tensorboard", "wandb": mirrors of train/eval.csv (adept.loggers)
    # Compile the learner's update, the IWU step and the guided sampling loop (baselines/compile.py):
    # "auto" = where measured faster and tested equal, for runs long enough to repay the compile time.
    compile: Literal["off", "on", "auto"] | bool = "auto"
    tf32: bool = False                 # CUDA only: TF32 matmuls (10-bit mantissa); false keeps full fp32

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
        check_loggers(self.loggers)
        require(isinstance(self.compile, bool) or self.compile in COMPILE_MODES,
                f"run.compile must be one of {list(COMPILE_MODES)}, got {self.compile!r}")


@dataclass
class TrainConfig:
    """Everything one run needs; the YAML given to `python -m adept train --config` has these sections."""

    run: RunConfig = field(default_factory=RunConfig)
    learner: dict = field(default_factory=dict)        # overrides of the learner's dataclass
    world_model: dict = field(default_factory=dict)    # runtime overrides of the loaded world model's config
    adept: ClosedLoopConfig = field(default_factory=ClosedLoopConfig)  # adept-* and diff-* only
    model_rollouts: ModelRolloutConfig = field(default_factory=ModelRolloutConfig)  # mopo and combo only
    upsampling: UpsamplingConfig = field(default_factory=UpsamplingConfig)  # synther-* only

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainConfig":
        return from_dict(cls, values or {})


# The run's random streams besides the learner's own generator (seeded with the run seed itself):
# training (sampler, PE, IWU) and evaluation (stochastic evaluation, diagnostics, ground truth).
TRAINING_STREAM, EVALUATION_STREAM = 1, 2
SYNTHESIS_STREAM = 3  # SynthER's samples: regenerated from it alone when a run resumes


def load_checkpoint(path: Path) -> dict:
    """A run checkpoint with every tensor on the CPU. RNG states must stay CPU ByteTensors
    (torch.Generator.set_state, torch.set_rng_state and torch.cuda.set_rng_state refuse others);
    load_state_dict moves parameters, optimizer state and buffers to their device."""
    from adept.outputs import load_torch_file

    return load_torch_file(path, "training checkpoint written by `adept train`",
                           "delete it (or pass --restart) to start the run over", required=("step", "learner"),
                           map_location="cpu", weights_only=False)


def accumulate_metrics(sums: dict[str, torch.Tensor], counts: dict[str, int], metrics: dict[str, torch.Tensor]) -> None:
    """Add one step's metrics to the running sums on the device, without a host sync: one fused
    (foreach) add for the names seen before, a float32 copy for new ones."""
    seen = [name for name in metrics if name in sums]
    if seen:
        torch._foreach_add_([sums[name] for name in seen], [metrics[name].detach() for name in seen])
    for name, value in metrics.items():
        if name not in sums:
            sums[name] = value.detach().to(torch.float32, copy=True)
        counts[name] = counts.get(name, 0) + 1


def run_compile(run: RunConfig, device: torch.device) -> str:
    """run.compile resolved to "on"/"off" for this run on `device` (baselines/compile.py; with "auto"
    the run's length decides whether compiling pays off)."""
    return "on" if resolve_compile(run.compile, device, steps=run.steps) else "off"


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
    ensemble_path: Path | None = None   # the dynamics ensemble of mopo / combo
    synther_path: Path | None = None    # the SynthER transition model of synther-*
    device: str = "auto"
    progress: bool = True
    restart: bool = False     # discard a completed (or interrupted) run in out_dir and train again


def train(inputs: RunInputs, config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) one training run and return the content of final.json.

    Holds the run folder's lock throughout (a second process on the same folder fails at once). A
    completed run is not trained again: if final.json (or, when Snakemake removed it, completed.json)
    records this run with the same config and inputs, it is returned (and final.json restored) in
    seconds; one with another config is an error unless `inputs.restart`.
    """
    from adept.envs import get_env_spec

    method = parse_method(inputs.method)
    get_env_spec(inputs.env)
    _check_inputs(method, inputs)
    if method.needs_ensemble:
        check_method_config(method.base, config.run, config.model_rollouts)
    resolve_device(inputs.device)
    out_dir = Path(inputs.out_dir)
    with run_folder_lock(out_dir, f"run folder {out_dir}",
                     "wait for that run to finish (or stop it), or choose another --out-dir"):
        completed = _completed_run(inputs, config)
        if completed is not None:
            return completed
        return _train(inputs, config)


def _train(inputs: RunInputs, config: TrainConfig) -> dict[str, Any]:
    from adept.data import load_dataset
    from adept.envs import get_env_spec
    from adept.evaluation import evaluate, torch_policy
    from baselines import make_learner
    from baselines.replay import MixedSampler, SegmentSampler, TensorBuffer

    method = parse_method(inputs.method)
    spec = get_env_spec(inputs.env)
    run_cfg = config.run
    _check_inputs(method, inputs)
    device = resolve_device(inputs.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = run_cfg.tf32
    out_dir = Path(inputs.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{inputs.method} {inputs.env}-{inputs.dataset} seed{inputs.seed}"

    seed_everything(inputs.seed)
    dataset = load_dataset(inputs.env, inputs.dataset, inputs.source, path=inputs.data_path)
    learner = make_learner(method.learner, spec.obs_dim, spec.act_dim, device,
                           overrides=_learner_overrides(method.learner, config, inputs.seed, device), dataset=dataset)
    real = TensorBuffer.from_dataset(dataset, device)
    generator = torch.Generator(device=device).manual_seed(stream_seed(inputs.seed, TRAINING_STREAM))
    eval_generator = torch.Generator(device=device).manual_seed(stream_seed(inputs.seed, EVALUATION_STREAM))

    loop = _make_closed_loop(method, inputs, config, dataset, real, device, learner, generator, eval_generator)
    segments = learner.segment_sampler_options()
    if segments is not None:  # a learner of trajectory segments (Diffuser): D's episodes, no synthetic data
        sampler = SegmentSampler(dataset, batch_size=run_cfg.batch_size, device=device, generator=generator,
                                 **segments)
    else:
        sampler = MixedSampler(real, loop.synthetic if loop else None, run_cfg.batch_size,
                               rule=run_cfg.mixing, real_fraction=run_cfg.real_fraction, generator=generator)

    eval_log = CsvLog(out_dir / EVAL_LOG)
    train_log = CsvLog(out_dir / TRAIN_LOG)
    checkpoint_path = out_dir / CHECKPOINT
    start_step, elapsed_before = 0, 0.0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        if "eval_generator" not in state:
            raise ValueError(f"{checkpoint_path} was written by an older version of the harness (no evaluation "
                             f"generator); delete it to start the run over")
        _check_resumable(state, inputs, config)
        learner.load_state_dict(state["learner"])
        if loop is not None:
            loop.load_state_dict(state["closed_loop"], learner)
        generator.set_state(state["generator"])
        eval_generator.set_state(state["eval_generator"])
        set_global_rng_state(state["rng"], device)
        start_step, elapsed_before = state["step"], state["elapsed_s"]
        eval_log.truncate_after(start_step)
        train_log.truncate_after(start_step)
        log.info("[%s] resuming from step %d (%s)", tag, start_step, checkpoint_path)
    else:
        eval_log.reset()
        train_log.reset()

    checkpoint_step = start_step or None  # the step of the checkpoint on disk, if any
    trackers = open_trackers(run_cfg.loggers, out_dir, resume_step=start_step, name=tag, group=inputs.method,
                             config=to_dict(config))

    def diverged(step: int, values: str) -> DivergenceError:
        if checkpoint_step is None:
            kept = (f"no checkpoint exists yet (the first is written at step {run_cfg.checkpoint_every}), so "
                    f"nothing was kept")
        else:
            kept = f"the last good checkpoint (step {checkpoint_step}) was kept"
        return DivergenceError(
            f"[{tag}] training diverged: non-finite values at step {step}: {values} (learner losses are "
            f"unprefixed; wm/ = world-model update, rollout/ = generated data, iw/ = importance weights)",
            checkpoint_path if checkpoint_step is not None else out_dir,
            f"{kept}; the same config diverges again, so change it (e.g. a lower learner learning rate, "
            f"world_model.grad_clip_norm, a lower adept.importance.max_weight) and rerun with --restart")

    def save_checkpoint(step: int, elapsed: float, metrics: dict[str, float]) -> None:
        nonlocal checkpoint_step
        state = {
            "step": step, "elapsed_s": elapsed, "learner": learner.state_dict(),
            "closed_loop": loop.state_dict() if loop else None, "generator": generator.get_state(),
            "eval_generator": eval_generator.get_state(),
            "rng": global_rng_state(device), "method": inputs.method, "env": inputs.env,
            "dataset": inputs.dataset, "seed": inputs.seed, "config": to_dict(config),
        }
        # A checkpoint is the state a rerun resumes from: it must never hold NaN/inf, whatever the
        # logging cadence (the metrics since the last log row and every tensor it holds are checked).
        bad = [f"{k}={v}" for k, v in sorted(metrics.items()) if not math.isfinite(v)]
        bad += [f"{name} (in the checkpoint)" for name in non_finite_entries(state)[:5]]
        if bad:
            raise diverged(step, ", ".join(bad))
        atomic_torch_save(state, checkpoint_path)
        checkpoint_step = step

    def run_evaluation(step: int, elapsed: float) -> dict[str, float]:
        policy = torch_policy(lambda obs: learner.act(obs, deterministic=run_cfg.deterministic_eval,
                                                      generator=eval_generator), device)
        # Seeds depend on (run seed, step) only, so resumed runs evaluate identically.
        result = evaluate(policy, inputs.env, run_cfg.eval_episodes, seed=10_000 * (inputs.seed + 1) + step)
        row = eval_row(step, result, elapsed)
        if loop is not None:
            row.update(loop.diagnostics(learner))
            if "J_hat" in row:
                row["J"] = result.return_mean
        eval_log.append(row)
        trackers.log("eval", row)
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
        accumulate_metrics(sums, counts, metrics)
        since_log += 1
        done = step + 1
        if done % run_cfg.log_every == 0 or done == run_cfg.steps:
            host = _host_metrics(sums, counts)
            bad = sorted(k for k, v in host.items() if not math.isfinite(v))
            if bad:
                raise diverged(done, ", ".join(f"{k}={host[k]}" for k in bad))
            if host.get("iw/is_collapsed", 0.0) > 0.0:
                log.warning("[%s] importance weights collapsed (ESS/N below the threshold) in %.0f%% of IWU "
                            "steps before step %d; mean ESS/N %.3f", tag, 100 * host["iw/is_collapsed"], done,
                            host.get("iw/is_ess_fraction", float("nan")))
            now = time.perf_counter()
            host["updates_per_s"] = since_log / max(now - step_timer, 1e-9)
            step_timer, sums, counts, since_log = now, {}, {}, 0
            train_log.append({"step": done, **host})
            trackers.log("train", {"step": done, **host})
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
            save_checkpoint(done, time.perf_counter() - run_start, _host_metrics(sums, counts))

    wall = time.perf_counter() - run_start
    final = final_record(
        method=inputs.method, env=inputs.env, dataset=inputs.dataset, seed=inputs.seed, source=inputs.source,
        evals=eval_log.rows(), window=run_cfg.final_eval_window, steps=run_cfg.steps, wall_time_s=wall,
        updates_per_s=(run_cfg.steps - start_step) / max(wall - elapsed_before, 1e-9), device=device_name(device),
        config=to_dict(config), versions=versions(), learner=method.learner, synthetic=method.synthetic,
        data_path=str(inputs.data_path) if inputs.data_path else None,
        dataset_metadata=_jsonable(dataset.metadata),
        world_model=str(inputs.world_model_path) if inputs.world_model_path else None,
        behavior_policy=str(inputs.behavior_policy_path) if inputs.behavior_policy_path else None,
        ensemble=str(inputs.ensemble_path) if inputs.ensemble_path else None,
        synther=str(inputs.synther_path) if inputs.synther_path else None,
        learner_config=to_dict(learner.config), inputs_sha256=_input_hashes(inputs))
    from baselines import save_learner
    save_learner(out_dir / POLICY, learner,
                 trained_on={"env": inputs.env, "dataset": inputs.dataset, "source": inputs.source})
    final["policy_sha256"] = file_sha256(out_dir / POLICY)
    # completed.json first: if Snakemake deletes final.json (a job it marks incomplete), a rerun
    # restores it from there instead of training again.
    write_final(out_dir, final, completion_record=True)
    trackers.close()
    if checkpoint_path.exists():
        checkpoint_path.unlink()  # the run is complete; policy.pt holds the final learner
    log.info("[%s] done: final score %.1f (best %.1f) in %s", tag, final["final_score"],
             final["best_score"], _fmt_duration(wall))
    return final


def _completed_run(inputs: RunInputs, config: TrainConfig) -> dict[str, Any] | None:
    """final.json of a completed run of exactly this run in out_dir, restoring it from completed.json
    if it was deleted; None if the run has to train (nothing there, `restart`, or a stale record).

    Raises UserError if final.json records a run of another config or other inputs: training again
    would wipe its history, so that takes --restart.
    """
    out_dir = Path(inputs.out_dir)
    final_path, record_path = out_dir / FINAL, out_dir / COMPLETION_RECORD
    policy_path, checkpoint_path = out_dir / POLICY, out_dir / CHECKPOINT
    tag = f"{inputs.method} {inputs.env}-{inputs.dataset} seed{inputs.seed}"
    if inputs.restart:
        for path in (final_path, record_path, checkpoint_path, policy_path):  # completion markers first
            path.unlink(missing_ok=True)
        return None
    if final_path.is_file():
        final = read_final(final_path)
        differs = _run_differences(final, inputs, config)
        if differs:
            raise UserError(f"the run folder holds a completed run with another {differs}", final_path,
                            "pass --restart to discard it and train again, or choose another --out-dir")
        checkpoint_path.unlink(missing_ok=True)  # left if the process ended right after final.json
        log.warning("[%s] %s is complete (final score %.1f); nothing to do (--restart trains again)", tag, out_dir,
                 final.get("final_score", float("nan")))
        return final
    if not record_path.is_file():
        return None
    final = read_final(record_path)
    differs = _run_differences(final, inputs, config)
    if differs:  # final.json was removed because the run is to be redone (e.g. Snakemake: config changed)
        log.info("[%s] %s records a run with another %s: training again", tag, record_path, differs)
        record_path.unlink()
        policy_path.unlink(missing_ok=True)
        return None
    if not policy_path.is_file() or final.get("policy_sha256") not in (None, file_sha256(policy_path)):
        raise UserError("the run finished (completed.json) but its policy.pt is missing or was changed since",
                        policy_path, "pass --restart to train the run again")
    atomic_write_text(final_path, record_path.read_text())
    checkpoint_path.unlink(missing_ok=True)
    log.info("[%s] training had finished: restored %s from %s", tag, final_path, record_path)
    return final


def _run_differences(final: dict[str, Any], inputs: RunInputs, config: TrainConfig) -> str:
    """What differs between the run recorded in `final` and this one ('' if nothing): identity,
    config (by dotted key), input files (by sha256, when recorded)."""
    for key in ("method", "env", "dataset", "seed"):
        if final.get(key) != getattr(inputs, key):
            return f"{key} ({final.get(key)!r}, not {getattr(inputs, key)!r})"
    ours = _flatten(json.loads(json.dumps(to_dict(config), default=str)))
    theirs = _flatten(final.get("config") or {})
    changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k, "<unset>") != theirs.get(k, "<unset>"))
    if changed:
        shown = ", ".join(f"{k}: {theirs.get(k, '<unset>')!r} -> {ours.get(k, '<unset>')!r}" for k in changed[:3])
        return f"config ({shown}{', ...' if len(changed) > 3 else ''})"
    recorded = final.get("inputs_sha256")
    if recorded is not None:
        changed = sorted(k for k, v in _input_hashes(inputs).items() if recorded.get(k) != v)
        if changed:
            return f"input file ({', '.join(changed)} changed)"
    return ""


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _input_hashes(inputs: RunInputs) -> dict[str, str | None]:
    """sha256 of the files the run reads (None for those not given): a changed file means another run."""
    files = {"data": inputs.data_path, "world_model": inputs.world_model_path,
             "behavior_policy": inputs.behavior_policy_path, "ensemble": inputs.ensemble_path,
             "synther": inputs.synther_path}
    return {label: file_sha256(path) if path is not None and Path(path).is_file() else None
            for label, path in files.items()}


def _learner_overrides(learner: str, config: TrainConfig, seed: int, device: torch.device) -> dict:
    """The learner's config overrides with what the run decides: its seed (unless set), the batch
    size (run.batch_size is the one the sampler uses), whether its update is compiled (run.compile) and,
    for learning-rate schedules, the run length."""
    from baselines import learner_config

    given = dict(config.learner)
    if "batch_size" in given and given["batch_size"] != config.run.batch_size:
        raise ConfigError(f"learner.batch_size ({given['batch_size']}) differs from run.batch_size "
                          f"({config.run.batch_size}); set the batch size with run.batch_size only")
    decided: dict[str, Any] = {"seed": seed, "batch_size": config.run.batch_size,
                               "compile": run_compile(config.run, device)}
    if hasattr(learner_config(learner), "lr_decay_steps"):
        decided["lr_decay_steps"] = config.run.steps  # e.g. IQL's cosine actor schedule spans the run
    if hasattr(learner_config(learner), "real_rows") and config.run.mixing == "fraction":
        from baselines.replay import fraction_real_rows  # COMBO: the sampler's real/synthetic split point

        decided["real_rows"] = fraction_real_rows(config.run.batch_size, config.run.real_fraction)
    return {**decided, **given}


def _check_inputs(method: MethodSpec, inputs: RunInputs) -> None:
    if method.needs_world_model and inputs.world_model_path is None:
        raise ValueError(f"method {method.name!r} needs a trained world model: pass --world-model "
                         f"(train one with `python -m adept world-model`)")
    if method.needs_behavior_policy and inputs.behavior_policy_path is None:
        raise ValueError(f"method {method.name!r} needs the behaviour policy pi_D for importance weights: "
                         f"pass --behavior-policy (fit one with `python -m adept behavior-policy`)")
    if method.needs_ensemble and inputs.ensemble_path is None:
        raise ValueError(f"method {method.name!r} needs a fitted dynamics ensemble: pass --ensemble "
                         f"(fit one with `python -m adept ensemble`)")
    if method.needs_synther and inputs.synther_path is None:
        raise ValueError(f"method {method.name!r} needs a fitted SynthER model: pass --synther "
                         f"(fit one with `python -m adept synther`)")
    for label, path in (("--data", inputs.data_path), ("--world-model", inputs.world_model_path),
                        ("--behavior-policy", inputs.behavior_policy_path), ("--ensemble", inputs.ensemble_path),
                        ("--synther", inputs.synther_path)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{label} file {path} does not exist")
    # Before any work: a corrupt or foreign file, or one trained for another env, is a one-line error.
    from adept.envs import check_trained_for
    from adept.world_model import read_world_model_file
    from baselines import read_learner_file

    if method.needs_world_model:
        model = read_world_model_file(inputs.world_model_path)
        check_trained_for(inputs.env, inputs.world_model_path, "world model", model["obs_dim"], model["act_dim"],
                          (model.get("trained_on") or {}).get("env"),
                          f"pass a world model trained on {inputs.env} (`python -m adept world-model --env {inputs.env}`)")
    if method.needs_ensemble:
        from adept.ensemble import read_ensemble_file

        ensemble = read_ensemble_file(inputs.ensemble_path)
        check_trained_for(inputs.env, inputs.ensemble_path, "dynamics ensemble", ensemble["obs_dim"],
                          ensemble["act_dim"], ensemble["env"],
                          f"pass an ensemble fitted on {inputs.env} (`python -m adept ensemble --env {inputs.env}`)")
    if method.needs_synther:
        from adept.synther import read_synther_file

        model = read_synther_file(inputs.synther_path)
        check_trained_for(inputs.env, inputs.synther_path, "SynthER model", model["obs_dim"], model["act_dim"],
                          model.get("env"),
                          f"pass a SynthER model fitted on {inputs.env} (`python -m adept synther --env {inputs.env}`)")
    if method.needs_behavior_policy:
        policy = read_learner_file(inputs.behavior_policy_path)
        check_trained_for(inputs.env, inputs.behavior_policy_path, "behaviour policy pi_D", policy["obs_dim"],
                          policy["act_dim"], (policy.get("trained_on") or {}).get("env"),
                          f"pass a pi_D fitted on {inputs.env} (`python -m adept behavior-policy --env {inputs.env}`)")


def _check_resumable(state: dict, inputs: RunInputs, config: TrainConfig) -> None:
    for key in ("method", "env", "dataset", "seed"):
        if state[key] != getattr(inputs, key):
            raise ValueError(f"checkpoint in {inputs.out_dir} belongs to {key}={state[key]!r}, not "
                             f"{getattr(inputs, key)!r}; use another --out-dir or delete the checkpoint")
    if state["config"] != to_dict(config):
        raise ValueError(f"checkpoint in {inputs.out_dir} was made with a different config; resume with "
                         f"the same config or delete {Path(inputs.out_dir) / 'checkpoint.pt'} to start over")


def _make_closed_loop(method: MethodSpec, inputs: RunInputs, config: TrainConfig, dataset, real, device,
                      learner, generator, eval_generator):
    if method.needs_ensemble:  # mopo, combo: rollouts in the fitted dynamics ensemble
        return make_model_rollouts(config.model_rollouts, inputs.ensemble_path, inputs.env, dataset, real, device,
                                   gamma=float(getattr(learner.config, "gamma", 0.99)), generator=generator,
                                   eval_generator=eval_generator)
    if method.needs_synther:  # synther-*: D-hat filled once from the fitted transition model
        from adept.synther import SyntheticUpsampling, TransitionDiffusion

        return SyntheticUpsampling(config.upsampling, TransitionDiffusion.load(inputs.synther_path, device),
                                   seed=stream_seed(inputs.seed, SYNTHESIS_STREAM), device=device)
    if not method.needs_world_model:
        return None
    from adept.ground_truth import GroundTruth, simulator_states
    from adept.world_model_training import world_model_split
    from baselines import load_learner
    from baselines.replay import TensorBuffer

    loop_cfg = config.adept
    if method.synthetic == "diff":  # Diff+X: the world model trained once is never refitted
        loop_cfg = replace(loop_cfg, refit_world_model=False)
    # The rows the initial fit trained on (IWU may use them) and those it held out (diagnostics only).
    try:
        train_rows, heldout_rows = world_model_split(inputs.world_model_path, dataset)
    except ValueError as missing:
        if loop_cfg.refit_world_model:
            raise ValueError(f"{inputs.method}: {missing}, so IWU would train on the rows the diagnostics "
                             f"hold out; train the world model with `python -m adept world-model` (it records "
                             f"the split in the model) and pass that --world-model") from None
        log.warning("%s; %s never refits the world model, so its diagnostics (and gt/ columns) are measured "
                    "on all rows, including those the world model was fitted on", missing, inputs.method)
        train_rows = heldout_rows = None
    world_model = WorldModel.load(inputs.world_model_path, device)
    world_model.apply_runtime_overrides(config.world_model)
    world_model.set_compile(run_compile(config.run, device))
    # pi_D is needed only for ADEPT's importance weights (Diff+X never refits the world model).
    behavior = load_learner(inputs.behavior_policy_path, device) if method.needs_behavior_policy else None
    gamma = float(getattr(learner.config, "gamma", 0.99))
    ground_truth = None
    if loop_cfg.ground_truth_states > 0:
        states = simulator_states(dataset, heldout_rows)
        if states is not None:
            ground_truth = GroundTruth(inputs.env, states, num_states=loop_cfg.ground_truth_states,
                                       horizon=loop_cfg.horizon, gamma=gamma,
                                       tolerance=loop_cfg.ground_truth_tolerance,
                                       deterministic_policy=loop_cfg.rollout_deterministic)
    split = {} if train_rows is None else {
        "world_model_rows": TensorBuffer.from_dataset(dataset, device, indices=train_rows),
        "heldout": TensorBuffer.from_dataset(dataset, device, indices=heldout_rows)}
    return ClosedLoop(loop_cfg, world_model, real, behavior, gamma=gamma, generator=generator,
                      eval_generator=eval_generator, ground_truth=ground_truth, **split)


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
    if path:  # the file on its own first, so its errors name it (and a --set cannot hide a wrong-type section)
        try:
            _train_config_from(values)
        except ConfigError as err:
            raise ConfigError(format_error(str(err), path, "fix that entry of the file")) from None
    return _train_config_from(merge(values, parse_overrides(overrides)))


def _train_config_from(values: dict) -> TrainConfig:
    sections = {"run", "learner", "world_model", "adept", "model_rollouts", "upsampling"}
    unknown = sorted(set(values) - sections)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid sections are {sorted(sections)}")
    return TrainConfig.from_dict(values)
