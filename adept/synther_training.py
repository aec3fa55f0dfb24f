"""Fit of SynthER's transition diffusion model (adept.synther) on D, as SynthER's Trainer does it.

`steps` AdamW steps (SynthER: 100,000) on batches of SynthER's size (1024, or 256 for datasets of fewer
than 800,000 transitions) drawn uniformly with replacement, gradient norm clipped at 1, learning rate
annealed to 0 on a cosine over the fit, and an EMA copy of the model (ema_pytorch's schedule,
adept.synther.ema_decay_at), which is what the saved model holds and what samples.

Outputs next to `out_path` (e.g. synther.pt): the EMA model, `.csv` (training log), `.json` (report,
written last, with a check of samples against the data) and `.ckpt` (resume state, every
`checkpoint_every` steps and at the end). Re-running the same call after an interruption resumes from the
last checkpoint and gives the same result as an uninterrupted run; a larger `steps` is another fit (the
cosine schedule depends on it), so it starts over unless the checkpoint's settings match.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from adept.config import require, to_dict
from adept.model_fit import (FitCheckpoint, FitClock, add_metrics, locked_fit, open_log, output_paths,
                             overall_steps_per_s, write_report)
from adept.synther import SyntherConfig, TransitionDiffusion, ema_decay_at, transition_columns

CHECKPOINT_FORMAT = "adept-synther-training/1"
CHECK_SEED_OFFSET = 1_000_003  # the sample check draws from its own generator, never the training one

__all__ = ["SyntherFitConfig", "SyntherFitSettings", "fit_synther", "learning_rate", "output_paths", "sample_check"]


@dataclass
class SyntherFitConfig:
    """The fit's schedule: the `synther_training` section of `adept synther --config`."""

    steps: int = 100_000          # gradient steps (SynthER: 100,000)
    log_every: int = 1000
    checkpoint_every: int = 10_000
    check_samples: int = 10_000   # samples compared with the data in the report (0: no check)
    sample_steps: int = 128       # sampler steps of the check (SynthER: 128)

    def validate(self) -> None:
        require(min(self.steps, self.log_every, self.checkpoint_every) >= 1 and self.check_samples >= 0
                and self.sample_steps >= 2,
                f"steps, log_every and checkpoint_every must be >= 1, check_samples >= 0 and sample_steps >= 2, got "
                f"{self.steps}, {self.log_every}, {self.checkpoint_every}, {self.check_samples}, {self.sample_steps}")


@dataclass
class SyntherFitSettings:
    """Everything `adept synther` takes from --config / --set: the model and the fit's schedule."""

    synther: SyntherConfig = field(default_factory=SyntherConfig)
    synther_training: SyntherFitConfig = field(default_factory=SyntherFitConfig)


def learning_rate(step: int, steps: int, config: SyntherConfig) -> float:
    """The learning rate of update `step` (0-based): cosine annealing from lr to 0 over `steps` (CosineAnnealingLR)."""
    if config.lr_schedule == "constant":
        return config.lr
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / steps))


