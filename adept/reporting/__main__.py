"""`python -m adept.reporting --spec results/report_spec.json`: rebuild every table and figure.

The workflow does this itself once all runs are done; by hand it is useful while runs are missing
(they show as "—") or after editing labels. Writes next to the spec unless --out-dir is given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .figure import plot_figure3, plot_performance_profiles
from .model_error import load_model_error_spec, plot_model_error
from .runs import load_runs, write_scores_csv
from .spec import load_spec
from .tables import build_table1, build_table4, write_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adept.reporting", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--spec", type=Path, default=Path("results/report_spec.json"),
                        help="report spec written by the workflow (default: results/report_spec.json)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write (default: the spec's folder)")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    out = args.out_dir or args.spec.parent
    runs = load_runs(spec.runs_dir, spec.methods, spec.tasks, spec.seeds)
    write_scores_csv(runs, out / "scores.csv")
    write_table(build_table1(spec, runs), out / "table1.md", out / "table1.tex", out / "table1.html")
    plot_performance_profiles(spec, runs, out / "profiles.png", out / "profiles.pdf")
    written = ["scores.csv", "table1.md", "table1.tex", "table1.html", "profiles.png", "profiles.pdf"]
    if spec.table4:
        write_table(build_table4(spec, runs), out / "table4.md", out / "table4.tex", out / "table4.html")
        written += ["table4.md", "table4.tex", "table4.html"]
    if spec.figure3_methods:
        plot_figure3(spec, runs, out / "figure3.png", out / "figure3.pdf")
        written += ["figure3.png", "figure3.pdf"]
    _, model_error = load_model_error_spec(args.spec)
    if model_error is not None:
        plot_model_error(spec, model_error, load_runs(spec.runs_dir, model_error.methods, model_error.tasks, spec.seeds),
                         out / "figure_model_error.png", out / "figure_model_error.pdf")
        written += ["figure_model_error.png", "figure_model_error.pdf"]
    print(f"{len(runs)} completed runs; wrote " + ", ".join(str(out / name) for name in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
