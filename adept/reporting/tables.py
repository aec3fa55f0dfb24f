"""Tables 1 and 4: our final scores beside the paper's, written as Markdown, LaTeX and HTML.

A table is built once as a grid of `Cell`s (what to show) and then rendered by one small function
per format (how to show it), so the three files always hold the same numbers.

Per row (env, dataset) a measured cell is the mean ± std over seeds of `final_score`; the paper's
value and the difference ours − paper stand beside it. Below the rows: the Average row in the
paper's convention (mean of the row means ± mean of the row stds), the across-task IQM, mean,
median and optimality gap with stratified-bootstrap confidence intervals, and in Table 1 the block
"ADEPT vs baselines": the probability of improvement of every ADEPT method over every other
column. All of these statistics are rliable's (`stats.py`).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from adept.outputs import atomic_write_text

from . import stats
from .reference import TABLE1_COLUMNS, ReportedScore, Task, table1_reported, table4_reported
from .runs import Run, provenance, scores_by_task
from .spec import Bootstrap, MethodColumn, ReportSpec

EMPTY = "—"
CellKind = Literal["empty", "measured", "reported", "interval", "probability"]


@dataclass(frozen=True)
class Column:
    key: str                                   # run directory name, or the paper's column name
    label: str
    measured: bool                             # False: reported in the paper only, not run here
    reported: Mapping[Task, ReportedScore] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    kind: CellKind
    value: float | None = None
    std: float | None = None
    paper: ReportedScore | None = None         # the paper's value beside a measured one
    interval: tuple[float, float] | None = None
    seeds: int = 0                             # seeds behind a measured value
    expected_seeds: int = 0


@dataclass(frozen=True)
class Table:
    title: str
    label: str                                 # LaTeX label and file stem, e.g. "table1"
    row_labels: list[tuple[str, str]]          # (dataset, env); summary rows have env ""
    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str]
    sections: dict[int, str] = field(default_factory=dict)  # row index -> title of the block it starts


# ---------------------------------------------------------------------------------------------- build

def _measured_cell(scores: np.ndarray | None, paper: ReportedScore | None, expected: int) -> Cell:
    if scores is None or scores.size == 0:
        return Cell("empty")
    # Population std (ddof=0) over seeds, as np.std; see docs/notes/workflow.md.
    return Cell("measured", float(scores.mean()), float(scores.std()), paper, seeds=int(scores.size),
                expected_seeds=expected)


def _average_reported(reported: Mapping[Task, ReportedScore], tasks: Sequence[Task]) -> ReportedScore | None:
    values = [reported.get(task) for task in tasks]
    if not values or any(v is None for v in values):
        return None
    stds = [v.std for v in values]
    return ReportedScore(float(np.mean([v.mean for v in values])),
                         float(np.mean(stds)) if all(s is not None for s in stds) else None)


def _summary_cells(column: Column, by_task: Mapping[Task, np.ndarray], matrix: stats.ScoreMatrix | None,
                   tasks: Sequence[Task], expected: int, bootstrap: Bootstrap) -> list[Cell]:
    """Average row and rliable's aggregates of one column; "—" unless every row has at least one run."""
    no_aggregates = [Cell("empty")] * len(stats.AGGREGATES)
    paper_average = _average_reported(column.reported, tasks)
    if not column.measured:
        average = Cell("reported", paper_average.mean, paper_average.std) if paper_average else Cell("empty")
        return [average, *no_aggregates]
    if matrix is None:
        return [Cell("empty"), *no_aggregates]
    per_task = [by_task[task] for task in tasks]
    average = Cell("measured", float(np.mean([s.mean() for s in per_task])),
                   float(np.mean([s.std() for s in per_task])), paper_average,
                   seeds=min(s.size for s in per_task), expected_seeds=expected)
    estimates = stats.aggregate_estimates(matrix, reps=bootstrap.reps, confidence=bootstrap.confidence,
                                          seed=bootstrap.seed)
    return [average, *(Cell("interval", estimates[name].value, interval=estimates[name].ci)
                       for name in stats.AGGREGATES)]


