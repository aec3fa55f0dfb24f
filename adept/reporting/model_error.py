"""The model-error figure: is ADEPT's world model closer to the simulator on its policy's states than Diff+X's?

ADEPT's claim rests on importance-sampled world-model updates keeping the model accurate where
the current policy goes, which a model fitted once (Diff+X) is not. The runner measures that
against the MuJoCo simulator at every evaluation of adept-* and diff-* runs (eval.csv, `gt/`
columns, adept/ground_truth.py), and logs ADEPT's importance-weight health in train.csv. This
module draws, for every (ADEPT-X, Diff+X) pair of the spec and every (env, dataset) column:

- row "onestep": next-state MSE of one model step against the simulator, actions from the current
  policy (`gt/onestep_state_mse_policy`);
- row "rollout": H-step open-loop rollout state MSE (`gt/rollout_state_mse_mean`, the mean over
  t = 1..H; or the last step, `gt/rollout_state_mse_t{H}`, with `horizon_error="final"`);
- row "ess": ESS / N of ADEPT's importance weights (`iw/is_ess_fraction` in train.csv; Diff+X has
  no importance weights).

Both state rows show the simulator floor (`gt/sim_floor_state_mse`: the dataset's own next states
against the simulator, restored from the dataset's qpos/qvel) as a dashed line: a model that fits
the file perfectly is that far from the simulator. Errors are in the world model's normalized units.
Lines are the mean over seeds with the band of `figure.curve_band`, as in Figure 3.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from adept.methods import method_label

from .figure import BANDS, band_description, curve_band, method_style, save_figure, seed_curves
from .reference import Task, paper_task_order
from .runs import Run, column_curve, load_runs, read_run_csv
from .spec import MethodColumn, ReportSpec, load_spec

ONESTEP_COLUMN = "gt/onestep_state_mse_policy"
ROLLOUT_MEAN_COLUMN = "gt/rollout_state_mse_mean"
ROLLOUT_STEP_COLUMN = re.compile(r"gt/rollout_state_mse_t(\d+)")
FLOOR_COLUMN = "gt/sim_floor_state_mse"
ESS_COLUMN = "iw/is_ess_fraction"
ROWS = ("onestep", "rollout", "ess")
HORIZON_ERRORS = ("mean", "final")
YSCALES = ("auto", "log", "linear")
LOG_SCALE_SPAN = 10.0  # yscale "auto": log axis when a panel's positive values span at least this factor

NO_GT = ("no gt/ columns in eval.csv\n(no simulator states (qpos/qvel) in the dataset,\n"
         "or runs older than the ground truth)")


@dataclass(frozen=True)
class MethodPair:
    adept: MethodColumn
    diff: MethodColumn


@dataclass(frozen=True)
class ModelErrorSpec:
    """The figure's section of the report spec (the workflow's `figure_model_error` config)."""

    pairs: tuple[MethodPair, ...]
    tasks: tuple[Task, ...]          # panel columns, in the paper's order
    band: str = "std"                # figure.curve_band: std | ci | minmax
    horizon_error: str = "mean"      # rollout row: mean over t = 1..H, or the last step t = H
    yscale: str = "auto"

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m.method for pair in self.pairs for m in (pair.adept, pair.diff)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> "ModelErrorSpec":
        labels = dict(labels or {})

        def column(method: str) -> MethodColumn:
            return MethodColumn(method, labels.get(method, method_label(method)))

        try:
            pairs = tuple(MethodPair(column(p["adept"]), column(p["diff"])) for p in data["pairs"])
            tasks = [tuple(task) for task in data["tasks"]]
            ordered = paper_task_order(dict.fromkeys(e for e, _ in tasks), dict.fromkeys(d for _, d in tasks))
            spec = cls(pairs=pairs, tasks=tuple(task for task in ordered if task in tasks),
                       band=data.get("band", "std"), horizon_error=data.get("horizon_error", "mean"),
                       yscale=data.get("yscale", "auto"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"report spec: figure_model_error is missing or has a malformed entry: {err!r}") from None
        spec.validate()
        return spec

    def validate(self) -> None:
        for name, value, valid in (("band", self.band, BANDS), ("horizon_error", self.horizon_error, HORIZON_ERRORS),
                                   ("yscale", self.yscale, YSCALES)):
            if value not in valid:
                raise ValueError(f"figure_model_error.{name} must be one of {list(valid)}, got {value!r}")
        for pair in self.pairs:
            if not (pair.adept.method.startswith("adept-") and pair.diff.method.startswith("diff-")):
                raise ValueError(f"figure_model_error pair {pair.adept.method!r} / {pair.diff.method!r}: the first "
                                 "must be an adept-<learner> method and the second a diff-<learner> method")


def load_model_error_spec(path: str | Path) -> tuple[ReportSpec, ModelErrorSpec | None]:
    """The report spec and its figure_model_error section (None when absent or without pairs)."""
    report = load_spec(path)
    data = json.loads(Path(path).read_text())
    section = data.get("figure_model_error")
    if not section or not section.get("pairs"):
        return report, None
    return report, ModelErrorSpec.from_dict(section, data.get("labels", {}))


# ----------------------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class Series:
    """One line of a panel: a method's mean over seeds and its band, on the steps all its seeds share."""

    method: str
    label: str
    seeds: tuple[int, ...]
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class Panel:
    row: str                       # one of ROWS
    task: Task
    series: tuple[Series, ...]
    floor: float | None = None     # mean simulator floor over the panel's runs (state rows only)
    note: str | None = None        # what is missing, shown in the panel
    log_y: bool = False
    horizons: tuple[int, ...] = ()  # H of the rollout row's runs


