"""Fit of the dynamics ensemble (adept.ensemble) on D, trained to held-out convergence as MOPO/MBPO do.

A held-out set of min(holdout_fraction * N, max_holdout) transitions is split off (MBPO: 20%, at
most 1000 in the MOPO reproductions). Every member trains on its own bootstrap resample of the
rest (drawn once from the seed), all members in one batched step. Every `eval_every` steps (default:
one pass over the training rows, an "epoch" of the MBPO code) each member's held-out MSE is
measured; a member whose MSE improved by more than `min_improvement` (relative) on its best keeps a
snapshot of its weights. Training stops when no member has improved for `patience` evaluations
(MBPO: 5 epochs, 1%) or at `max_steps`. Each member is then restored to its best snapshot and the
`num_elites` members with the lowest held-out MSE become the elites.

Outputs next to `out_path` (e.g. ensemble.pt): the ensemble (with its held-out split in its
metadata, so runs measure the Theorem 4.4 errors on rows it never saw), `.csv` (one row per
evaluation), `.json` (report, written last) and `.ckpt` (resume state). Re-running the same call
after an interruption resumes from the last checkpoint and gives the same result as an uninterrupted run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from adept.config import require, to_dict
from adept.data.dataset import split_holdout
from adept.ensemble import EnsembleConfig, EnsembleDynamics
from adept.model_fit import (FitCheckpoint, FitClock, add_metrics, locked_fit, open_log, output_paths,
                             overall_steps_per_s, write_report)
from baselines.replay import Batch

CHECKPOINT_FORMAT = "adept-ensemble-training/1"
BOOTSTRAP_SEED_OFFSET = 7_919  # the bootstrap resamples have their own generator, never the training one

__all__ = ["EnsembleFitConfig", "EnsembleFitSettings", "fit_ensemble", "holdout_split", "output_paths"]


@dataclass
class EnsembleFitConfig:
    """The fit's schedule: the `ensemble_training` section of `adept ensemble --config`."""

    max_steps: int = 1_000_000      # gradient steps at most
    eval_every: int | None = None   # steps between held-out evaluations (None: one pass over the training rows)
    patience: int = 5               # evaluations without a member improving before it stops (MBPO: 5)
    min_improvement: float = 0.01   # relative held-out improvement that counts (MBPO: 0.01)
    holdout_fraction: float = 0.2
    max_holdout: int = 1000         # held-out transitions at most
    checkpoint_every: int = 10_000

    def validate(self) -> None:
        for key in ("max_steps", "patience", "checkpoint_every"):
            require(getattr(self, key) >= 1, f"{key} must be >= 1, got {getattr(self, key)}")
        require(self.eval_every is None or self.eval_every >= 1,
                f"eval_every must be >= 1 (or omitted: one pass over the training rows), got {self.eval_every}")
        require(self.min_improvement >= 0, f"min_improvement must be >= 0, got {self.min_improvement}")
        require(0.0 < self.holdout_fraction < 1.0 and self.max_holdout >= 1,
                f"holdout_fraction must be in (0, 1) and max_holdout >= 1, got {self.holdout_fraction}, "
                f"{self.max_holdout}")


@dataclass
class EnsembleFitSettings:
    """Everything `adept ensemble` takes from --config / --set: the ensemble and the fit's schedule."""

    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    ensemble_training: EnsembleFitConfig = field(default_factory=EnsembleFitConfig)


