"""The per-run output contract (docs/architecture.md, "Per-run outputs"), written and read here only.

A run of (method, env, dataset, seed) lives in `<runs_dir>/<method>/<env>-<dataset>/seed<seed>/`:

    eval.csv        one row per evaluation: `eval_row(step, EvalResult, wall_time_s)` (+ method columns)
    train.csv       step + training metrics at a fixed cadence
    final.json      the summary (`final_record`), written last: the completion marker
    completed.json  a copy of final.json written just before it (Snakemake never deletes it), so a
                    rerun restores final.json instead of training again (`adept train` only)
    policy.pt       the final learner; checkpoint.pt while the run is going (`adept train` only)

`adept.runner` writes these for the harness's methods, drop-in baselines write them through
`RunWriter` (workflow/scripts/random_baseline.py is the worked example), and `adept.reporting`
reads them through `read_final` and `run_dir`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adept.errors import UserError
from adept.outputs import CsvLog, atomic_write_text

EVAL_LOG, TRAIN_LOG, FINAL, COMPLETION_RECORD = "eval.csv", "train.csv", "final.json", "completed.json"
POLICY, CHECKPOINT = "policy.pt", "checkpoint.pt"

EVAL_COLUMNS = ("step", "return_mean", "return_std", "score_mean", "score_std", "episode_length_mean",
                "wall_time_s")
REQUIRED_FINAL_KEYS = ("final_score",)


def run_dir(runs_dir: str | Path, method: str, env: str = "{env}", dataset: str = "{dataset}",
            seed: int | str = "{seed}") -> Path:
    """The run's folder; left at their defaults, env/dataset/seed stay Snakemake wildcards."""
    return Path(runs_dir) / method / f"{env}-{dataset}" / f"seed{seed}"


def eval_row(step: int, result, wall_time_s: float) -> dict[str, float]:
    """The eval.csv row of one evaluation (an adept.evaluation.EvalResult) at `step`."""
    return {"step": step, **result.summary(), "wall_time_s": wall_time_s}


def score_summary(evals: Sequence[dict[str, Any]], window: int) -> dict[str, float]:
    """final.json's scores from the eval.csv rows: final_score and final_return are means over the last
    `window` evaluations, best_score the best evaluation."""
    if not evals:
        raise ValueError("a run needs at least one evaluation to have a final score")
    last = evals[-window:]
    return {"final_score": float(np.mean([r["score_mean"] for r in last])), "final_score_window": len(last),
            "best_score": float(max(r["score_mean"] for r in evals)),
            "final_return": float(np.mean([r["return_mean"] for r in last]))}


def final_record(*, method: str, env: str, dataset: str, seed: int, source: str | None, evals: Sequence[dict],
                 window: int, steps: int, wall_time_s: float, updates_per_s: float | None, device: str,
                 config: dict, versions: dict, **extra: Any) -> dict[str, Any]:
    """final.json: the run's identity, its scores (score_summary), what it cost, and `extra` fields."""
    from adept.envs import get_env_spec

    return {"method": method, "env": env, "dataset": dataset, "source": source, "seed": seed,
            "env_id": get_env_spec(env).gym_id, **score_summary(evals, window), "steps": steps,
            "wall_time_s": wall_time_s, "updates_per_s": updates_per_s, "device": device, "config": config,
            "versions": versions, **extra}


def write_final(out_dir: str | Path, final: dict[str, Any], *, completion_record: bool = False) -> None:
    """final.json (atomically, last: it marks the run complete); with `completion_record`, completed.json
    just before it."""
    text = json.dumps(final, indent=2, default=str) + "\n"
    if completion_record:
        atomic_write_text(Path(out_dir) / COMPLETION_RECORD, text)
    atomic_write_text(Path(out_dir) / FINAL, text)


def read_final(path: str | Path, env: str | None = None, dataset: str | None = None,
               seed: int | None = None) -> dict[str, Any]:
    """A final.json (or completed.json), checked: a JSON object with a finite final_score, and with the
    env/dataset/seed of the folder it lies in when those are given. Anything else is a UserError."""
    path = Path(path)
    fix = "rerun the run that wrote it (or move the file away)"
    try:
        final = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"not valid JSON ({err})", path, fix) from None
    if not isinstance(final, dict):
        raise UserError(f"a run's {FINAL} must hold a JSON object, got {type(final).__name__}", path, fix)
    missing = [key for key in REQUIRED_FINAL_KEYS if key not in final]
    if missing:
        raise UserError(f"lacks {missing}; a run's {FINAL} must have at least {list(REQUIRED_FINAL_KEYS)} "
                        "(docs/architecture.md, 'Per-run outputs')", path, fix)
    score = final["final_score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise UserError(f"final_score must be a finite number, got {score!r}", path, fix)
    for key, expected in (("env", env), ("dataset", dataset), ("seed", seed)):
        if expected is not None and key in final and final[key] != expected:
            raise UserError(f"says {key}={final[key]!r} but lies in the folder of {key}={expected!r}", path,
                            "move it to the folder of its run")
    return final


class RunWriter:
    """The outputs of one run in `out_dir`, for baselines that do not go through `adept train`:

        outputs = RunWriter(out_dir)                # starts eval.csv and train.csv afresh
        outputs.evaluation(step, result, wall_s)    # an eval.csv row (+ extra columns)
        outputs.train_row({"step": step, ...})
        outputs.finish(method=..., env=..., ...)    # final.json from the rows, last
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.eval_log, self.train_log = CsvLog(self.out_dir / EVAL_LOG), CsvLog(self.out_dir / TRAIN_LOG)
        (self.out_dir / FINAL).unlink(missing_ok=True)  # the run is not complete until finish()
        self.eval_log.reset()
        self.train_log.reset()

    def evaluation(self, step: int, result, wall_time_s: float, **columns: float) -> dict[str, float]:
        row = {**eval_row(step, result, wall_time_s), **columns}
        self.eval_log.append(row)
        return row

    def train_row(self, row: dict[str, Any]) -> None:
        self.train_log.append(row)

    def finish(self, *, window: int = 1, **fields: Any) -> dict[str, Any]:
        """Write final.json (final_record's fields; evals come from eval.csv) and return it."""
        final = final_record(evals=self.eval_log.rows(), window=window, **fields)
        write_final(self.out_dir, final)
        return final
