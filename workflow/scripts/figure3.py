"""Snakemake script of rule figure3: the training curves of Figure 3 (PNG and PDF) from eval.csv files."""
import sys

from adept.reporting import load_runs, load_spec, plot_figure3

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (snakemake is injected by Snakemake)
spec = load_spec(snakemake.input.spec)  # noqa: F821
runs = load_runs(spec.runs_dir, [c.method for c in spec.figure3_methods],
                 [(spec.figure3_env, dataset) for dataset in spec.datasets], spec.seeds)
plot_figure3(spec, runs, snakemake.output.png, snakemake.output.pdf)  # noqa: F821