ColumnOf = Callable[[list[dict[str, Any]]], "str | None"]


def run_horizon(eval_rows: list[dict[str, Any]]) -> int | None:
    """H of a run's ground-truth rollouts: the largest t of its gt/rollout_state_mse_t{t} columns."""
    steps = [int(m.group(1)) for name in (eval_rows[0] if eval_rows else {})
             if (m := ROLLOUT_STEP_COLUMN.fullmatch(name))]
    return max(steps) if steps else None


def rollout_column(horizon_error: str) -> ColumnOf:
    """Which eval.csv column holds a run's H-step error: the mean over t, or t = H."""
    def column_of(eval_rows: list[dict[str, Any]]) -> str | None:
        if horizon_error == "mean":
            return ROLLOUT_MEAN_COLUMN
        horizon = run_horizon(eval_rows)
        return f"gt/rollout_state_mse_t{horizon}" if horizon is not None else None
    return column_of


class _Logs:
    """Each run's eval.csv / train.csv, read once."""

    def __init__(self) -> None:
        self._rows: dict[tuple[Path, str], list[dict[str, Any]]] = {}

    def __call__(self, run: Run, name: str) -> list[dict[str, Any]]:
        key = (run.directory, name)
        if key not in self._rows:
            self._rows[key] = read_run_csv(run, name)
        return self._rows[key]


def _series(column: MethodColumn, runs: Sequence[Run], logs: _Logs, file: str, column_of: ColumnOf,
            band: str, report: ReportSpec) -> Series | None:
    curves, seeds = [], []
    for run in sorted(runs, key=lambda r: r.seed):
        rows = logs(run, file)
        name = column_of(rows)
        curve = column_curve(rows, name) if name else None
        if curve is not None:
            curves.append(curve)
            seeds.append(run.seed)
    if not curves:
        return None
    steps, values = seed_curves(curves)
    mean, low, high = curve_band(values, band, report.bootstrap)
    return Series(column.method, column.label, tuple(seeds), steps, mean, low, high)


def use_log_scale(values: Sequence[np.ndarray], yscale: str) -> bool:
    """`auto`: log when the panel's positive values span at least LOG_SCALE_SPAN (band edges below 0,
    as a std band can have, are left out: a log axis clips them)."""
    if yscale != "auto":
        return yscale == "log"
    flat = np.concatenate([np.ravel(v) for v in values]) if values else np.empty(0)
    positive = flat[np.isfinite(flat) & (flat > 0)]
    return bool(positive.size and positive.max() / positive.min() >= LOG_SCALE_SPAN)


def model_error_panels(report: ReportSpec, figure: ModelErrorSpec,
                       runs: Sequence[Run]) -> dict[tuple[str, Task], Panel]:
    """{(row, task): Panel}: the numbers the figure draws, for every row of ROWS and task of the spec."""
    logs = _Logs()
    panels = {}
    columns: dict[str, tuple[str, ColumnOf, bool]] = {  # row -> (file, column of a run, ADEPT only)
        "onestep": ("eval.csv", lambda rows: ONESTEP_COLUMN, False),
        "rollout": ("eval.csv", rollout_column(figure.horizon_error), False),
        "ess": ("train.csv", lambda rows: ESS_COLUMN, True),
    }
    for task in figure.tasks:
        task_runs = [run for run in runs if run.task == task]
        for row, (file, column_of, adept_only) in columns.items():
            methods = dict.fromkeys(m for pair in figure.pairs
                                    for m in ((pair.adept,) if adept_only else (pair.adept, pair.diff)))
            present = [m for m in methods if any(run.method == m.method for run in task_runs)]
            series, lacking = [], []
            for column in present:
                found = _series(column, [r for r in task_runs if r.method == column.method], logs, file, column_of,
                                figure.band, report)
                if found is None:
                    lacking.append(column)
                else:
                    series.append(found)
            note = None
            if not present:
                note = "no completed runs"
            elif not series:
                note = NO_GT if file == "eval.csv" else f"no {ESS_COLUMN} in train.csv"
            elif lacking:
                note = "no data: " + ", ".join(c.label for c in lacking)
            drawn_runs = [run for run in task_runs if run.method in {m.method for m in present}]
            floor, horizons = None, ()
            if row != "ess":  # the floor is a property of the dataset's states: pooled over all runs and steps
                floors = [curve[1] for run in drawn_runs
                          if (curve := column_curve(logs(run, "eval.csv"), FLOOR_COLUMN)) is not None]
                floor = float(np.concatenate(floors).mean()) if floors else None
            if row == "rollout":
                horizons = tuple(sorted({h for run in drawn_runs
                                         if (h := run_horizon(logs(run, "eval.csv"))) is not None}))
            values = [a for s in series for a in (s.mean, s.low, s.high)] + ([np.array([floor])] if floor else [])
            panels[(row, task)] = Panel(row, task, tuple(series), floor, note, use_log_scale(values, figure.yscale),
                                        horizons)
    return panels