def holdout_split(num_transitions: int, holdout_fraction: float, max_holdout: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(training rows, held-out rows, the fraction that split_holdout gets) of the fit."""
    if not 0.0 < holdout_fraction < 1.0 or max_holdout < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1) and max_holdout >= 1, got {holdout_fraction}, "
                         f"{max_holdout}")
    count = min(max(1, round(num_transitions * holdout_fraction)), max_holdout, max(num_transitions - 1, 1))
    fraction = count / num_transitions
    train_rows, heldout_rows = split_holdout(num_transitions, fraction, seed)
    return train_rows, heldout_rows, fraction


def _improves(new: float, best: float, min_improvement: float) -> bool:
    """MBPO's rule: the held-out MSE fell by more than `min_improvement` of the best so far (any finite first value)."""
    return new < best and (math.isinf(best) or best - new > min_improvement * best)


def fit_ensemble(dataset, config: EnsembleConfig | None = None, *, out_path: str | Path,
                 device: str | torch.device, seed: int, fit: EnsembleFitConfig | None = None,
                 resume: bool = True, progress: bool = True, **options) -> dict:
    """Fit an ensemble on `dataset` (an OfflineDataset) with the schedule `fit` (EnsembleFitConfig; keyword
    `options` override its fields, e.g. max_steps=1000), holding the lock of `out_path` throughout (one
    writer per model file, as every other fit); returns the report also written to `<stem>.json`."""
    return locked_fit(_fit, "dynamics ensemble", dataset, config or EnsembleConfig(), replace(fit or EnsembleFitConfig(), **options),
                      out_path=out_path, device=device, seed=seed, resume=resume, progress=progress)


def _fit(dataset, config: EnsembleConfig, fit: EnsembleFitConfig, *, out_path: str | Path,
         device: torch.device, seed: int, resume: bool, progress: bool) -> dict:
    max_steps, patience, min_improvement = fit.max_steps, fit.patience, fit.min_improvement
    paths = output_paths(out_path)
    n = len(dataset.observations)
    train_rows, heldout_rows, fraction = holdout_split(n, fit.holdout_fraction, fit.max_holdout, seed)
    obs, act, rew, next_obs, _ = Batch.from_dataset(dataset, device, indices=train_rows)
    heldout = Batch.from_dataset(dataset, device, indices=heldout_rows)[:4]
    n_train, members = len(train_rows), config.num_members
    eval_every = fit.eval_every or math.ceil(n_train / config.batch_size)
    settings = {"config": to_dict(config), "seed": seed, "env": dataset.env, "num_transitions": n,
                "holdout_fraction": fraction, "eval_every": eval_every, "patience": patience,
                "min_improvement": min_improvement}

    with torch.random.fork_rng(devices=[]):  # initialization from the seed alone
        torch.manual_seed(seed)
        model = EnsembleDynamics(dataset.observations.shape[1], dataset.actions.shape[1], dataset.env, config, device)
    model.set_data_stats(*(np.asarray(getattr(dataset, k)[train_rows]) for k in ("observations", "actions", "rewards")))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator(device=device).manual_seed(seed)
    # Member i trains on rows resample[i] (a bootstrap of the training rows), a pure function of the seed.
    resample = (torch.randint(0, n_train, (members, n_train), device=device,
                              generator=torch.Generator(device=device).manual_seed(seed + BOOTSTRAP_SEED_OFFSET))
                if config.bootstrap else None)
    member_params = [p for layer in model.layers for p in (layer.weight, layer.bias)]  # leading dim = member
    best = [p.detach().clone() for p in member_params]
    state = {"step": 0, "best_mse": [math.inf] * members, "since_improved": 0, "evaluations": [],
             "stopped_early": False, "wall_time_s": 0.0}
    sums: dict[str, torch.Tensor] = {}
    checkpoints = FitCheckpoint(paths["checkpoint"], CHECKPOINT_FORMAT, settings, fit="ensemble fit",
                                description="dynamics-ensemble training checkpoint",
                                checkpoint_every=fit.checkpoint_every, model_path=paths["model"])
    checkpoint = checkpoints.load(resume, device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"].cpu())
        for target, saved in zip(best, checkpoint["best"]):
            target.copy_(saved)
        state, sums = checkpoint["state"], checkpoint["metric_sums"]
    log = open_log(paths["log"], checkpoints.step)

    def save_checkpoint() -> None:  # no NaN check: the loop below stops at the first non-finite value
        checkpoints.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "generator": generator.get_state(), "best": best, "state": state, "metric_sums": sums},
                         state["step"])

    clock = FitClock(state)
    while state["step"] < max_steps and not state["stopped_early"]:
        rows = torch.randint(0, n_train, (members, config.batch_size), device=device, generator=generator)
        if resample is not None:
            rows = resample.gather(1, rows)
        loss, metrics = model.fit_loss(obs[rows], act[rows], rew[rows], next_obs[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        add_metrics(sums, metrics)
        state["step"] += 1
        step = state["step"]
        if step % eval_every == 0 or step == max_steps:
            count = (step - 1) % eval_every + 1
            mse = model.member_mse(*heldout)
            values = torch.cat([torch.stack([v / count for v in sums.values()]), mse]).tolist()  # one host sync
            sums = {}
            train_means = dict(zip(metrics, values[:len(metrics)]))
            heldout_mse = values[len(metrics):]
            if not all(math.isfinite(v) for v in values):
                raise FloatingPointError(
                    f"ensemble fit produced non-finite values at step {step} (training {train_means}, held-out "
                    f"MSE {heldout_mse}); check the data for NaN/inf or lower ensemble.lr. The last checkpoint "
                    f"({paths['checkpoint']}) was kept.")
            improved = [i for i in range(members) if _improves(heldout_mse[i], state["best_mse"][i], min_improvement)]
            with torch.no_grad():
                for i in improved:
                    state["best_mse"][i] = heldout_mse[i]
                    for target, param in zip(best, member_params):
                        target[i].copy_(param[i])
            state["since_improved"] = 0 if improved else state["since_improved"] + 1
            clock.tick()
            row = {"step": step, **{f"train_{k}": v for k, v in train_means.items()},
                   **{f"heldout_mse_{i}": v for i, v in enumerate(heldout_mse)},
                   "heldout_mse_best_elites": float(np.mean(sorted(state["best_mse"])[:config.num_elites])),
                   "members_improved": len(improved), "wall_time_s": state["wall_time_s"],
                   "steps_per_s": clock.steps_per_s(step)}
            log.append(row)
            state["evaluations"].append(row)
            if progress:
                print(f"ensemble step {step}: train NLL {train_means['nll']:.4f}, held-out MSE of the best "
                      f"{config.num_elites} {row['heldout_mse_best_elites']:.4g}, {len(improved)} member(s) "
                      f"improved, {row['steps_per_s']:.0f} steps/s", flush=True)
            if state["since_improved"] >= patience:
                state["stopped_early"] = True
        if step % fit.checkpoint_every == 0:
            save_checkpoint()
    clock.tick()
    save_checkpoint()

    with torch.no_grad():  # every member at its best held-out snapshot
        for target, param in zip(best, member_params):
            param.copy_(target)
    best_mse = state["best_mse"]
    elites = sorted(sorted(range(members), key=lambda i: best_mse[i])[:config.num_elites])
    model.set_elites(elites)
    report = {
        "steps_done": state["step"], "max_steps": max_steps, "evaluations": len(state["evaluations"]),
        "stopped_early": state["stopped_early"], "converged": state["stopped_early"],
        "convergence_rule": f"no member's held-out MSE improved by more than {min_improvement:.0%} of its best "
                            f"for {patience} evaluations (every {eval_every} steps)",
        "best_heldout_mse": best_mse, "elites": elites,
        "elite_heldout_mse_mean": float(np.mean([best_mse[i] for i in elites])),
        "final": state["evaluations"][-1] if state["evaluations"] else None,
        "train_transitions": n_train, "heldout_transitions": len(heldout_rows), "num_transitions": n,
        "holdout_fraction": fraction, "seed": seed, "env": dataset.env, "wall_time_s": state["wall_time_s"],
        "steps_per_s": overall_steps_per_s(state),
        "device": str(device), "config": to_dict(config),
    }
    model.save(paths["model"], metadata={"holdout": {"seed": seed, "holdout_fraction": fraction,
                                                     "num_transitions": n},
                                         "elite_heldout_mse_mean": report["elite_heldout_mse_mean"]})
    return write_report(paths["report"], report)
