"""Initial fit of the world model on D with pi_D, i.e. all importance weights 1 (Algorithm 1, first line).

The paper trains for 1e6 gradient steps ("till convergence", Table 2). We hold out a fraction of the
transitions and judge convergence on the held-out ONE-STEP error of the model as PE uses it
(guided K-step sampling with clipping): next-state MSE in normalized units, reward MSE, terminal
accuracy. Rule: the fit counts as converged when the best held-out next-state MSE of the last
`patience` evaluations is not more than `min_improvement` (relative) below the best before them.
With `early_stop` the run stops there; by default it runs all `steps` and reports the judgement.

Outputs next to `out_path` (e.g. model.pt): the model itself, `model.csv` (training log),
`model.json` (report, written last) and `model.ckpt` (resume state, saved every `checkpoint_every`
steps and at the end). Re-running the same call after an interruption resumes from the last
checkpoint and gives the same result as an uninterrupted run; a larger `steps` extends a finished run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from adept.config import require, to_dict
from adept.data.dataset import split_holdout
from adept.model_fit import (FitCheckpoint, FitClock, add_metrics, locked_fit, open_log, output_paths,
                             overall_steps_per_s, write_report)
from adept.world_model import WorldModel, WorldModelConfig, check_finite, read_world_model_file
from baselines.compile import COMPILE_MODES, resolve_compile
from baselines.replay import Batch, TensorBuffer, transition_arrays

CHECKPOINT_FORMAT = "adept-world-model-training/1"
EVAL_SEED_OFFSET = 1_000_003  # evaluation noise comes from its own generator, never the training one

__all__ = ["WorldModelFitConfig", "WorldModelFitSettings", "convergence", "evaluate_one_step", "output_paths",
           "train_world_model", "world_model_split"]


@dataclass
class WorldModelFitConfig:
    """The fit's schedule: the `world_model_training` section of `adept world-model --config`."""

    steps: int = 1_000_000          # gradient steps (Table 2: 1e6)
    log_every: int = 1000           # steps between log rows / held-out evaluations
    checkpoint_every: int = 10_000
    holdout_fraction: float = 0.05  # transitions held out to judge convergence (never trained on)
    eval_size: int = 2048           # held-out transitions each evaluation uses
    early_stop: bool = False        # stop once the held-out next-state error stops improving
    patience: int = 10              # evaluations of the convergence rule
    min_improvement: float = 0.01   # relative
    # Compile the Adam step and the sampler's denoiser (baselines/compile.py; auto: where measured faster).
    compile: Literal["off", "on", "auto"] | bool = "auto"

    def validate(self) -> None:
        for key in ("steps", "log_every", "checkpoint_every", "patience", "eval_size"):
            require(getattr(self, key) >= 1, f"world_model_training.{key} must be >= 1, got {getattr(self, key)}")
        require(0.0 < self.holdout_fraction < 1.0,
                f"world_model_training.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        require(self.min_improvement >= 0,
                f"world_model_training.min_improvement must be >= 0, got {self.min_improvement}")
        require(isinstance(self.compile, bool) or self.compile in COMPILE_MODES,
                f"world_model_training.compile must be one of {list(COMPILE_MODES)}, got {self.compile!r}")


@dataclass
class WorldModelFitSettings:
    """Everything `adept world-model` takes from --config / --set: the model and the fit's schedule."""

    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    world_model_training: WorldModelFitConfig = field(default_factory=WorldModelFitConfig)


