"""Reading the per-run outputs (adept.run_outputs, the contract): the only input of aggregation.

A run lives in `run_dir(runs_dir, method, env, dataset, seed)` and is complete once its
`final.json` exists (it is written last). The method is the directory name, so variants such as
`adept-sac_K5` and drop-in baselines are told apart even when their final.json names a base method.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from adept.outputs import atomic_write_text, read_csv
from adept.provenance import git_commit
from adept.run_outputs import EVAL_LOG, FINAL, read_final, run_dir

from .reference import Task

EVAL_COLUMNS = ("step", "score_mean")  # what the figures need of a run's eval.csv


@dataclass(frozen=True)
class Run:
    method: str
    env: str
    dataset: str
    seed: int
    directory: Path
    final: dict[str, Any]

    @property
    def task(self) -> Task:
        return (self.env, self.dataset)

    @property
    def final_score(self) -> float:
        return float(self.final["final_score"])


def load_runs(runs_dir: str | Path, methods: Iterable[str], tasks: Iterable[Task],
              seeds: Iterable[int]) -> list[Run]:
    """Every completed run of the grid (methods x tasks x seeds); runs without final.json are skipped."""
    runs = []
    for method in dict.fromkeys(methods):
        for env, dataset in tasks:
            for seed in seeds:
                directory = run_dir(runs_dir, method, env, dataset, seed)
                path = directory / FINAL
                if path.is_file():
                    final = read_final(path, env, dataset, seed)
                    runs.append(Run(method, env, dataset, seed, directory, final))
    return runs


def scores_by_task(runs: Iterable[Run], method: str) -> dict[Task, np.ndarray]:
    """{(env, dataset): final scores of the method's runs, in seed order}."""
    grouped: dict[Task, list[tuple[int, float]]] = {}
    for run in runs:
        if run.method == method:
            grouped.setdefault(run.task, []).append((run.seed, run.final_score))
    return {task: np.array([score for _, score in sorted(pairs)]) for task, pairs in grouped.items()}


def read_run_csv(run: Run, name: str) -> list[dict[str, Any]]:
    """The rows of one of the run's logs (`eval.csv`, `train.csv`), numbers parsed."""
    path = run.directory / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing although {run.directory / FINAL} exists; "
                                f"a run writes {name} before {FINAL}")
    return read_csv(path)


def column_curve(rows: Sequence[dict[str, Any]], column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of the rows where `column` holds a finite number; None if no row does (a
    quantity the run does not log, e.g. gt/ columns of a dataset without simulator states)."""
    points = [(row["step"], row[column]) for row in rows
              if isinstance(row.get(column), float) and math.isfinite(row[column])]
    if not points:
        return None
    steps, values = zip(*points)
    return np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64)


def read_eval_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(steps, normalized scores) from the run's eval.csv."""
    rows = read_run_csv(run, EVAL_LOG)
    if not rows or any(column not in rows[0] for column in EVAL_COLUMNS):
        raise ValueError(f"{run.directory / EVAL_LOG} needs the columns {list(EVAL_COLUMNS)} and at least one row")
    return (np.array([row["step"] for row in rows], dtype=np.int64),
            np.array([row["score_mean"] for row in rows], dtype=np.float64))


def provenance(runs: Sequence[Run], expected_seeds: Sequence[int]) -> list[str]:
    """Lines saying what a table was made from: data source, env versions, seeds, steps, commits."""
    def distinct(values: Iterable[Any]) -> str:
        found = sorted({str(v) for v in values if v not in (None, "")})
        return ", ".join(found) if found else "unknown"

    finals = [run.final for run in runs]
    versions = [f.get("versions") or {} for f in finals]
    seeds = sorted({run.seed for run in runs})
    return [
        f"Data source: {distinct(f.get('source') for f in finals)}.",
        f"Environments: {distinct(f.get('env_id') for f in finals)} "
        f"(gymnasium {distinct(v.get('gymnasium') for v in versions)}, mujoco {distinct(v.get('mujoco') for v in versions)}).",
        f"Seeds: {', '.join(map(str, seeds)) or 'none'} of {len(expected_seeds)} configured; "
        f"{len(runs)} completed runs.",
        f"Gradient steps per run: {distinct(f.get('steps') for f in finals)}.",
        f"Runs made at commit(s): {distinct(v.get('commit') for v in versions)}; "
        f"report made at commit {git_commit()}.",
    ]


SCORE_COLUMNS = ("method", "env", "dataset", "seed", "final_score", "best_score", "final_return", "steps",
                 "wall_time_s", "updates_per_s", "device", "source")


def write_scores_csv(runs: Sequence[Run], path: str | Path) -> None:
    """One row per completed run (the numbers behind every table), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SCORE_COLUMNS)
    for run in sorted(runs, key=lambda r: (r.method, r.env, r.dataset, r.seed)):
        identity = {"method": run.method, "env": run.env, "dataset": run.dataset, "seed": run.seed}
        writer.writerow([identity[c] if c in identity else run.final.get(c, "") for c in SCORE_COLUMNS])
    atomic_write_text(path, buffer.getvalue())
