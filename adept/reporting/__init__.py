"""Aggregation of the per-run outputs into the paper's Table 1, Figure 3 and Table 4, and the performance profiles.

Everything here reads only `results/runs/<method>/<env>-<dataset>/seed<seed>/` (final.json,
eval.csv) and the report spec the workflow writes; missing runs show as "—", nothing is filled in.
"""
from .figure import plot_figure3, plot_performance_profiles
from .runs import Run, load_runs, read_final, run_dir, write_scores_csv
from .spec import MethodColumn, ReportSpec, load_spec
from .stats import ScoreMatrix, aggregate_estimates, probability_of_improvement, score_matrix
from .tables import build_table1, build_table4, render_latex, render_markdown, write_table

__all__ = [
    "MethodColumn", "ReportSpec", "Run", "ScoreMatrix", "aggregate_estimates", "build_table1", "build_table4",
    "load_runs", "load_spec", "plot_figure3", "plot_performance_profiles", "probability_of_improvement",
    "read_final", "render_latex", "render_markdown", "run_dir", "score_matrix", "write_scores_csv", "write_table",
]
