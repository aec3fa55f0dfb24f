"""Wall-clock timing of repeated steps, correct on GPUs (CUDA work is asynchronous: the clock is
read only after the device has finished) and robust to a shared, noisy CPU (interleaved rounds)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on `device` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    steps: int
    seconds: float
    cpu_seconds: float = float("nan")  # CPU time of this process: steadier than wall time on a shared CPU

    @property
    def per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")

    @property
    def per_cpu_second(self) -> float:
        return self.steps / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


def time_steps(step: Callable[[], object], steps: int, device: torch.device | str, warmup: int = 10) -> Timing:
    """Run `step` `warmup` times untimed, then `steps` times timed (device synchronized at both ends)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for _ in range(warmup):
        step()
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    synchronize(device)
    return Timing(steps, time.perf_counter() - start, time.process_time() - cpu_start)


def warmup_seconds(step: Callable[[], object], steps: int, device: torch.device | str) -> float:
    """Wall time of the first `steps` calls, compilation included (the cost a run pays once)."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_rates(steps_by_name: dict[str, Callable[[], object]], steps_per_round: int, rounds: int,
                      device: torch.device | str, warmup: int = 10) -> dict[str, float]:
    """Median steps/s of each candidate over `rounds` rounds that run every candidate in turn.

    On a machine shared with other jobs the available CPU drifts over seconds; alternating short
    rounds exposes all candidates to the same drift, so their ratio stays meaningful."""
    for step in steps_by_name.values():
        time_steps(step, 1, device, warmup=warmup)
    rates: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            rates[name].append(time_steps(step, steps_per_round, device, warmup=0).per_second)
    return {name: statistics.median(values) for name, values in rates.items()}


def ops_per_step(step: Callable[[], object], repeats: int = 5) -> float:
    """ATen operators dispatched per call of `step` (warm), counted with the profiler.

    On a GPU each one is about one kernel launch (~5-10 us), which is what small-batch updates are
    bound by; the count does not depend on the machine's load."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    return sum(event.count for event in prof.key_averages() if event.key.startswith("aten::")) / repeats

