"""Aggregate statistics across tasks: interquartile mean with stratified-bootstrap confidence intervals.

Following Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice": pool the
normalized scores of every run on every task, report the interquartile mean (IQM: the mean of the
middle 50% of runs), and quantify uncertainty with a percentile bootstrap that resamples runs *within*
each task (stratified), so every replicate keeps the task mix of the experiment. rliable implements
the same procedure (with the same default of 50,000 replicates); this is a numpy-only version of it,
documented in docs/notes/workflow.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# Agarwal et al. cut 25% of the runs from each end (scipy.stats.trim_mean(..., 0.25) in rliable).
IQM_TRIM = 0.25


def trimmed_mean(scores: np.ndarray, trim: float, axis: int = -1) -> np.ndarray:
    """Mean after dropping floor(trim * n) values from each end along `axis` (scipy's trim_mean rule)."""
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    scores = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    n = scores.shape[axis]
    if n == 0:
        raise ValueError("cannot average an empty set of scores")
    cut = int(trim * n)
    return np.take(scores, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis` (the middle 50% of the values)."""
    return trimmed_mean(scores, IQM_TRIM, axis=axis)


def mean(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).mean(axis=axis)


Statistic = Callable[..., np.ndarray]  # f(scores, axis=-1) reducing the last axis


def stratified_bootstrap_ci(
    scores_per_task: Sequence[np.ndarray],
    statistic: Statistic = iqm,
    *,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of `statistic` over the pooled runs of all tasks.

    `scores_per_task[t]` holds the runs (seeds) of task t; tasks may have different numbers of runs.
    Each replicate draws, for every task separately, as many runs as it has, with replacement, pools
    them, and applies `statistic`. All replicates are drawn at once: (reps, runs) index arrays.
    """
    tasks = [np.asarray(s, dtype=np.float64).ravel() for s in scores_per_task]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ValueError("every task needs at least one run to bootstrap")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([t[rng.integers(0, t.size, size=(reps, t.size))] for t in tasks], axis=1)
    replicates = statistic(resampled, axis=-1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class AggregateScore:
    """Across-task summary of one method: IQM and mean of all runs, each with a bootstrap CI."""

    iqm: float
    iqm_ci: tuple[float, float]
    mean: float
    mean_ci: tuple[float, float]
    runs: int
    tasks: int


def aggregate_scores(
    scores_per_task: Sequence[np.ndarray], *, reps: int = 50_000, confidence: float = 0.95, seed: int = 0
) -> AggregateScore:
    pooled = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in scores_per_task])
    return AggregateScore(
        iqm=float(iqm(pooled)),
        iqm_ci=stratified_bootstrap_ci(scores_per_task, iqm, reps=reps, confidence=confidence, seed=seed),
        mean=float(mean(pooled)),
        mean_ci=stratified_bootstrap_ci(scores_per_task, mean, reps=reps, confidence=confidence, seed=seed),
        runs=int(pooled.size),
        tasks=len(scores_per_task),
    )


def bootstrap_mean_band(samples: np.ndarray, *, reps: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the mean over rows, separately for every column of `samples` (runs, points).

    Used for learning curves: rows are seeds, columns are evaluation steps. The same resampled
    seeds are used for every step, so the band is a set of bootstrap curves, not independent points.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (runs, points) with runs >= 1, got {samples.shape}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, samples.shape[0], size=(reps, samples.shape[0]))
    replicates = samples[picks].mean(axis=1)           # (reps, points)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    return low, high
