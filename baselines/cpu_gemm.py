"""Matrix products of the networks on the CPU through oneDNN where torch's BLAS is the slow one.

torch multiplies float32 matrices on x86 CPUs with MKL, and MKL runs its AVX2 kernels on AMD CPUs:
on the development machine's AMD EPYC (AVX-512) one thread reaches ~90 GFLOP/s with MKL and
~140-210 GFLOP/s with oneDNN (also part of torch) at the sizes of these networks (batch 256-2048,
width 256; docs/notes/learners.md, Speed). `Linear` (an nn.Linear: same parameters and state dict)
and `ensemble_linear` (the stacked critics' layer) send their forward and backward products to
oneDNN when that applies: a float32 CPU input, at least MIN_OUT output features (below that
oneDNN is the slower one), not while torch.compile traces. Same arithmetic either way: the two
libraries differ by float32 roundoff (summation order), like any two GEMM libraries.

`ADEPT_CPU_GEMM` chooses: "auto" (default: oneDNN on AMD CPUs, torch's BLAS elsewhere), "onednn"
or "blas". The choice is made once per process from the CPU, never from timings, so a run and its
resumed continuation on the same machine compute the same way.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

MIN_OUT = 32
CHOICES = ("auto", "onednn", "blas")


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@lru_cache(maxsize=1)
def onednn_enabled() -> bool:
    """Whether CPU products go through oneDNN in this process (ADEPT_CPU_GEMM, then the CPU vendor)."""
    choice = os.environ.get("ADEPT_CPU_GEMM", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"ADEPT_CPU_GEMM must be one of {list(CHOICES)}, got {choice!r}")
    available = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    if choice == "blas" or not available:
        return False
    return choice == "onednn" or _cpu_vendor() == "AuthenticAMD"


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight^T (+ bias) by oneDNN; weight (N, K) in any strides."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _applies(x: torch.Tensor, out_features: int) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and out_features >= MIN_OUT
            and not torch.compiler.is_compiling() and onednn_enabled())


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with W (out, in), as F.linear; the three products of forward and backward by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = _product(grad, weight.t(), None) if ctx.needs_input_grad[0] else None     # grad @ W
        grad_w = _product(grad.t(), x.t(), None) if ctx.needs_input_grad[1] else None      # grad^T @ x
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class _OneDNNEnsembleLinear(torch.autograd.Function):
    """y_e = x_e W_e + b_e for each member e, W (E, in, out), b (E, 1, out); x (B, in) shared or (E, B, in)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        members = range(weight.shape[0])
        inputs = [x if x.dim() == 2 else x[e] for e in members]
        return torch.stack([_product(inputs[e], weight[e].t(), bias[e, 0]) for e in members])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        members = range(weight.shape[0])
        inputs = [x if x.dim() == 2 else x[e] for e in members]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            parts = [_product(grad[e], weight[e], None) for e in members]               # grad_e @ W_e^T
            grad_x = sum(parts[1:], parts[0]) if x.dim() == 2 else torch.stack(parts)
        if ctx.needs_input_grad[1]:
            grad_w = torch.stack([_product(inputs[e].t(), grad[e].t(), None) for e in members])  # x_e^T @ grad_e
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(1, keepdim=True)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear (weight (out, in)), by oneDNN on the CPU where that applies (2-D inputs)."""
    if x.dim() == 2 and _applies(x, weight.shape[0]):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def ensemble_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Each member's x_e @ W_e + b_e, (E, B, out): one batched matmul, or per-member oneDNN products on the CPU."""
    if _applies(x, weight.shape[-1]):
        return _OneDNNEnsembleLinear.apply(x, weight, bias)
    if weight.shape[-1] == 1 and x.device.type == "cpu" and not torch.compiler.is_compiling() and onednn_enabled():
        # A Q-value head: the batched matmul's N = 1 kernel is 2-3x slower than one addmm per member here.
        inputs = [x if x.dim() == 2 else x[e] for e in range(weight.shape[0])]
        return torch.stack([torch.addmm(bias[e], inputs[e], weight[e]) for e in range(weight.shape[0])])
    if x.dim() == 2:
        return torch.matmul(x, weight) + bias
    return torch.baddbmm(bias, x, weight)


class Linear(nn.Linear):
    """nn.Linear (same parameters, initialization and state dict) whose CPU products may go through oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
