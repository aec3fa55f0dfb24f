"""Optional experiment trackers, fed the same rows that go to train.csv and eval.csv.

`run.loggers` selects them: `[csv]` (the default), plus `tensorboard` and/or `wandb`. The CSV files
stay the source of truth: the tables and figures read only them and final.json, so a tracker can be
switched on or off without changing any reported number. Each tracker needs its package, installed
with the extra of the same name (`pip install -e ".[tensorboard]"`, `".[wandb]"`).

- TensorBoard: event files in `<run folder>/tensorboard/`, one scalar per CSV column, tagged
  `train/<column>` or `eval/<column>`, at the row's `step`.
- Weights & Biases: a run in `<run folder>/wandb/`, same keys, with `step` as the x-axis. Offline
  unless the environment says otherwise: `WANDB_MODE` if set, else online only when the user has
  logged in (`WANDB_API_KEY`, or the ~/.netrc entry that `wandb login` writes). Offline runs are
  uploaded later with `wandb sync <run folder>/wandb/offline-run-*`.

A resumed run mirrors the CSV files' truncation: TensorBoard hides the events logged after the
checkpoint's step (its `purge_step`); W&B has no such purge, so the rows after the checkpoint appear
twice there (once per attempt), in one W&B run per attempt.
"""
from __future__ import annotations

import math
import netrc
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence
from urllib.parse import urlparse

from adept.config import ConfigError

LOGGERS = ("csv", "tensorboard", "wandb")
STREAMS = ("train", "eval")  # the CSV file a row belongs to; the tag prefix
WANDB_PROJECT = "adept-repro"  # unless WANDB_PROJECT is set


def check_loggers(names: Sequence[str]) -> None:
    """Raise ConfigError unless `names` is a list of known loggers, without repeats, that includes csv."""
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise ConfigError(f"run.loggers: unknown logger(s) {unknown}; valid loggers are {list(LOGGERS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"run.loggers lists a logger twice: {list(names)}")
    if "csv" not in names:
        raise ConfigError(f"run.loggers must include 'csv' (train.csv / eval.csv are what the tables read), "
                          f"got {list(names)}; e.g. [csv, tensorboard]")


def _missing(name: str, package: str) -> ConfigError:
    return ConfigError(f"run.loggers includes {name!r} but the {package} package is not installed; install it "
                       f"with: pip install -e \".[{name}]\"")


def _scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric columns except `step` (empty cells and text are not scalars)."""
    return {key: float(value) for key, value in row.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


class Tracker(Protocol):
    def log(self, stream: str, row: Mapping[str, Any]) -> None: ...
    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, directory: Path, resume_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        if resume_step == 0 and directory.exists():
            shutil.rmtree(directory)  # a fresh start: the events of an earlier attempt would mix in
        # Resuming: events after the checkpoint's step are hidden, as the CSV rows after it are dropped.
        self.writer = SummaryWriter(str(directory), purge_step=resume_step + 1 if resume_step else None)

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        step = int(row["step"])
        for key, value in _scalars(row).items():
            self.writer.add_scalar(f"{stream}/{key}", value, global_step=step)
        self.writer.flush()  # rows come at the log/eval cadence only; a crash loses nothing logged

    def close(self) -> None:
        self.writer.close()


def wandb_mode() -> str:
    """WANDB_MODE if set; "online" if the user has logged in to W&B; otherwise "offline"."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbTracker:
    def __init__(self, directory: Path, name: str, group: str, config: Mapping[str, Any]):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb") from None
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=name, group=group,
                              dir=str(directory), config=dict(config), mode=wandb_mode())
        self.run.define_metric("step")
        for stream in STREAMS:
            self.run.define_metric(f"{stream}/*", step_metric="step")

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        self.run.log({"step": int(row["step"]), **{f"{stream}/{k}": v for k, v in _scalars(row).items()}})

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers of one run; `log(stream, row)` sends a train.csv or eval.csv row to all of them."""

    def __init__(self, trackers: Sequence[Tracker] = ()):
        self.trackers = list(trackers)

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        for tracker in self.trackers:
            tracker.log(stream, row)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def open_trackers(names: Sequence[str], out_dir: str | os.PathLike, *, resume_step: int = 0, name: str = "",
                  group: str = "", config: Mapping[str, Any] | None = None) -> Trackers:
    """The trackers named in `names` besides csv (which the runner writes itself), for the run in `out_dir`.

    `resume_step`: the step the run resumes from (0 for a fresh start); `name`, `group`, `config`:
    the W&B run's name, group (the method) and config.
    """
    check_loggers(names)
    out_dir = Path(out_dir)
    trackers: list[Tracker] = []
    try:
        if "tensorboard" in names:
            trackers.append(TensorBoardTracker(out_dir / "tensorboard", resume_step))
        if "wandb" in names:
            trackers.append(WandbTracker(out_dir, name, group, config or {}))
    except BaseException:
        Trackers(trackers).close()
        raise
    return Trackers(trackers)