def _improvement_row(improver: Column, columns: Sequence[Column], matrices: Mapping[str, stats.ScoreMatrix | None],
                     bootstrap: Bootstrap) -> list[Cell]:
    """P(improver > column) with its CI in every other column that has runs on every row."""
    row = []
    for column in columns:
        x, y = matrices.get(improver.key), matrices.get(column.key)
        if column.key == improver.key or x is None or y is None:
            row.append(Cell("empty"))
            continue
        estimate = stats.probability_of_improvement(x, y, reps=bootstrap.comparison_reps,
                                                    confidence=bootstrap.confidence, seed=bootstrap.seed)
        row.append(Cell("probability", estimate.value, interval=estimate.ci))
    return row


def comparison_table(title: str, label: str, spec: ReportSpec, columns: Sequence[Column],
                     runs: Sequence[Run], notes: Sequence[str], improvers: Sequence[Column] = ()) -> Table:
    """Rows, rliable's aggregates and, for every column in `improvers`, its probabilities of improvement."""
    tasks = spec.tasks
    expected = len(spec.seeds)
    by_column = {c.key: scores_by_task(runs, c.key) for c in columns if c.measured}
    matrices = {key: stats.score_matrix(by_task, tasks, key) for key, by_task in by_column.items()}
    rows = []
    for task in tasks:
        row = []
        for column in columns:
            paper = column.reported.get(task)
            if column.measured:
                row.append(_measured_cell(by_column[column.key].get(task), paper, expected))
            else:
                row.append(Cell("reported", paper.mean, paper.std) if paper else Cell("empty"))
        rows.append(row)
    summary = [_summary_cells(c, by_column.get(c.key, {}), matrices.get(c.key), tasks, expected, spec.bootstrap)
               for c in columns]
    confidence = f"{spec.bootstrap.confidence:.0%}"
    summary_labels = [("Average", ""), *((f"{name} [{confidence} CI]", "") for name in stats.AGGREGATES)]
    rows.extend([cells[i] for cells in summary] for i in range(len(summary_labels)))
    row_labels = [(dataset, env) for env, dataset in tasks] + summary_labels
    sections = {}
    if improvers:
        sections[len(rows)] = "ADEPT vs baselines: probability of improvement"
        for improver in improvers:
            rows.append(_improvement_row(improver, columns, matrices, spec.bootstrap))
            row_labels.append((f"P({improver.label} > column) [{confidence} CI]", ""))
    column_runs = [run for run in runs if run.method in by_column]
    sources = {run.final.get("source") for run in column_runs}
    labels = {c.key: c.label for c in columns}
    boot = spec.bootstrap
    improvement_notes = [
        f"P(X > column) [{confidence} CI]: rliable's probability of improvement, the probability that a "
        "run of X scores higher than a run of the column's method on the same row (ties count 1/2), "
        "averaged over the rows; above 0.5, X tends to score higher. Intervals from rliable's stratified "
        f"bootstrap of both methods' runs, each resampled independently ({boot.comparison_reps} resamples)."
    ] if improvers else []
    all_notes = [
        "Cells: mean ± std over seeds of the final D4RL normalized score (0-100) of our runs; in "
        "parentheses the paper's value and the difference ours − paper. [k/n]: only k of the n "
        f"configured seeds have finished. {EMPTY}: no completed run.",
        *notes,
        "Average: mean of the row means ± mean of the row stds (the paper's convention), next to the "
        "paper's average over the same rows.",
        f"IQM / Mean / Median / Optimality gap [{confidence} CI]: computed with rliable {stats.RLIABLE_VERSION} "
        "(Agarwal et al., 2021) from the runs of all rows: interquartile mean of all runs; mean and median "
        "of the row means; optimality gap = 100 − mean of min(score, 100) over all runs (lower is better). "
        f"Percentile intervals from rliable's stratified bootstrap ({boot.reps} resamples of the seeds "
        f"within each row, seed {boot.seed}).",
        *(f"{labels[key]}: rliable needs the same number of runs on every row, so its statistics use the "
          f"first {m.runs} run(s) (seed order) of each row; {m.dropped} run(s) left out."
          for key, m in matrices.items() if m is not None and m.dropped),
        *improvement_notes,
        *provenance(column_runs, spec.seeds),
    ]
    if "generated" in sources:
        all_notes.append("These runs use locally generated datasets (D4RL recipe), not the official D4RL "
                         "files: their scores are not directly comparable with the paper's.")
    return Table(title, label, row_labels, list(columns), rows, all_notes, sections)