# ----------------------------------------------------------------------------------------- the figure

def _row_label(row: str, figure: ModelErrorSpec, horizons: Sequence[int]) -> str:
    h = "H" if len(horizons) != 1 else f"H = {horizons[0]}"
    if row == "onestep":
        return "one-step state MSE\n(current policy's actions)"
    if row == "rollout":
        return (f"rollout state MSE, mean over\nt = 1..H ({h})" if figure.horizon_error == "mean"
                else f"rollout state MSE at t = H\n({h})")
    return "ESS / N of ADEPT's\nimportance weights"


def plot_model_error(report: ReportSpec, figure: ModelErrorSpec, runs: Sequence[Run], png: str | Path,
                     pdf: str | Path) -> Figure:
    panels = model_error_panels(report, figure, runs)
    tasks = list(figure.tasks)
    fig = Figure(figsize=(max(4.4 * len(tasks), 6.5), 9.0), layout="constrained")
    axes = fig.subplots(len(ROWS), len(tasks), squeeze=False, sharex="col")
    styles = {m: method_style(m, i) for i, m in enumerate(figure.methods)}
    handles: dict[str, Any] = {}
    for r, row in enumerate(ROWS):
        for c, task in enumerate(tasks):
            ax, panel = axes[r][c], panels[(row, task)]
            for series in panel.series:
                style = styles[series.method]
                (line,) = ax.plot(series.steps, series.mean, marker="o", markersize=3, **style)
                ax.fill_between(series.steps, series.low, series.high, color=style["color"], alpha=0.15, linewidth=0)
                handles.setdefault(series.label, line)
            if panel.log_y:
                ax.set_yscale("log")
            if panel.floor is not None and panel.series:
                if panel.floor > 0 or not panel.log_y:
                    handles.setdefault("simulator floor (dataset vs simulator)",
                                       ax.axhline(panel.floor, color="0.35", linestyle="--", linewidth=1.2))
                else:  # 0 on a log axis: the file was made by this very simulator
                    ax.text(0.98, 0.02, "simulator floor = 0", ha="right", va="bottom", fontsize=8, color="0.35",
                            transform=ax.transAxes)
            if row == "ess" and panel.series and not panel.log_y:
                ax.set_ylim(0.0, 1.05)
            if not panel.series:
                ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
            if panel.note:
                centre = not panel.series
                ax.text(0.5 if centre else 0.02, 0.5 if centre else 0.98, panel.note, ha="center" if centre else "left",
                        va="center" if centre else "top", fontsize=9 if centre else 8, transform=ax.transAxes)
            if r == 0:
                ax.set_title(f"{task[0]}-{task[1]}")
            if r == len(ROWS) - 1:
                ax.set_xlabel("gradient steps")
            if c == 0:
                horizons = sorted({h for t in tasks for h in panels[(row, t)].horizons})
                ax.set_ylabel(_row_label(row, figure, horizons))
            ax.grid(alpha=0.3)
    fig.suptitle("World-model error against the MuJoCo simulator\n"
                 "ADEPT (importance-sampled model updates) vs Diff+X (model fitted once)\n"
                 f"mean over seeds, band {band_description(figure.band, report.bootstrap)}; "
                 "errors in the world model's normalized units", fontsize=10)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 3 * len(tasks)),
                   fontsize=9, frameon=False)
    save_figure(fig, png, pdf)
    return fig


def plot_model_error_from_spec(spec_path: str | Path, png: str | Path, pdf: str | Path) -> Figure:
    """Read the report spec and the runs it names, draw the figure (what the workflow's script does)."""
    report, figure = load_model_error_spec(spec_path)
    if figure is None:
        raise ValueError(f"{spec_path} has no figure_model_error pairs; set figure_model_error.pairs in the config "
                         "(or leave it at auto with adept-X and diff-X both configured)")
    runs = load_runs(report.runs_dir, figure.methods, figure.tasks, report.seeds)
    return plot_model_error(report, figure, runs, png, pdf)
