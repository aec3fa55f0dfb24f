"""Aggregate statistics with rliable: a thin adapter from the run outputs to rliable's score matrices.

Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice", and their library
rliable compute everything here: the interquartile mean (IQM), mean, median and optimality gap of
all runs (`rliable.metrics`), the probability of improvement of one method over another,
performance profiles, and every confidence interval (the stratified bootstrap of
`rliable.library`, which resamples runs within each task). See docs/notes/workflow.md, "Statistics".

rliable wants, per method, a (runs, tasks) matrix of scores on a scale where an expert scores 1;
the D4RL normalized score puts the expert at 100, so the adapter divides by 100 and the aggregates
are multiplied back for display (probabilities and fractions of runs are left as they are).

rliable's bootstrap draws from numpy's global random state. Every estimate here seeds it with its
`seed` and restores it afterwards, so an interval depends only on its own scores and the seed (not
on which other methods are configured, nor on the order in which they are computed).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from rliable import library as rly
from rliable import metrics

from .reference import Task

log = logging.getLogger("adept.reporting")

SCORE_SCALE = 100.0  # D4RL normalized score of an expert; 1.0 on rliable's scale
AGGREGATES = ("IQM", "Mean", "Median", "Optimality gap")  # the order of _aggregates' output
RLIABLE_VERSION = metadata.version("rliable")


@dataclass(frozen=True)
class ScoreMatrix:
    """One method's final scores as rliable takes them: (runs, tasks), normalized score / 100."""

    scores: np.ndarray
    tasks: tuple[Task, ...]
    dropped: int = 0  # runs left out so that every task has the same number (see score_matrix)

    @property
    def runs(self) -> int:
        return int(self.scores.shape[0])


def score_matrix(by_task: Mapping[Task, np.ndarray], tasks: Sequence[Task], name: str = "") -> ScoreMatrix | None:
    """rliable's matrix from {task: final normalized scores in seed order}; None unless every task has a run.

    rliable needs the same number of runs on every task. Where runs are missing on some tasks
    (unfinished or failed), every task keeps its first k runs in seed order, k the smallest count
    of any task, and a warning (and a note under the tables) says how many runs were left out.
    """
    columns = [np.asarray(by_task.get(task, ()), dtype=np.float64).ravel() for task in tasks]
    if not columns or any(column.size == 0 for column in columns):
        return None
    runs = min(column.size for column in columns)
    dropped = sum(column.size - runs for column in columns)
    if dropped:
        log.warning("%s: rliable needs the same number of runs on every task; using the first %d runs (seed "
                    "order) of each task, %d run(s) left out", name or "scores", runs, dropped)
    return ScoreMatrix(np.stack([column[:runs] for column in columns], axis=1) / SCORE_SCALE, tuple(tasks), dropped)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile confidence interval."""

    value: float
    low: float
    high: float

    @property
    def ci(self) -> tuple[float, float]:
        return (self.low, self.high)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval_estimates(scores: np.ndarray | list[np.ndarray], func: Callable[..., np.ndarray], *, reps: int,
                        confidence: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, lows, highs) of `func` by rliable's stratified bootstrap; a list is resampled array by array."""
    if reps < 1:
        raise ValueError(f"bootstrap reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap confidence must be in (0, 1), got {confidence}")
    with _seeded(seed):
        points, intervals = rly.get_interval_estimates({"x": scores}, func, reps=reps,
                                                       confidence_interval_size=confidence)
    low, high = np.asarray(intervals["x"], dtype=np.float64).reshape(2, -1)
    return np.atleast_1d(np.asarray(points["x"], dtype=np.float64)), low, high


def _aggregates(scores: np.ndarray) -> np.ndarray:
    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                     metrics.aggregate_median(scores), metrics.aggregate_optimality_gap(scores)])


def aggregate_estimates(matrix: ScoreMatrix, *, reps: int = 50_000, confidence: float = 0.95,
                        seed: int = 0) -> dict[str, Estimate]:
    """{name: estimate} of AGGREGATES on the normalized-score scale (0-100), one bootstrap for all four.

    IQM: 25% trimmed mean of all runs of all tasks; Mean / Median: of the per-task mean scores;
    Optimality gap: 100 minus the mean of min(score, 100) over all runs (lower is better).
    """
    points, low, high = _interval_estimates(matrix.scores, _aggregates, reps=reps, confidence=confidence, seed=seed)
    return {name: Estimate(float(SCORE_SCALE * p), float(SCORE_SCALE * lo), float(SCORE_SCALE * hi))
            for name, p, lo, hi in zip(AGGREGATES, points, low, high)}


def probability_of_improvement(x: ScoreMatrix, y: ScoreMatrix, *, reps: int = 2_000, confidence: float = 0.95,
                               seed: int = 0) -> Estimate:
    """P(X > Y): the probability that a run of X scores higher than a run of Y on the same task
    (Mann-Whitney U / (n_x n_y), ties count 1/2), averaged over tasks. X and Y may have different
    numbers of runs; the bootstrap resamples each of them independently within each task."""
    if x.tasks != y.tasks:
        raise ValueError(f"probability of improvement needs the same tasks for both methods, got {list(x.tasks)} "
                         f"and {list(y.tasks)}")
    point, low, high = _interval_estimates([x.scores, y.scores], metrics.probability_of_improvement, reps=reps,
                                           confidence=confidence, seed=seed)
    return Estimate(float(point[0]), float(low[0]), float(high[0]))


def profile_thresholds(matrices: Sequence[ScoreMatrix], points: int = 101) -> np.ndarray:
    """Thresholds (rliable's scale) from the lowest run's score to the highest, rounded outwards to a
    tenth (so profiles fall from 1 to 0) and covering at least [0, 1] (random to expert)."""
    scores = np.concatenate([m.scores.ravel() for m in matrices]) if matrices else np.zeros(1)
    low = min(0.0, np.floor(scores.min() * 10.0) / 10.0)
    high = max(1.0, np.ceil(scores.max() * 10.0) / 10.0)
    return np.linspace(low, high, points)


def performance_profile(matrix: ScoreMatrix, thresholds: np.ndarray, *, reps: int = 2_000,
                        confidence: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction of runs scoring above each threshold, CI low, CI high): rliable's score distribution."""
    if reps < 1:
        raise ValueError(f"bootstrap reps must be >= 1, got {reps}")
    with _seeded(seed):
        profiles, intervals = rly.create_performance_profile({"x": matrix.scores}, thresholds, reps=reps,
                                                             confidence_interval_size=confidence)
    low, high = np.asarray(intervals["x"], dtype=np.float64)
    return np.asarray(profiles["x"], dtype=np.float64), low, high


def mean_curve_band(samples: np.ndarray, *, reps: int = 2_000, confidence: float = 0.95,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CI of the mean over runs at every point of a learning curve, `samples` of shape (runs, points).

    The curve is rliable's three-axis score array (runs, 1 task, points): its stratified bootstrap
    resamples the runs separately at every point, giving pointwise intervals as in rliable's
    sample-efficiency curves.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (runs, points) with runs >= 1, got {samples.shape}")
    _, low, high = _interval_estimates(samples[:, None, :], lambda s: s.mean(axis=0)[0], reps=reps,
                                       confidence=confidence, seed=seed)
    return low, high