def _optimizer(model: TransitionDiffusion, config: SyntherConfig) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm gains are never decayed (SynthER's parameter groups)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=config.adam_betas)


@torch.no_grad()
def sample_check(model: TransitionDiffusion, columns: torch.Tensor, count: int, steps: int, seed: int) -> dict:
    """Samples against the data in normalized units: mean |mean| and mean std over dimensions (0 and 1 for a
    perfect model), the terminal and mean reward of both."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    samples = model.sample_normalized(count, steps, generator)
    continuous = slice(None, -1) if model.config.model_terminals else slice(None)  # the terminal flag is not z-scored
    reward = model.obs_dim + model.act_dim
    report = {"samples": count, "sample_steps": steps,
              "mean_abs_z": samples[:, continuous].mean(dim=0).abs().mean().item(),
              "std_z": samples[:, continuous].std(dim=0).mean().item(),
              "reward_mean": model.unnormalize(samples)[:, reward].mean().item(),
              "data_reward_mean": columns[:, reward].mean().item()}
    if model.config.model_terminals:
        report.update(terminal_rate=(samples[:, -1] > 0.5).float().mean().item(),
                      data_terminal_rate=columns[:, -1].mean().item())
    return report


def fit_synther(dataset, config: SyntherConfig | None = None, *, out_path: str | Path, device: str | torch.device,
                seed: int, fit: SyntherFitConfig | None = None, resume: bool = True, progress: bool = True,
                **options) -> dict:
    """Fit SynthER's model on `dataset` (an OfflineDataset) with the schedule `fit` (SyntherFitConfig; keyword
    `options` override its fields, e.g. steps=1000). Holds the lock of `out_path` throughout. Returns the
    report also written to `<out_path stem>.json`."""
    return locked_fit(_fit, "SynthER model", dataset, config or SyntherConfig(), replace(fit or SyntherFitConfig(), **options),
                      out_path=out_path, device=device, seed=seed, resume=resume, progress=progress)


def _fit(dataset, config: SyntherConfig, fit: SyntherFitConfig, *, out_path: str | Path, device: torch.device,
         seed: int, resume: bool, progress: bool) -> dict:
    steps, log_every = fit.steps, fit.log_every
    paths = output_paths(out_path)
    arrays = transition_columns(dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations,
                                dataset.terminals, config.model_terminals)
    columns = torch.as_tensor(arrays, device=device)
    n = len(arrays)
    batch_size = config.fit_batch_size(n)
    settings = {"config": to_dict(config), "seed": seed, "steps": steps, "batch_size": batch_size,
                "log_every": log_every, "num_transitions": n, "env": dataset.env}

    with torch.random.fork_rng(devices=[]):  # initialization (and the Fourier frequencies) from the seed alone
        torch.manual_seed(seed)
        model = TransitionDiffusion(dataset.obs_dim, dataset.act_dim, config, device)
    model.set_data_stats(arrays)
    model.env = dataset.env
    model.trained_on = {key: getattr(dataset, key, None) for key in ("env", "dataset", "source")}
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = _optimizer(model, config)
    generator = torch.Generator(device=device).manual_seed(seed)
    state = {"step": 0, "wall_time_s": 0.0, "last": None}
    sums: dict[str, torch.Tensor] = {}
    checkpoints = FitCheckpoint(paths["checkpoint"], CHECKPOINT_FORMAT, settings, fit="SynthER fit",
                                description="SynthER training checkpoint",
                                checkpoint_every=fit.checkpoint_every, model_path=paths["model"])
    checkpoint = checkpoints.load(resume, device, required=("model", "ema", "optimizer", "generator"))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"].to("cpu"))
        state, sums = checkpoint["state"], checkpoint["metric_sums"]
    log = open_log(paths["log"], checkpoints.step)

    def diverged(values: str):
        return checkpoints.diverged(f"SynthER fit diverged at step {state['step']}: {values}", "e.g. a lower synther.lr")

    def save_checkpoint() -> None:
        checkpoints.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                          "generator": generator.get_state(), "state": state, "metric_sums": sums}, state["step"],
                         lambda bad: diverged(f"non-finite values in {', '.join(bad[:5])}"))

    parameters = [p for p in model.parameters() if p.requires_grad]
    clock = FitClock(state)
    while state["step"] < steps:
        update = state["step"]
        lr = learning_rate(update, steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = torch.randint(0, n, (batch_size,), device=device, generator=generator)
        loss = model.loss(columns[rows], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip_norm)
        optimizer.step()
        decay = ema_decay_at(update, config)
        if decay is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
        add_metrics(sums, {"loss": loss.detach(), "grad_norm": grad_norm.detach()})
        state["step"] += 1
        step = state["step"]
        if step % log_every == 0 or step == steps:
            count = (step - 1) % log_every + 1
            values = dict(zip(sums, (torch.stack(list(sums.values())) / count).tolist()))  # one host sync
            sums = {}
            if not all(math.isfinite(v) for v in values.values()):
                raise diverged(", ".join(f"{k}={v}" for k, v in values.items()))
            row = {"step": step, **values, "lr": lr, "wall_time_s": clock.tick(),
                   "steps_per_s": clock.steps_per_s(step)}
            log.append(row)
            state["last"] = row
            if progress:
                print(f"synther step {step}/{steps}: loss {row['loss']:.4f}, lr {lr:.2e}, "
                      f"{row['steps_per_s']:.0f} steps/s", flush=True)
        if step % fit.checkpoint_every == 0:
            save_checkpoint()
    clock.tick()
    save_checkpoint()
    ema.env, ema.trained_on = model.env, model.trained_on
    check = sample_check(ema, columns, min(fit.check_samples, n), fit.sample_steps, seed + CHECK_SEED_OFFSET) \
        if fit.check_samples > 0 else None
    ema.save(paths["model"], metadata={"steps": steps, "seed": seed, "num_transitions": n})
    report = {"steps_done": state["step"], "steps_requested": steps, "batch_size": batch_size,
              "final": state["last"], "sample_check": check, "num_transitions": n, "seed": seed, "env": dataset.env,
              "wall_time_s": state["wall_time_s"], "steps_per_s": overall_steps_per_s(state),
              "parameters": sum(p.numel() for p in parameters), "device": str(device), "config": to_dict(config)}
    return write_report(paths["report"], report)
