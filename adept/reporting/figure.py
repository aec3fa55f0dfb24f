"""Figure 3: normalized score vs. gradient steps on one env, one panel per dataset (PNG and PDF).

Curves are the mean over seeds of `score_mean` from each run's eval.csv, with a band of ± one std
over seeds (or a bootstrap CI of the mean, `band="ci"`). Seeds are aligned on the evaluation steps
they all have; the runner evaluates every run on the same schedule, so that is all of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from adept.outputs import atomic_path

from . import stats
from .reference import paper_task_order
from .runs import Run, read_eval_curve
from .spec import ReportSpec

# Colour by learner, line style by what the method adds (ADEPT, Diff+X, plain, the BC ablation).
_COLORS = {"iql": "tab:blue", "sac": "tab:red", "bc": "tab:green", "td3bc": "tab:purple", "cql": "tab:brown"}
_STYLES = {"adept": "-", "diff": "--", "plain": ":"}


def _style(method: str, fallback_index: int) -> dict:
    prefix, _, learner = method.partition("-")
    if learner and prefix in ("adept", "diff"):
        kind, learner = prefix, learner.split("_")[0]
    else:
        kind, learner = "plain", method.split("_")[0]
    color = _COLORS.get(learner, f"C{fallback_index % 10}")
    return {"color": color, "linestyle": _STYLES[kind] if learner in _COLORS else "-.", "linewidth": 1.6}


def seed_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, scores (seeds, steps)) on the evaluation steps common to every seed (steps ascend)."""
    common = curves[0][0]
    for steps, _ in curves[1:]:
        common = np.intersect1d(common, steps)
    if common.size == 0:
        raise ValueError("the seeds of a curve share no evaluation step; were they run with the same run.eval_every?")
    return common, np.stack([scores[np.searchsorted(steps, common)] for steps, scores in curves])


def plot_figure3(spec: ReportSpec, runs: Sequence[Run], png: str | Path, pdf: str | Path) -> Figure:
    env = spec.figure3_env
    datasets = [dataset for _, dataset in paper_task_order([env], spec.datasets)]
    fig = Figure(figsize=(max(4.4 * len(datasets), 5.5), 3.9), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    handles = {}
    for ax, dataset in zip(axes, datasets):
        plotted = 0
        for index, column in enumerate(spec.figure3_methods):
            curves = [read_eval_curve(run) for run in sorted(runs, key=lambda r: r.seed)
                      if run.method == column.method and run.env == env and run.dataset == dataset]
            if not curves:
                continue
            steps, scores = seed_curves(curves)
            mean = scores.mean(axis=0)
            if spec.figure3_band == "ci":
                low, high = stats.bootstrap_mean_band(scores, confidence=spec.bootstrap.confidence,
                                                      seed=spec.bootstrap.seed)
            else:
                low, high = mean - scores.std(axis=0), mean + scores.std(axis=0)
            style = _style(column.method, index)
            (line,) = ax.plot(steps, mean, **style)
            ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, linewidth=0)
            handles.setdefault(column.label, line)
            plotted += 1
        if not plotted:
            ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{env}-{dataset}")
        ax.set_xlabel("gradient steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("D4RL normalized score")
    band = "± 1 std" if spec.figure3_band == "std" else f"{spec.bootstrap.confidence:.0%} bootstrap CI of the mean"
    fig.suptitle(f"Figure 3: training curves on {env}\n(mean over seeds, band {band})", fontsize=11)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 4), fontsize=9, frameon=False)
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    with atomic_path(pdf, suffix=".pdf") as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})  # byte-stable across reruns
    return fig
