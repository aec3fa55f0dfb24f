"""Snakemake script of rule table4: Table 4 (ADEPT-SAC ablations) from the per-run outputs."""
import sys

from adept.reporting import build_table4, load_runs, load_spec, write_table

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821 (snakemake is injected by Snakemake)
spec = load_spec(snakemake.input.spec)  # noqa: F821
runs = load_runs(spec.runs_dir, [c.method for c in spec.table4], spec.tasks, spec.seeds)
write_table(build_table4(spec, runs), snakemake.output.md, snakemake.output.tex, snakemake.output.html)  # noqa: F821