def _measured_columns(methods: Sequence[MethodColumn], reported: Mapping[str, Mapping[Task, ReportedScore]]
                      ) -> list[Column]:
    return [Column(m.method, m.label, True, reported.get(m.paper_column, {}) if m.paper_column else {})
            for m in methods]


def build_table1(spec: ReportSpec, runs: Sequence[Run]) -> Table:
    """Table 1: configured methods, then the paper's columns that no configured method reproduces;
    below the aggregates, P(ADEPT-X > column) for every configured ADEPT method."""
    reported = table1_reported()
    columns = _measured_columns(spec.table1, reported)
    adept = [c for c in columns if c.key.startswith("adept-")]
    reproduced = {m.paper_column for m in spec.table1}
    columns += [Column(name, f"{name} (paper)", False, reported[name])
                for name in TABLE1_COLUMNS if name not in reproduced]
    notes = ["(paper): reported in the paper, not run by this harness. The paper's averages are "
             "recomputed from its rows (its printed Average row swaps MOPO and COMBO)."]
    return comparison_table("Table 1: D4RL normalized scores, ours vs. the paper", "table1", spec, columns,
                            runs, notes, improvers=adept)


def build_table4(spec: ReportSpec, runs: Sequence[Run]) -> Table:
    """Table 4: ADEPT-SAC (baseline) and its ablations (denoising steps K, IS batch B_m, clipping)."""
    columns = _measured_columns(spec.table4, table4_reported())
    notes = ["Baseline: ADEPT-SAC as configured (paper: K = 10, B_m = 1024, with clipping); every other "
             "column changes one of these."]
    return comparison_table("Table 4: ADEPT-SAC ablations, ours vs. the paper", "table4", spec, columns,
                            runs, notes)


# --------------------------------------------------------------------------------------------- render

def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _interval_parts(cell: Cell) -> tuple[str, str, str]:
    """Value, low, high: scores with one decimal, probabilities with two."""
    fmt = (lambda x: f"{x:.2f}") if cell.kind == "probability" else _fmt
    return fmt(cell.value), fmt(cell.interval[0]), fmt(cell.interval[1])


def _cell_text(cell: Cell) -> str:
    """Plain-text form shared by Markdown and HTML."""
    if cell.kind == "empty":
        return EMPTY
    if cell.kind in ("interval", "probability"):
        value, low, high = _interval_parts(cell)
        return f"{value} [{low}, {high}]"
    text = _fmt(cell.value) if cell.std is None else f"{_fmt(cell.value)} ± {_fmt(cell.std)}"
    if cell.kind == "measured":
        if cell.paper is not None:
            paper = _fmt(cell.paper.mean) if cell.paper.std is None else f"{_fmt(cell.paper.mean)} ± {_fmt(cell.paper.std)}"
            text += f" ({paper}, {cell.value - cell.paper.mean:+.1f})"
        if cell.seeds < cell.expected_seeds:
            text += f" [{cell.seeds}/{cell.expected_seeds}]"
    return text


def _latex_escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "—": "--", "−": "-", "±": r"$\pm$", ">": r"$>$", "<": r"$<$"}
    return "".join(replacements.get(ch, ch) for ch in text)


def _cell_latex(cell: Cell) -> str:
    if cell.kind == "empty":
        return "--"
    if cell.kind in ("interval", "probability"):
        value, low, high = _interval_parts(cell)
        return f"${value}$ {{\\scriptsize [{low}, {high}]}}"
    text = f"${_fmt(cell.value)}$" if cell.std is None else f"${_fmt(cell.value)} \\pm {_fmt(cell.std)}$"
    if cell.kind == "measured":
        extras = []
        if cell.paper is not None:
            paper = _fmt(cell.paper.mean) if cell.paper.std is None else f"{_fmt(cell.paper.mean)} \\pm {_fmt(cell.paper.std)}"
            extras.append(f"(${paper}$, ${cell.value - cell.paper.mean:+.1f}$)")
        if cell.seeds < cell.expected_seeds:
            extras.append(f"[{cell.seeds}/{cell.expected_seeds}]")
        if extras:
            text += " {\\scriptsize " + " ".join(extras) + "}"
    return text


