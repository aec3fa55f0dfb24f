"""One switch for compiling the hot-loop steps: the learners' updates, the world model's IWU step and
its guided sampling loop (`run.compile` / `--compile`: "off", "on" or "auto").

- CPU: `torch.compile` (inductor: the elementwise parts fused into C++ kernels, the GEMMs left to
  torch's BLAS; the eager steps' oneDNN products, baselines/cpu_gemm.py, are not traced).
- CUDA: `torch.compile(mode="reduce-overhead")`: the compiled pieces are captured as CUDA graphs
  and replayed, so a step costs a few graph launches instead of hundreds of kernel launches. The
  compiled steps have static shapes (fixed batch sizes; `dynamic=False`); the rollout compaction,
  whose shapes depend on the data, stays outside (adept/rollouts.py).
- Random draws that take an explicit `torch.Generator` (every draw in the harness does) are not
  traced: they run eagerly between compiled pieces, so a compiled step draws the same numbers from
  the same generator states as the eager one. Draws from the global generator inside a compiled
  piece call aten's generator too (`fallback_random`), for the same reason.
- Python flags a step branches on (TD3+BC's actor delay, CQL's BC warm-up) give one graph per value.

"auto" compiles where it was measured faster than eager AND is tested equal to it
(tests/test_compile.py); AUTO_COMPILE records the measurements (docs/notes/learners.md, Speed).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, TypeVar

import torch
from torch.utils._pytree import tree_map_only

CompileMode = Literal["off", "on", "auto"]
COMPILE_MODES = ("off", "on", "auto")
F = TypeVar("F", bound=Callable)

# "auto" per device type: None = never (not measured faster, or not measured), N = compile runs of at
# least N steps (shorter ones do not repay the compile time). Evidence: docs/notes/learners.md, Speed.
# CUDA is not measured yet (no GPU in the development sessions): benchmarks/gpu_check.sh measures
# eager and compiled rates there and runs tests/test_compile.py on CUDA.
AUTO_COMPILE: dict[str, int | None] = {"cpu": None, "cuda": None}


def resolve_compile(mode: CompileMode | bool, device: str | torch.device, steps: int | None = None) -> bool:
    """Whether `mode` compiles a job of `steps` steps (None: of unknown length) on `device`.
    True/False are accepted as "on"/"off" (older configs, and YAML reads on/off as booleans)."""
    if isinstance(mode, bool):
        return mode
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    min_steps = AUTO_COMPILE.get(torch.device(device).type)
    return min_steps is not None and (steps is None or steps >= min_steps)


def should_compile(mode: CompileMode | bool, device: str | torch.device) -> bool:
    """`resolve_compile` for a job of unknown length (a learner or world model built on its own)."""
    return resolve_compile(mode, device)


def compile_step(fn: F, mode: CompileMode | bool, device: str | torch.device) -> F:
    """`fn` compiled for `device` if `mode` says so, else `fn` itself.

    Compile plain functions (e.g. `type(self)._update_step`, called with the instance), not bound
    methods: a bound method inside the compiled wrapper would keep pointing at the original object
    in `copy.deepcopy`'d copies."""
    if not should_compile(mode, device):
        return fn
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    # Every optimizer of a learner (and the world model's) runs the same code object, Adam.step, with
    # its own parameters: one graph each, beyond dynamo's default limit of 8 for CQL-style learners
    # next to a world model. Past the limit dynamo would silently run the rest eagerly.
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
    if torch.device(device).type != "cuda":
        return torch.compile(fn, dynamic=False)  # type: ignore[return-value]
    compiled = torch.compile(fn, mode="reduce-overhead", dynamic=False)

    @functools.wraps(fn)
    def replay(*args, **kwargs):
        # A CUDA graph writes its outputs to the same memory on every replay: start a new step and
        # hand out copies, so results kept from an earlier step (metric sums, rollout buffers) survive.
        torch.compiler.cudagraph_mark_step_begin()
        return tree_map_only(torch.Tensor, torch.clone, compiled(*args, **kwargs))

    return replay  # type: ignore[return-value]
