"""Snakemake script of rule scores: results/scores.csv, one row per completed run of the report."""
import sys

from adept.reporting import load_runs, load_spec, write_scores_csv

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (snakemake is injected by Snakemake)
spec = load_spec(snakemake.input.spec)  # noqa: F821
write_scores_csv(load_runs(spec.runs_dir, spec.methods, spec.tasks, spec.seeds), snakemake.output.csv)  # noqa: F821