def render_markdown(table: Table) -> str:
    header = ["Dataset", "Environment", *(c.label for c in table.columns)]
    lines = [f"## {table.title}", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join([":--", ":--"] + ["--:"] * len(table.columns)) + "|"]
    for i, ((dataset, env), cells) in enumerate(zip(table.row_labels, table.rows)):
        if i in table.sections:
            lines.append("| " + " | ".join([f"*{table.sections[i]}*", "", *([""] * len(cells))]) + " |")
        first = f"**{dataset}**" if not env else dataset
        lines.append("| " + " | ".join([first, env, *(_cell_text(c) for c in cells)]) + " |")
    lines.append("")
    lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def render_latex(table: Table) -> str:
    n_tasks = sum(1 for _, env in table.row_labels if env)
    lines = [
        f"% {table.title}. Generated by adept.reporting from the per-run outputs; do not edit.",
        *(f"% {note}" for note in table.notes),
        "\\begin{table*}[t]", "\\centering", "\\small",
        f"\\caption{{{_latex_escape(table.title)}}}", f"\\label{{tab:{table.label}}}",
        "\\resizebox{\\linewidth}{!}{%",
        "\\begin{tabular}{ll" + "r" * len(table.columns) + "}", "\\toprule",
        " & ".join(["Dataset", "Environment", *(_latex_escape(c.label) for c in table.columns)]) + " \\\\",
        "\\midrule",
    ]
    for i, ((dataset, env), cells) in enumerate(zip(table.row_labels, table.rows)):
        if i == n_tasks:
            lines.append("\\midrule")
        if i in table.sections:
            title = _latex_escape(table.sections[i])
            lines += ["\\midrule", f"\\multicolumn{{{2 + len(cells)}}}{{l}}{{\\emph{{{title}}}}} \\\\"]
        labels = [_latex_escape(dataset), _latex_escape(env)] if env else [f"\\multicolumn{{2}}{{l}}{{{_latex_escape(dataset)}}}"]
        lines.append(" & ".join([*labels, *(_cell_latex(c) for c in cells)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}", "\\par\\smallskip", "\\begin{minipage}{\\linewidth}\\footnotesize",
              *(_latex_escape(note) + "\\par" for note in table.notes), "\\end{minipage}", "\\end{table*}"]
    return "\n".join(lines) + "\n"


def render_html(table: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["Dataset", "Environment", *(c.label for c in table.columns)])
    body = []
    for i, ((dataset, env), cells) in enumerate(zip(table.row_labels, table.rows)):
        if i in table.sections:
            body.append(f'<tr><th colspan="{2 + len(cells)}" class="section">{esc(table.sections[i])}</th></tr>')
        tds = "".join(f'<td class="num">{esc(_cell_text(c))}</td>' for c in cells)
        body.append(f"<tr><th>{esc(dataset)}</th><td>{esc(env)}</td>{tds}</tr>")
    notes = "".join(f"<li>{esc(note)}</li>" for note in table.notes)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{esc(table.title)}</title><style>"
        "body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}td.num{text-align:right}"
        "th.section{text-align:left;font-style:italic}"
        "</style></head><body>\n"
        f"<h2>{esc(table.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(body) + f"\n</tbody></table>\n<ul>{notes}</ul>\n</body></html>\n"
    )


def write_table(table: Table, markdown: str | Path, latex: str | Path, html_path: str | Path | None = None) -> None:
    """Write the Markdown, LaTeX and (optionally) HTML files, each atomically."""
    atomic_write_text(markdown, render_markdown(table))
    atomic_write_text(latex, render_latex(table))
    if html_path is not None:
        atomic_write_text(html_path, render_html(table))
