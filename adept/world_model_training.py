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
import time
from pathlib import Path

import numpy as np
import torch

from adept.config import to_dict
from adept.data.dataset import split_holdout
from adept.errors import DivergenceError
from adept.locks import output_file_lock
from adept.outputs import CsvLog, atomic_torch_save, atomic_write_text, load_torch_file, non_finite_entries
from adept.world_model import WorldModel, WorldModelConfig, check_finite
from baselines.compile import resolve_compile
from baselines.replay import Batch, TensorBuffer

CHECKPOINT_FORMAT = "adept-world-model-training/1"
EVAL_SEED_OFFSET = 1_000_003  # evaluation noise comes from its own generator, never the training one


def output_paths(out_path: str | Path) -> dict[str, Path]:
    out_path = Path(out_path)
    return {"model": out_path, "log": out_path.with_suffix(".csv"), "report": out_path.with_suffix(".json"),
            "checkpoint": out_path.with_suffix(".ckpt")}


def _transitions(dataset, indices: np.ndarray) -> list[np.ndarray]:
    """The Batch fields (dones = terminals) of the given transitions."""
    return [np.asarray(getattr(dataset, name)[indices], np.float32)
            for name in ("observations", "actions", "rewards", "next_observations", "terminals")]


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


def train_world_model(dataset, config: WorldModelConfig | None = None, *, out_path: str | Path, **options) -> dict:
    """Fit a world model on `dataset` (an OfflineDataset) for `steps` Adam steps of batch config.batch_size.

    Options (keywords): steps, device, seed (required); log_every, checkpoint_every, holdout_fraction,
    eval_size, early_stop, patience, min_improvement, resume, progress, compile ("off" | "on" | "auto",
    baselines/compile.py: the Adam step and the sampler's denoiser). Holds the lock of `out_path`
    (<stem>.lock) throughout, so a second fit of the same file fails at once. Returns the report that
    is also written to `<out_path stem>.json`.
    """
    with output_file_lock(out_path, f"world model {out_path}",
                     "wait for that fit to finish (or stop it), or choose another --out"):
        return _fit(dataset, config, out_path=out_path, **options)


