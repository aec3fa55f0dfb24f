"""Figure 3 and the performance profiles (PNG and PDF each), with the plotting helpers they share.

Figure 3: normalized score vs. gradient steps on one env, one panel per dataset. Curves are the
mean over seeds of `score_mean` from each run's eval.csv, with a band of ± one std over seeds (or
rliable's bootstrap CI of the mean, `band="ci"`). Seeds are aligned on the evaluation steps they
all have; the runner evaluates every run on the same schedule, so that is all of them.

Performance profiles (Agarwal et al., 2021): for every Table 1 method, the fraction of its runs
(all rows, all seeds) whose final score exceeds each threshold tau, with rliable's stratified-
bootstrap CIs, drawn by rliable's plot_performance_profiles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from adept.outputs import atomic_path

from . import stats
from .reference import paper_task_order
from .runs import Run, read_eval_curve, scores_by_task
from .spec import Bootstrap, ReportSpec

# Colour by learner, line style by what the method adds (ADEPT, Diff+X, plain, the BC ablation).
_COLORS = {"iql": "tab:blue", "sac": "tab:red", "bc": "tab:green", "td3bc": "tab:purple", "cql": "tab:brown"}
_STYLES = {"adept": "-", "diff": "--", "plain": ":"}


def method_style(method: str, fallback_index: int) -> dict:
    """Line style of a method in every figure: colour by learner, line style by ADEPT / Diff+X / plain."""
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


BANDS = ("std", "ci", "minmax")


def curve_band(samples: np.ndarray, band: str, bootstrap: Bootstrap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over the seeds (rows) of `samples` (seeds, steps): ± 1 std (population, as
    the tables), rliable's bootstrap CI of the mean ("ci"), or the min-max range of the seeds."""
    mean = samples.mean(axis=0)
    if band == "std":
        return mean, mean - samples.std(axis=0), mean + samples.std(axis=0)
    if band == "ci":
        low, high = stats.mean_curve_band(samples, reps=bootstrap.comparison_reps, confidence=bootstrap.confidence,
                                          seed=bootstrap.seed)
        return mean, low, high
    if band == "minmax":
        return mean, samples.min(axis=0), samples.max(axis=0)
    raise ValueError(f"band must be one of {list(BANDS)}, got {band!r}")


def band_description(band: str, bootstrap: Bootstrap) -> str:
    """How a caption names the band of `curve_band`."""
    return {"std": "± 1 std", "ci": f"{bootstrap.confidence:.0%} bootstrap CI of the mean",
            "minmax": "min-max range"}[band]


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
            mean, low, high = curve_band(scores, spec.figure3_band, spec.bootstrap)
            style = method_style(column.method, index)
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
    band = band_description(spec.figure3_band, spec.bootstrap)
    fig.suptitle(f"Figure 3: training curves on {env}\n(mean over seeds, band {band})", fontsize=11)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 4), fontsize=9, frameon=False)
    save_figure(fig, png, pdf)
    return fig


def save_figure(fig: Figure, png: str | Path, pdf: str | Path) -> None:
    """Write the PNG and the PDF, each atomically; the PDF is byte-stable across reruns."""
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    with atomic_path(pdf, suffix=".pdf") as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})


def plot_performance_profiles(spec: ReportSpec, runs: Sequence[Run], png: str | Path, pdf: str | Path) -> Figure:
    """Score distributions of the Table 1 methods that have a run on every row (the others are named
    under the plot), on the D4RL normalized-score axis."""
    from rliable import plot_utils  # imports seaborn and pyplot: only when this figure is drawn

    matrices, missing = {}, []
    for column in spec.table1:
        matrix = stats.score_matrix(scores_by_task(runs, column.method), spec.tasks, column.method)
        if matrix is None:
            missing.append(column.label)
        else:
            matrices[column] = matrix
    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.subplots()
    boot = spec.bootstrap
    if matrices:
        thresholds = stats.profile_thresholds(list(matrices.values()))
        profiles, intervals, colors, linestyles = {}, {}, {}, {}
        for index, (column, matrix) in enumerate(matrices.items()):
            profile, low, high = stats.performance_profile(matrix, thresholds, reps=boot.comparison_reps,
                                                           confidence=boot.confidence, seed=boot.seed)
            profiles[column.label], intervals[column.label] = profile, (low, high)
            style = method_style(column.method, index)
            colors[column.label], linestyles[column.label] = style["color"], style["linestyle"]
        plot_utils.plot_performance_profiles(
            profiles, thresholds * stats.SCORE_SCALE, performance_profile_cis=intervals, ax=ax, colors=colors,
            linestyles=linestyles, xlabel=r"D4RL normalized score $\tau$",
            ylabel=r"fraction of runs with score $> \tau$", labelsize="medium", ticklabelsize="medium")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(len(profiles), 4),
                   fontsize=9, frameon=False)
    else:
        ax.text(0.5, 0.5, "no method has a completed run on every row", ha="center", va="center",
                transform=ax.transAxes)
    title = (f"Performance profiles: final scores of all runs on all {len(spec.tasks)} (env, dataset) rows\n"
             f"(band: {boot.confidence:.0%} stratified-bootstrap CI; rliable)")
    if missing:
        title += f"\nnot shown (no run on some rows): {', '.join(missing)}"
    fig.suptitle(title, fontsize=10)
    save_figure(fig, png, pdf)
    return fig
