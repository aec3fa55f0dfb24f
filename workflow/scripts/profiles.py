"""Snakemake script of rule profiles: performance profiles of the Table 1 methods (PNG and PDF)."""
import sys

from adept.reporting import load_runs, load_spec, plot_performance_profiles

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (snakemake is injected by Snakemake)
spec = load_spec(snakemake.input.spec)  # noqa: F821
runs = load_runs(spec.runs_dir, [c.method for c in spec.table1], spec.tasks, spec.seeds)
plot_performance_profiles(spec, runs, snakemake.output.png, snakemake.output.pdf)  # noqa: F821