def _fit(dataset, config: WorldModelConfig | None = None, *, steps: int, device: str | torch.device,
         seed: int, out_path: str | Path, log_every: int = 1000, checkpoint_every: int = 10_000,
         holdout_fraction: float = 0.05, eval_size: int = 2048, early_stop: bool = False,
         patience: int = 10, min_improvement: float = 0.01, resume: bool = True, progress: bool = True,
         compile: str | bool = "auto") -> dict:
    config = config or WorldModelConfig()
    config.validate()
    if steps < 1 or log_every < 1 or checkpoint_every < 1 or patience < 1 or eval_size < 1:
        raise ValueError(f"steps, log_every, checkpoint_every, patience and eval_size must be >= 1, got "
                         f"{steps}, {log_every}, {checkpoint_every}, {patience}, {eval_size}")
    device = torch.device(device)
    paths = output_paths(out_path)
    train_idx, holdout_idx = split_holdout(len(dataset.observations), holdout_fraction, seed)
    train_arrays = _transitions(dataset, train_idx)
    train_data = TensorBuffer.from_arrays(*train_arrays, device=device)
    heldout = Batch(*(torch.as_tensor(x, device=device) for x in _transitions(dataset, holdout_idx[:eval_size])))
    settings = {"config": to_dict(config), "seed": seed, "holdout_fraction": holdout_fraction,
                "eval_size": eval_size, "log_every": log_every, "num_transitions": len(dataset.observations)}

    torch.manual_seed(seed)  # parameter initialization
    model = WorldModel.from_arrays(*train_arrays[:4], config=config, device=device)
    model.set_compile(resolve_compile(compile, device, steps))
    model.trained_on = {key: getattr(dataset, key, None) for key in ("env", "dataset", "source")}
    generator = torch.Generator(device=device).manual_seed(seed)
    log = CsvLog(paths["log"])
    state = {"step": 0, "history": [], "evaluations": [], "stopped_early": False, "wall_time_s": 0.0}
    sums: dict[str, torch.Tensor] = {}
    checkpoint_step = None  # the step of the checkpoint on disk, if any
    if resume and paths["checkpoint"].is_file():
        checkpoint = load_torch_file(paths["checkpoint"], "world-model training checkpoint",
                                     "delete it (or pass --no-resume) to start the fit over", fmt=CHECKPOINT_FORMAT,
                                     required=("settings", "model", "optimizer", "generator", "state"),
                                     map_location=device)
        checkpoint_step = checkpoint["state"]["step"]
        if checkpoint["settings"] != settings:
            raise ValueError(f"{paths['checkpoint']} was written by a different world-model training run "
                             f"(settings differ); delete it, choose another --out, or pass --no-resume")
        model.load_state_dict(checkpoint["model"])
        model.optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"].to("cpu"))
        state, sums = checkpoint["state"], checkpoint["metric_sums"]
        log.truncate_after(state["step"])
    else:
        log.reset()

    def diverged(step: int, values: str) -> DivergenceError:
        kept = (f"the last good checkpoint (step {checkpoint_step}) was kept" if checkpoint_step is not None else
                f"no checkpoint exists yet (the first is written at step {checkpoint_every}), so nothing was kept")
        return DivergenceError(f"world-model fit diverged: {values}",
                               paths["checkpoint"] if checkpoint_step is not None else paths["model"].parent,
                               f"{kept}; the same settings diverge again, so change them (e.g. a lower "
                               f"world_model.lr, world_model.grad_clip_norm 1.0) and rerun with --no-resume")

    def save_checkpoint() -> None:
        nonlocal checkpoint_step
        payload = {"format": CHECKPOINT_FORMAT, "settings": settings, "model": model.state_dict(),
                   "optimizer": model.optimizer.state_dict(), "generator": generator.get_state(),
                   "state": state, "metric_sums": sums}
        # Whatever the logging cadence, a checkpoint (what a rerun resumes from) never holds NaN/inf.
        bad = non_finite_entries(payload)
        if bad:
            raise diverged(state["step"], f"non-finite values at step {state['step']} in {', '.join(bad[:5])}")
        atomic_torch_save(payload, paths["checkpoint"])
        checkpoint_step = state["step"]

    start_step, start_time = state["step"], time.perf_counter()
    elapsed_before = state["wall_time_s"]
    while state["step"] < steps and not state["stopped_early"]:
        metrics = model.update(train_data.sample(config.batch_size, generator), generator=generator)
        for name, value in metrics.items():  # running sums on the device, no host sync
            sums[name] = sums[name] + value if name in sums else value.clone()
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
                raise diverged(step, str(err).split(". Check the data")[0]) from None
            sums = {}
            row = {"step": step, **dict(zip(values, torch.stack(list(values.values())).tolist()))}
            row["heldout_terminal_recall"] = recall.item() if torch.isfinite(recall) else None
            state["wall_time_s"] = elapsed_before + time.perf_counter() - start_time
            row["wall_time_s"] = state["wall_time_s"]
            row["steps_per_s"] = (step - start_step) / max(time.perf_counter() - start_time, 1e-9)
            log.append(row)
            state["history"].append(row["heldout_next_state_mse"])
            state["evaluations"].append(row)
            if progress:
                print(f"world model step {step}/{steps}: loss {row['loss']:.4f}, held-out next-state MSE "
                      f"{row['heldout_next_state_mse']:.4f}, reward MSE {row['heldout_reward_mse']:.4g}, "
                      f"{row['steps_per_s']:.0f} steps/s", flush=True)
            if early_stop and convergence(state["history"], patience, min_improvement):
                state["stopped_early"] = True
        if step % checkpoint_every == 0:
            save_checkpoint()
    state["wall_time_s"] = elapsed_before + time.perf_counter() - start_time
    save_checkpoint()
    model.save(paths["model"])
    report = _report(state, settings, steps, patience, min_improvement, early_stop, device,
                     len(train_idx), len(holdout_idx))
    atomic_write_text(paths["report"], json.dumps(report, indent=2) + "\n")
    return report


def _report(state: dict, settings: dict, steps: int, patience: int, min_improvement: float, early_stop: bool,
            device: torch.device, n_train: int, n_holdout: int) -> dict:
    evaluations = state["evaluations"]
    picks = sorted(set(np.linspace(0, len(evaluations) - 1, num=min(5, len(evaluations))).round().astype(int)))
    keys = ("step", "heldout_next_state_mse", "heldout_reward_mse", "heldout_terminal_accuracy",
            "heldout_terminal_recall", "loss")
    return {
        "steps_done": state["step"], "steps_requested": steps, "stopped_early": state["stopped_early"],
        "converged": convergence(state["history"], patience, min_improvement),
        "convergence_rule": f"best held-out next-state MSE of the last {patience} evaluations is not more "
                            f"than {min_improvement:.0%} below the best before them"
                            + (" (early stop on)" if early_stop else " (judged only; early stop off)"),
        "final": {key: evaluations[-1].get(key) for key in keys} if evaluations else None,
        "best_heldout_next_state_mse": min(state["history"]) if state["history"] else None,
        "intermediate": [{key: evaluations[i].get(key) for key in keys} for i in picks],
        "train_transitions": n_train, "heldout_transitions": n_holdout,
        "eval_transitions": min(settings["eval_size"], n_holdout),
        "wall_time_s": state["wall_time_s"],
        "steps_per_s": state["step"] / state["wall_time_s"] if state["wall_time_s"] > 0 else None,
        "device": str(device), **{key: settings[key] for key in ("seed", "holdout_fraction", "config")},
    }