def world_model_split(model_path: str | Path, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of the world model's initial fit on `dataset`, from the split the
    model file records (models saved before it did: from the fit's report next to the model);
    ValueError saying why if neither records it or the split is of another dataset."""
    holdout = (read_world_model_file(model_path).get("metadata") or {}).get("holdout")
    where = f"the world model {model_path}"
    if holdout is None:
        report_path = output_paths(model_path)["report"]
        if not report_path.is_file():
            raise ValueError(f"{where} records no train/held-out split and there is no report {report_path} "
                             f"next to it: its train/held-out split is unknown")
        report = json.loads(report_path.read_text())
        where = f"the world model's report {report_path}"
        holdout = {"num_transitions": report.get("train_transitions", 0) + report.get("heldout_transitions", 0),
                   "holdout_fraction": report.get("holdout_fraction"), "seed": report.get("seed")}
    n = len(dataset.observations)
    if holdout["num_transitions"] != n:
        raise ValueError(f"{where} describes a dataset of {holdout['num_transitions']} transitions, this one has "
                         f"{n}: its train/held-out split is unknown")
    return split_holdout(n, holdout["holdout_fraction"], holdout["seed"])


@torch.no_grad()
def evaluate_one_step(model: WorldModel, heldout: Batch, seed: int) -> dict[str, torch.Tensor]:
    """Held-out one-step errors of `model.step` (what PE uses), with a fixed evaluation generator.

    Scalar tensors; `heldout_terminal_recall` is NaN when the held-out data have no terminals.
    """
    generator = torch.Generator(device=model.device).manual_seed(seed)
    pred_next, pred_reward, pred_terminal = model.step(heldout.observations, heldout.actions, generator)
    true_terminal = heldout.dones > 0.5
    return {
        "heldout_next_state_mse": (model.normalize_obs(pred_next) - model.normalize_obs(heldout.next_observations))
        .square().mean(),
        "heldout_reward_mse": (pred_reward - heldout.rewards).square().mean(),
        "heldout_terminal_accuracy": (pred_terminal == true_terminal).float().mean(),
        "heldout_terminal_recall": (pred_terminal & true_terminal).float().sum() / true_terminal.float().sum(),
    }


def convergence(history: list[float], patience: int, min_improvement: float) -> bool:
    """True when the last `patience` evaluations did not beat the earlier best by > min_improvement (relative)."""
    if len(history) <= patience:
        return False
    earlier_best, recent_best = min(history[:-patience]), min(history[-patience:])
    return recent_best > earlier_best * (1.0 - min_improvement)


def train_world_model(dataset, config: WorldModelConfig | None = None, *, out_path: str | Path,
                      device: str | torch.device, seed: int, fit: WorldModelFitConfig | None = None,
                      resume: bool = True, progress: bool = True, **options) -> dict:
    """Fit a world model on `dataset` (an OfflineDataset) with the schedule `fit` (WorldModelFitConfig;
    keyword `options` override its fields, e.g. steps=1000). Holds the lock of `out_path` (<stem>.lock)
    throughout, so a second fit of the same file fails at once. Returns the report that is also
    written to `<out_path stem>.json`.
    """
    return locked_fit(_fit, "world model", dataset, config or WorldModelConfig(), replace(fit or WorldModelFitConfig(), **options),
                      out_path=out_path, device=device, seed=seed, resume=resume, progress=progress)


def _fit(dataset, config: WorldModelConfig, fit: WorldModelFitConfig, *, out_path: str | Path,
         device: torch.device, seed: int, resume: bool, progress: bool) -> dict:
    steps, log_every = fit.steps, fit.log_every
    paths = output_paths(out_path)
    num_transitions = len(dataset.observations)
    train_idx, holdout_idx = split_holdout(num_transitions, fit.holdout_fraction, seed)
    train_arrays = transition_arrays(dataset, train_idx)
    train_data = TensorBuffer.from_arrays(*train_arrays, device=device)
    heldout = Batch.from_dataset(dataset, device, indices=holdout_idx[:fit.eval_size])
    settings = {"config": to_dict(config), "seed": seed, "holdout_fraction": fit.holdout_fraction,
                "eval_size": fit.eval_size, "log_every": log_every, "num_transitions": num_transitions}

    torch.manual_seed(seed)  # parameter initialization
    model = WorldModel.from_arrays(*train_arrays[:4], config=config, device=device)
    model.set_compile(resolve_compile(fit.compile, device, steps))
    model.trained_on = {key: getattr(dataset, key, None) for key in ("env", "dataset", "source")}
    generator = torch.Generator(device=device).manual_seed(seed)
    state = {"step": 0, "history": [], "evaluations": [], "stopped_early": False, "wall_time_s": 0.0}
    sums: dict[str, torch.Tensor] = {}
    checkpoints = FitCheckpoint(paths["checkpoint"], CHECKPOINT_FORMAT, settings, fit="world-model training run",
                                description="world-model training checkpoint",
                                checkpoint_every=fit.checkpoint_every, model_path=paths["model"])
    checkpoint = checkpoints.load(resume, device, required=("model", "optimizer", "generator"))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        model.optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"].to("cpu"))
        state, sums = checkpoint["state"], checkpoint["metric_sums"]
    log = open_log(paths["log"], checkpoints.step)

    def diverged(values: str):
        return checkpoints.diverged(f"world-model fit diverged: {values}",
                                    "e.g. a lower world_model.lr, world_model.grad_clip_norm 1.0")

    def save_checkpoint() -> None:
        checkpoints.save({"model": model.state_dict(), "optimizer": model.optimizer.state_dict(),
                          "generator": generator.get_state(), "state": state, "metric_sums": sums}, state["step"],
                         # whatever the logging cadence, what a rerun resumes from never holds NaN/inf
                         lambda bad: diverged(f"non-finite values at step {state['step']} in {', '.join(bad[:5])}"))

    clock = FitClock(state)
    while state["step"] < steps and not state["stopped_early"]:
        add_metrics(sums, model.update(train_data.sample(config.batch_size, generator), generator=generator))
        state["step"] += 1
        step = state["step"]
        if step % log_every == 0 or step == steps:
            count = (step - 1) % log_every + 1  # updates since the last log row
            values = {name: value / count for name, value in sums.items()}
            values.update(evaluate_one_step(model, heldout, seed + EVAL_SEED_OFFSET))
            recall = values.pop("heldout_terminal_recall")
            try:
                check_finite(values, step)
            except FloatingPointError as err:
                raise diverged(str(err).split(". Check the data")[0]) from None
            sums = {}
            row = {"step": step, **dict(zip(values, torch.stack(list(values.values())).tolist()))}
            row["heldout_terminal_recall"] = recall.item() if torch.isfinite(recall) else None
            row["wall_time_s"] = clock.tick()
            row["steps_per_s"] = clock.steps_per_s(step)
            log.append(row)
            state["history"].append(row["heldout_next_state_mse"])
            state["evaluations"].append(row)
            if progress:
                print(f"world model step {step}/{steps}: loss {row['loss']:.4f}, held-out next-state MSE "
                      f"{row['heldout_next_state_mse']:.4f}, reward MSE {row['heldout_reward_mse']:.4g}, "
                      f"{row['steps_per_s']:.0f} steps/s", flush=True)
            if fit.early_stop and convergence(state["history"], fit.patience, fit.min_improvement):
                state["stopped_early"] = True
        if step % fit.checkpoint_every == 0:
            save_checkpoint()
    clock.tick()
    save_checkpoint()
    # The held-out split travels with the model (world_model_split): runs keep IWU off the held-out rows.
    model.save(paths["model"], metadata={"holdout": {"seed": seed, "holdout_fraction": fit.holdout_fraction,
                                                     "num_transitions": num_transitions}})
    return write_report(paths["report"], _report(state, settings, fit, device, len(train_idx), len(holdout_idx)))


def _report(state: dict, settings: dict, fit: WorldModelFitConfig, device: torch.device, n_train: int,
            n_holdout: int) -> dict:
    evaluations = state["evaluations"]
    patience, min_improvement = fit.patience, fit.min_improvement
    picks = sorted(set(np.linspace(0, len(evaluations) - 1, num=min(5, len(evaluations))).round().astype(int)))
    keys = ("step", "heldout_next_state_mse", "heldout_reward_mse", "heldout_terminal_accuracy",
            "heldout_terminal_recall", "loss")
    return {
        "steps_done": state["step"], "steps_requested": fit.steps, "stopped_early": state["stopped_early"],
        "converged": convergence(state["history"], patience, min_improvement),
        "convergence_rule": f"best held-out next-state MSE of the last {patience} evaluations is not more "
                            f"than {min_improvement:.0%} below the best before them"
                            + (" (early stop on)" if fit.early_stop else " (judged only; early stop off)"),
        "final": {key: evaluations[-1].get(key) for key in keys} if evaluations else None,
        "best_heldout_next_state_mse": min(state["history"]) if state["history"] else None,
        "intermediate": [{key: evaluations[i].get(key) for key in keys} for i in picks],
        "train_transitions": n_train, "heldout_transitions": n_holdout,
        "eval_transitions": min(settings["eval_size"], n_holdout),
        "wall_time_s": state["wall_time_s"], "steps_per_s": overall_steps_per_s(state),
        "device": str(device), **{key: settings[key] for key in ("seed", "holdout_fraction", "config")},
    }
