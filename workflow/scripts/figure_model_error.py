"""Snakemake script of rule figure_model_error: world-model error against the simulator, ADEPT vs Diff+X (PNG, PDF)."""
import sys

from adept.reporting.model_error import plot_model_error_from_spec

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (snakemake is injected by Snakemake)
plot_model_error_from_spec(snakemake.input.spec, snakemake.output.png, snakemake.output.pdf)  # noqa: F821
