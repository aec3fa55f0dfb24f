"""What to aggregate: the report spec the workflow writes (results/report_spec.json) from its config.

The spec names the grid (envs, datasets, seeds), the run directory, the columns of Table 1 and
Table 4 (run directory name, display label, the paper column it is compared with) and the curves of
Figure 3. Tables can be rebuilt from it by hand at any time (`python -m adept.reporting`), also
while runs are missing: they show as "—".
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adept.methods import method_label

from .reference import TABLE1_COLUMN_OF_METHOD, TABLE4_COLUMNS, Task, paper_task_order


@dataclass(frozen=True)
class MethodColumn:
    """One measured column: runs under `runs_dir/<method>/`, shown as `label`, compared with `paper_column`."""

    method: str
    label: str
    paper_column: str | None = None


@dataclass(frozen=True)
class Bootstrap:
    """rliable's stratified bootstrap: `reps` for the aggregates (rliable's default), `comparison_reps`
    for probabilities of improvement and performance profiles (rliable's README and profile default;
    each replicate of a probability runs one Mann-Whitney test per task, ~25x an IQM's cost)."""

    reps: int = 50_000
    comparison_reps: int = 2_000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class ReportSpec:
    runs_dir: Path                          # relative: to the working directory (to the file in load_spec)
    envs: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    table1: tuple[MethodColumn, ...]
    table4: tuple[MethodColumn, ...]        # first column is the baseline (ADEPT-SAC)
    figure3_env: str | None
    figure3_methods: tuple[MethodColumn, ...]
    figure3_band: str = "std"               # "std" or "ci" (bootstrap CI of the mean over seeds)
    bootstrap: Bootstrap = Bootstrap()

    @property
    def tasks(self) -> list[Task]:
        return paper_task_order(self.envs, self.datasets)

    @property
    def methods(self) -> list[str]:
        """Every run directory any table or the figure reads, once each."""
        columns = (*self.table1, *self.table4, *self.figure3_methods)
        return list(dict.fromkeys(c.method for c in columns))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReportSpec":
        """Build from the JSON layout written by the workflow (see `workflow/rules/common.smk`)."""
        try:
            labels = dict(data.get("labels", {}))
            table1 = tuple(
                MethodColumn(m, labels.get(m, method_label(m)), TABLE1_COLUMN_OF_METHOD.get(m))
                for m in data["table1"]["methods"]
            )
            table4 = tuple(
                MethodColumn(c["method"], c.get("label") or labels.get(c["method"], method_label(c["method"])),
                             c.get("paper_column"))
                for c in data["table4"]["columns"]
            )
            figure = data.get("figure3", {})
            figure_methods = tuple(
                MethodColumn(m, labels.get(m, method_label(m))) for m in figure.get("methods", [])
            )
            spec = cls(
                runs_dir=Path(data["runs_dir"]),
                envs=tuple(data["envs"]),
                datasets=tuple(data["datasets"]),
                seeds=tuple(int(s) for s in data["seeds"]),
                table1=table1,
                table4=table4,
                figure3_env=figure.get("env"),
                figure3_methods=figure_methods,
                figure3_band=figure.get("band", "std"),
                bootstrap=Bootstrap(**data.get("bootstrap", {})),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"report spec is missing or has a malformed entry: {err!r}") from None
        spec.validate()
        return spec

    def validate(self) -> None:
        unknown = [c.paper_column for c in self.table4 if c.paper_column and c.paper_column not in TABLE4_COLUMNS]
        if unknown:
            raise ValueError(f"table4 paper_column(s) {unknown} are not in the paper's Table 4 {list(TABLE4_COLUMNS)}")
        if self.figure3_band not in ("std", "ci"):
            raise ValueError(f"figure3 band must be 'std' or 'ci', got {self.figure3_band!r}")
        if self.figure3_methods and self.figure3_env not in self.envs:
            raise ValueError(f"figure3 env {self.figure3_env!r} is not one of the configured envs {list(self.envs)}")
        if not self.seeds:
            raise ValueError("the report spec lists no seeds")
        boot = self.bootstrap
        if boot.reps < 1 or boot.comparison_reps < 1 or not 0.0 < boot.confidence < 1.0:
            raise ValueError(f"bootstrap needs reps >= 1, comparison_reps >= 1 and 0 < confidence < 1, got {boot}")


def load_spec(path: str | Path) -> ReportSpec:
    """Read a spec file; a relative runs_dir is relative to the spec's folder (the workflow writes "runs")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report spec {path} does not exist; the workflow writes it (snakemake {path})")
    with path.open() as f:
        spec = ReportSpec.from_dict(json.load(f))
    return dataclasses.replace(spec, runs_dir=path.parent / spec.runs_dir)
