"""Aggregation of the per-run outputs into the paper's Table 1, Figure 3 and Table 4.

Everything here reads only `results/runs/<method>/<env>-<dataset>/seed<seed>/` (final.json,
eval.csv) and the report spec the workflow writes; missing runs show as "—", nothing is filled in.
"""
from .figure import plot_figure3
from .runs import Run, load_runs, read_final, run_dir, write_scores_csv
from .spec import MethodColumn, ReportSpec, load_spec
from .stats import aggregate_scores, iqm, stratified_bootstrap_ci
from .tables import build_table1, build_table4, render_latex, render_markdown, write_table

__all__ = [
    "MethodColumn", "ReportSpec", "Run", "aggregate_scores", "build_table1", "build_table4", "iqm", "load_runs",
    "load_spec", "plot_figure3", "read_final", "render_latex", "render_markdown", "run_dir",
    "stratified_bootstrap_ci", "write_scores_csv", "write_table",
]
