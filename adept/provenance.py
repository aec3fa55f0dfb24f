"""Where a result came from, and how to replay its randomness.

One room for what every output records about its making (package versions, the git commit, the
device, sha256 of the files it read) and for the process-wide random state a checkpoint saves and
restores. Runs (final.json), model fits (their reports), generated datasets (metadata/) and the
benchmarks all stamp themselves with these functions, so the fields mean the same everywhere.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda if available else cpu; a CUDA device on a machine without CUDA is a ValueError."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """"NVIDIA H100 80GB HBM3" or "cpu (x86_64, 2 cores, 1 threads)": what a speed figure was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def git_commit() -> str:
    """Short commit of the harness's checkout, "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# The packages whose versions decide a result: the simulator (gymnasium, mujoco) and the numerics.
RESULT_PACKAGES = ("torch", "numpy", "gymnasium", "mujoco")


def versions(*extra_packages: str, commit: bool = True) -> dict[str, str]:
    """{"python", "torch", "numpy", "gymnasium", "mujoco", *extra_packages, "commit"}. Files that must
    be a pure function of their inputs (generated datasets) pass commit=False, so that regenerating
    one at another commit gives the same bytes."""
    stamp = {"python": platform.python_version()}
    for package in (*RESULT_PACKAGES, *extra_packages):
        stamp[package] = str(importlib.import_module(package).__version__)  # torch gives a TorchVersion
    if commit:
        stamp["commit"] = git_commit()
    return stamp


def machine_summary() -> str:
    """One line for files shipped with the package: the machine and the simulator versions."""
    stamp = versions(commit=False)
    return (f"{platform.machine()} cpu, {os.cpu_count()} cores, torch {stamp['torch']}, "
            f"gymnasium {stamp['gymnasium']}, mujoco {stamp['mujoco']}")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- random state

def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def stream_seed(seed: int, stream: int) -> int:
    """A seed for `stream` of run `seed`, independent of the run seed's own stream and of other streams."""
    return int(np.random.SeedSequence(seed, spawn_key=(stream,)).generate_state(1, np.uint64)[0])


def global_rng_state(device: torch.device) -> dict:
    """torch's and numpy's global random state (and the device's, on CUDA), as a checkpoint keeps it."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: dict, device: torch.device) -> None:
    """Restore `global_rng_state`. Its tensors must be CPU ByteTensors (load checkpoints with
    map_location="cpu"): torch.set_rng_state and torch.cuda.set_rng_state refuse others."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
