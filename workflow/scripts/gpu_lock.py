"""Run a command on GPUs no other job is using: `gpu_lock.py --gpus 1 -- python -m adept train ...`.

Snakemake counts GPUs (`--resources gpu=N`) but does not say *which* GPU a job gets, so every job
would default to GPU 0. This wrapper takes an exclusive lock (fcntl.flock) on
`<lock dir>/gpu<index>.lock` for each GPU it hands out, exports CUDA_VISIBLE_DEVICES and then
replaces itself with the command (exec). The command inherits the lock and the kernel releases it
when the command exits, however it exits, so a killed job never leaves a stale lock behind.

With `--runs-per-gpu K` each GPU has K slots (`gpu<index>.lock`, `gpu<index>.slot<j>.lock`), so up
to K jobs share it: a 256-wide MLP run keeps a large GPU only a few percent busy. Jobs fill slot 0
of every GPU before anyone gets a second slot, so they spread over the GPUs first. A job that needs
several GPUs gets one slot on each of that many different GPUs.

It does nothing but run the command when --gpus is 0, when no NVIDIA GPU is visible (CPU-only
machines), or inside a SLURM job (SLURM sets CUDA_VISIBLE_DEVICES for its allocation). If
CUDA_VISIBLE_DEVICES is already set, only those GPUs are handed out.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_SECONDS = 5.0


def visible_gpus() -> list[str]:
    """GPU ids this job may use: CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists."""
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        return [gpu.strip() for gpu in preset.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def lock_path(lock_dir: Path, gpu: str, slot: int = 0) -> Path:
    return lock_dir / (f"gpu{gpu}.lock" if slot == 0 else f"gpu{gpu}.slot{slot}.lock")


def try_lock(lock_dir: Path, gpu: str, slot: int = 0) -> int | None:
    """Open and exclusively lock one slot of the GPU; the open fd, or None if another job holds it."""
    fd = os.open(lock_path(lock_dir, gpu, slot), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def acquire(gpus: list[str], count: int, lock_dir: Path, runs_per_gpu: int = 1) -> list[tuple[str, int]]:
    """Wait until `count` of `gpus` each have a free slot (of `runs_per_gpu`) and lock one on each."""
    if count > len(gpus):
        raise SystemExit(f"gpu_lock: the job needs {count} GPUs but only {len(gpus)} are visible ({gpus}); "
                         "lower the rule's gpu resource or set resources.<rule>.gpu in the config")
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        held: list[tuple[str, int]] = []
        for slot in range(runs_per_gpu):  # the least-shared GPUs first
            for gpu in gpus:
                if any(gpu == taken for taken, _ in held):
                    continue
                fd = try_lock(lock_dir, gpu, slot)
                if fd is not None:
                    held.append((gpu, fd))
                    if len(held) == count:
                        return held
        for _, fd in held:  # not enough free: release and retry, so two waiting jobs cannot deadlock
            os.close(fd)
        if not waited:
            print(f"gpu_lock: all of GPUs {gpus} are in use ({runs_per_gpu} run(s) per GPU), waiting "
                  f"(locks in {lock_dir})", file=sys.stderr)
            waited = True
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the command needs (0: run it as is)")
    parser.add_argument("--runs-per-gpu", type=int, default=1,
                        help="jobs that may share one GPU (config: runs_per_gpu; default 1 = a GPU per job)")
    parser.add_argument("--lock-dir", type=Path, default=Path(tempfile.gettempdir()) / "adept-gpu-locks",
                        help="folder of the lock files, shared by all jobs on this machine")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (usage: gpu_lock.py --gpus 1 -- COMMAND ...)")
    if args.runs_per_gpu < 1:
        parser.error(f"--runs-per-gpu must be >= 1, got {args.runs_per_gpu} (set runs_per_gpu in the config)")
    gpus = visible_gpus()
    if args.gpus > 0 and gpus and "SLURM_JOB_ID" not in os.environ:
        held = acquire(gpus, args.gpus, args.lock_dir, args.runs_per_gpu)
        for _, fd in held:
            os.set_inheritable(fd, True)  # the command keeps the locks until it exits
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu for gpu, _ in held)
        print(f"gpu_lock: running on GPU(s) {os.environ['CUDA_VISIBLE_DEVICES']}", file=sys.stderr)
    sys.stderr.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
