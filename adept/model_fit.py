"""What the resumable model fits share (world model, dynamics ensemble, SynthER): their files, the
lock, the resume checkpoint, the running metric sums, the clock and the report.

Every fit writes next to `out_path` (e.g. model.pt): the model itself, `<stem>.csv` (log),
`<stem>.json` (report, written last) and `<stem>.ckpt` (resume state), and holds `<stem>.lock`
throughout. A fit reads its checkpoint back only if the checkpoint's `settings` equal its own,
so rerunning the same call resumes it and any other call refuses the file. The algorithm of each
fit (its loop, its evaluation, its report) stays in its own module.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from adept.errors import DivergenceError
from adept.locks import output_file_lock
from adept.outputs import CsvLog, atomic_torch_save, atomic_write_text, load_torch_file, non_finite_entries


def output_paths(out_path: str | Path) -> dict[str, Path]:
    out_path = Path(out_path)
    return {"model": out_path, "log": out_path.with_suffix(".csv"), "report": out_path.with_suffix(".json"),
            "checkpoint": out_path.with_suffix(".ckpt")}


@contextmanager
def fit_lock(out_path: str | Path, what: str) -> Iterator[None]:
    """One writer per model file: a second fit of `out_path` fails at once."""
    with output_file_lock(out_path, f"{what} {out_path}",
                          "wait for that fit to finish (or stop it), or choose another --out"):
        yield


def locked_fit(fit_function: Callable[..., dict], what: str, dataset, config, fit, *, out_path: str | Path,
               device: str | torch.device, seed: int, resume: bool, progress: bool) -> dict:
    """Validate the model's `config` and the fit's schedule `fit`, then run
    `fit_function(dataset, config, fit, ...)` holding the lock of `out_path` (one writer per model file)."""
    config.validate()
    fit.validate()
    with fit_lock(out_path, what):
        return fit_function(dataset, config, fit, out_path=out_path, device=torch.device(device), seed=seed,
                            resume=resume, progress=progress)


class FitCheckpoint:
    """The resume state of one fit at `path`: read back only by a fit with the same `settings`, written
    atomically (and, where the fit asks, never holding NaN/inf: a rerun resumes from a good state).

    `fit` names the fit in messages ("world-model training run"), `description` the file
    ("world-model training checkpoint"); `step` is the step of the checkpoint on disk (None: none yet).
    """

    def __init__(self, path: Path, fmt: str, settings: dict, *, fit: str, description: str,
                 checkpoint_every: int, model_path: Path):
        self.path, self.fmt, self.settings = Path(path), fmt, settings
        self.fit, self.description = fit, description
        self.checkpoint_every, self.model_path = checkpoint_every, Path(model_path)
        self.step: int | None = None

    def load(self, resume: bool, map_location: torch.device, required: tuple[str, ...] = ()) -> dict | None:
        """The saved payload (None without a checkpoint or with resume=False); ValueError if another fit wrote it."""
        if not (resume and self.path.is_file()):
            return None
        checkpoint = load_torch_file(self.path, self.description,
                                     "delete it (or pass --no-resume) to start the fit over", fmt=self.fmt,
                                     required=("settings", "state", *required),
                                     map_location=map_location)
        if checkpoint["settings"] != self.settings:
            raise ValueError(f"{self.path} was written by a different {self.fit} (settings differ); "
                             f"delete it, choose another --out, or pass --no-resume")
        self.step = checkpoint["state"]["step"]
        return checkpoint

    def save(self, payload: dict, step: int,
             refuse_non_finite: Callable[[list[str]], Exception] | None = None) -> None:
        """Write `payload` (+ format and settings) as the state of `step`. With `refuse_non_finite`, a
        payload holding NaN/inf is not written: the error it makes of the bad entries is raised."""
        payload = {"format": self.fmt, "settings": self.settings, **payload}
        if refuse_non_finite is not None:
            bad = non_finite_entries(payload)
            if bad:
                raise refuse_non_finite(bad)
        atomic_torch_save(payload, self.path)
        self.step = step

    def diverged(self, what: str, change: str = "") -> DivergenceError:
        """The one-line error of a diverged fit: `what` went wrong; `change` suggests other settings."""
        kept = (f"the last good checkpoint (step {self.step}) was kept" if self.step is not None else
                f"no checkpoint exists yet (the first is written at step {self.checkpoint_every}), so nothing was kept")
        return DivergenceError(what, self.path if self.step is not None else self.model_path.parent,
                               f"{kept}; the same settings diverge again, so change them"
                               f"{f' ({change})' if change else ''} and rerun with --no-resume")


def open_log(path: Path, resumed_step: int | None) -> CsvLog:
    """The fit's CSV log: its rows after `resumed_step` dropped on resume, emptied on a fresh fit."""
    log = CsvLog(path)
    if resumed_step is None:
        log.reset()
    else:
        log.truncate_after(resumed_step)
    return log


def add_metrics(sums: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
    """Running sums of one step's scalar metrics, on the device (no host sync)."""
    for name, value in metrics.items():
        sums[name] = sums[name] + value if name in sums else value.clone()


class FitClock:
    """Wall time of a fit across resumes: `state["wall_time_s"]` holds the time before this process."""

    def __init__(self, state: dict):
        self.state, self.start_step = state, state["step"]
        self.elapsed_before, self.start = state["wall_time_s"], time.perf_counter()

    def tick(self) -> float:
        """Update and return state["wall_time_s"]."""
        self.state["wall_time_s"] = self.elapsed_before + time.perf_counter() - self.start
        return self.state["wall_time_s"]

    def steps_per_s(self, step: int) -> float:
        """Steps per second of this process so far."""
        return (step - self.start_step) / max(time.perf_counter() - self.start, 1e-9)


def overall_steps_per_s(state: dict) -> float | None:
    return state["step"] / state["wall_time_s"] if state["wall_time_s"] > 0 else None


def write_report(path: Path, report: dict) -> dict:
    """The fit's report, written atomically (last: it marks a finished fit); returned."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report
