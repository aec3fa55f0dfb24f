"""How close a training step comes to the GEMMs it cannot avoid: the GEMM floor of one step.

`gemm_calls(step)` records the matrix products one call of `step` dispatches (aten mm, addmm, bmm,
baddbmm and oneDNN's linear, baselines/cpu_gemm.py, with their shapes); `gemm_floor(calls)` replays exactly those products on fresh tensors and
times them, so `floor / step time` is the share of the step spent in arithmetic it needs, and
`1 - share` the overhead (other kernels, Python, dispatch) any faster implementation of the same
arithmetic could remove. Imports nothing but torch: benchmarks/d3rlpy_worker.py uses it from
d3rlpy's own environment.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")


def gemm_calls(step: Callable[[], object]) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """(op, input shapes) of every GEMM one call of `step` dispatches."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    calls = []
    for event in prof.events():
        if event.name in GEMMS:
            shapes = tuple(tuple(s) for s in event.input_shapes if s)
            calls.append((event.name, shapes))
    return calls


def _operands(op: str, shapes) -> tuple[Callable[[], object], float]:
    """A closure running the GEMM on random tensors of these shapes, and its FLOPs."""
    if op == "mkldnn::_linear_pointwise":  # input (M, K), weight (N, K)[, bias (N,)]: input @ weight^T
        x, w = torch.randn(shapes[0]), torch.randn(shapes[1])
        bias = torch.randn(shapes[2]) if len(shapes) > 2 else None
        return (lambda: torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")), 2.0 * x.numel() * w.shape[0]
    if op in ("aten::addmm", "aten::baddbmm"):
        bias, a, b = (torch.randn(s) for s in shapes[:3])
        fn = (lambda: torch.addmm(bias, a, b)) if op == "aten::addmm" else (lambda: torch.baddbmm(bias, a, b))
    else:
        a, b = (torch.randn(s) for s in shapes[:2])
        fn = (lambda: torch.mm(a, b)) if op == "aten::mm" else (lambda: torch.bmm(a, b))
    batch = a.shape[0] if a.dim() == 3 else 1
    return fn, 2.0 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


def gemm_floor(calls, repeats: int = 20) -> dict:
    """Seconds (best of `repeats`, process CPU time) of running `calls` once, and their FLOPs."""
    runs = [_operands(op, shapes) for op, shapes in calls]
    for fn, _ in runs:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for fn, _ in runs:
            fn()
        best = min(best, time.process_time() - start)
    flops = sum(f for _, f in runs)
    return {"gemm_calls": len(runs), "gemm_flops": flops, "gemm_floor_s": best,
            "gemm_flops_per_s": flops / best if best > 0 else float("nan")}


def step_roofline(step: Callable[[], object], step_cpu_s: float) -> dict:
    """The GEMM floor of `step` and the share of its (CPU-time) duration `step_cpu_s` the GEMMs take."""
    floor = gemm_floor(gemm_calls(step))
    return {**floor, "step_cpu_s": step_cpu_s, "gemm_share": floor["gemm_floor_s"] / step_cpu_s}
