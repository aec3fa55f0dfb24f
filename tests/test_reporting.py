"""adept.reporting: IQM and stratified bootstrap, per-run output reading, Tables 1/4, Figure 3.

Runs are per-run output folders written here in the contract's layout (docs/architecture.md).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from adept.reporting import (
    ReportSpec, aggregate_scores, build_table1, build_table4, iqm, load_runs, plot_figure3, read_final,
    render_latex, render_markdown, stratified_bootstrap_ci, write_table,
)
from adept.reporting.__main__ import main as reporting_main
from adept.reporting.figure import seed_curves
from adept.reporting.reference import TABLE1_COLUMNS, method_label, paper_task_order
from adept.reporting.stats import bootstrap_mean_band, mean, trimmed_mean

REFERENCE = Path(__file__).resolve().parents[1] / "adept" / "reporting" / "reference"
NUMBER = r"-?\d+\.\d"


# ------------------------------------------------------------------------------------------ stats

def test_iqm_of_known_arrays():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)          # drops 1, 2 and 7, 8
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)        # floor(0.25 * 5) = 1 from each end
    assert iqm([5.0, 7.0]) == pytest.approx(6.0)               # too few to trim
    batch = np.array([np.arange(1, 9), np.arange(1, 9) * 10])
    np.testing.assert_allclose(iqm(batch, axis=-1), [4.5, 45.0])
    with pytest.raises(ValueError, match="trim"):
        trimmed_mean([1, 2], 0.5)
    with pytest.raises(ValueError, match="empty"):
        iqm(np.array([]))


def test_stratified_bootstrap_keeps_every_task_intact():
    # Task A always scores 0 (3 runs), task B always 100 (2 runs). Resampling within tasks keeps 3 zeros
    # and 2 hundreds in every replicate, so the CI of the mean collapses to 40; pooled resampling would not.
    tasks = [np.zeros(3), np.full(2, 100.0)]
    assert stratified_bootstrap_ci(tasks, mean, reps=500) == pytest.approx((40.0, 40.0))
    pooled = np.concatenate(tasks)
    rng = np.random.default_rng(0)
    unstratified = pooled[rng.integers(0, 5, size=(500, 5))].mean(axis=1)
    assert unstratified.min() < 40.0 < unstratified.max()


def test_bootstrap_ci_covers_the_truth_at_its_nominal_rate():
    # 9 tasks x 5 seeds, normal scores around task-specific means: the 95% CI of the mean should
    # contain the true mean in about 95% of 300 repeated experiments (percentile bootstrap is a bit
    # liberal with 5 seeds per task, hence the lower bound).
    rng = np.random.default_rng(1)
    task_means = np.linspace(10, 90, 9)
    covered = 0
    for trial in range(300):
        tasks = [rng.normal(m, 8.0, size=5) for m in task_means]
        low, high = stratified_bootstrap_ci(tasks, mean, reps=1000, seed=trial)
        covered += low <= task_means.mean() <= high
    assert 0.85 <= covered / 300 <= 0.99


def test_aggregate_scores_and_ci_order():
    rng = np.random.default_rng(2)
    tasks = [rng.normal(50, 5, size=5) for _ in range(4)]
    result = aggregate_scores(tasks, reps=2000)
    pooled = np.concatenate(tasks)
    assert result.iqm == pytest.approx(iqm(pooled)) and result.mean == pytest.approx(pooled.mean())
    assert result.iqm_ci[0] < result.iqm < result.iqm_ci[1]
    assert result.mean_ci[0] < result.mean < result.mean_ci[1]
    assert (result.runs, result.tasks) == (20, 4)
    # Deterministic given the seed.
    assert aggregate_scores(tasks, reps=2000).iqm_ci == result.iqm_ci
    with pytest.raises(ValueError, match="at least one run"):
        stratified_bootstrap_ci([np.array([1.0]), np.array([])])


def test_bootstrap_mean_band_brackets_the_curve():
    samples = np.array([[0.0, 10.0, 20.0], [2.0, 12.0, 26.0], [4.0, 14.0, 23.0]])
    low, high = bootstrap_mean_band(samples, reps=2000)
    assert np.all(low <= samples.mean(axis=0)) and np.all(samples.mean(axis=0) <= high)
    assert np.all(low >= samples.min(axis=0)) and np.all(high <= samples.max(axis=0))


# ---------------------------------------------------------------------------------- reference data

def test_reference_copies_match_the_paper_folder_and_orders():
    shared = Path("/work/shared/paper")
    if shared.is_dir():
        for name in ("table1_reported.csv", "table4_reported.csv"):
            assert (REFERENCE / name).read_text() == (shared / name).read_text()
    assert paper_task_order(["hopper", "halfcheetah", "walker2d"], ["medium-replay", "random"]) == [
        ("halfcheetah", "random"), ("walker2d", "random"), ("hopper", "random"),
        ("halfcheetah", "medium-replay"), ("walker2d", "medium-replay"), ("hopper", "medium-replay")]
    assert [method_label(m) for m in ("adept-iql", "diff-sac", "td3bc", "adept-bc", "random")] == [
        "ADEPT-IQL", "Diff+SAC", "TD3+BC", "ADEPT-BC", "random"]


# ------------------------------------------------------------------------------------- run fixtures

def write_run(runs_dir: Path, method: str, env: str, dataset: str, seed: int, score: float,
              curve: list[float] | None = None, **extra) -> Path:
    """A completed run in the contract's layout (eval.csv, train.csv, final.json last)."""
    directory = runs_dir / method / f"{env}-{dataset}" / f"seed{seed}"
    directory.mkdir(parents=True)
    curve = curve if curve is not None else [score / 2, score]
    with open(directory / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "return_mean", "return_std", "score_mean", "score_std", "episode_length_mean",
                         "wall_time_s"])
        for i, value in enumerate(curve):
            writer.writerow([(i + 1) * 100, value * 10, 1.0, value, 0.5, 1000, i])
    (directory / "train.csv").write_text("step,loss\n100,1.0\n")
    final = {"method": method, "env": env, "dataset": dataset, "seed": seed, "final_score": score,
             "steps": 100 * len(curve), "source": "generated", "env_id": f"{env.capitalize()}-v4",
             "versions": {"gymnasium": "1.4.0", "mujoco": "3.9.9", "commit": "abc1234"}, **extra}
    (directory / "final.json").write_text(json.dumps(final))
    return directory


def make_spec(runs_dir: Path, **changes) -> ReportSpec:
    data = {
        "runs_dir": str(runs_dir), "envs": ["hopper", "halfcheetah"], "datasets": ["random", "medium"],
        "seeds": [0, 1, 2], "labels": {"random": "Random policy"},
        "table1": {"methods": ["iql", "adept-sac", "bc", "random"]},
        "table4": {"columns": [{"method": "adept-sac", "label": "baseline", "paper_column": "baseline"},
                               {"method": "adept-sac_K5", "label": "K=5", "paper_column": "K=5"}]},
        "figure3": {"env": "halfcheetah", "methods": ["adept-sac", "iql"], "band": "std"},
        "bootstrap": {"reps": 500},
    }
    data.update(changes)
    return ReportSpec.from_dict(data)


SCORES = {0: 10.0, 1: 20.0, 2: 30.0}  # per seed: mean 20, population std 8.16


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    runs = tmp_path / "runs"
    for method in ("iql", "adept-sac", "adept-sac_K5"):
        for env in ("hopper", "halfcheetah"):
            for dataset in ("random", "medium"):
                for seed, score in SCORES.items():
                    if method == "adept-sac" and env == "hopper" and dataset == "medium" and seed == 2:
                        continue  # an unfinished run
                    write_run(runs, method, env, dataset, seed, score + (5.0 if method == "adept-sac" else 0.0))
    return runs


def reported(column: str, env: str, dataset: str, table: str = "table1") -> float:
    with open(REFERENCE / f"{table}_reported.csv") as f:
        for row in csv.DictReader(f):
            if (row["env"], row["dataset"]) == (env, dataset):
                return float(row[column])
    raise KeyError((env, dataset))


def markdown_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """{(dataset, env): cells} of a rendered Markdown table, plus the header under ("header", "")."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = ("header", "") if cells[0] == "Dataset" else (cells[0].strip("*"), cells[1])
            rows[key] = cells[2:]
    return rows


# ------------------------------------------------------------------------------------------ tables

def test_table1_rows_columns_values_and_missing_runs(runs_dir):
    spec = make_spec(runs_dir)
    runs = load_runs(runs_dir, spec.methods, spec.tasks, spec.seeds)
    table = build_table1(spec, runs)
    rows = markdown_rows(render_markdown(table))

    header = rows[("header", "")]
    reported_only = [f"{name} (paper)" for name in TABLE1_COLUMNS if name not in ("IQL", "ADEPT-SAC")]
    assert header == ["IQL", "ADEPT-SAC", "BC", "Random policy", *reported_only]
    task_rows = [key for key in rows if key[1]]
    assert task_rows == [("random", "halfcheetah"), ("random", "hopper"), ("medium", "halfcheetah"),
                         ("medium", "hopper")]
    assert [key[0] for key in rows if not key[1] and key[0] != "header"] == [
        "Average", "IQM [95% CI]", "Mean [95% CI]"]

    # IQL: mean ± std over seeds, then the paper's value and ours - paper.
    paper = reported("IQL", "hopper", "medium")
    assert rows[("medium", "hopper")][0] == f"20.0 ± 8.2 ({paper:.1f}, {20.0 - paper:+.1f})"
    # ADEPT-SAC: the paper's ± std, and a run missing on hopper-medium is counted, not filled in.
    cell = rows[("medium", "hopper")][1]
    assert cell.startswith("20.0 ± 5.0 (32.8 ± 3.9, -12.8)") and cell.endswith("[2/3]")
    # No runs at all: "—" everywhere, also in the summary rows.
    assert all(rows[key][2] == "—" and rows[key][3] == "—" for key in rows if key[0] != "header")
    # Reported-only columns carry the CSV's numbers exactly and no IQM.
    mopo = header.index("MOPO (paper)")
    for dataset, env in task_rows:
        assert float(rows[(dataset, env)][mopo]) == reported("MOPO", env, dataset)
    assert rows[("IQM [95% CI]", "")][mopo] == "—"
    # Average: mean of the row means; the paper's average over the same rows beside it.
    paper_average = np.mean([reported("IQL", env, dataset) for dataset, env in task_rows])
    assert rows[("Average", "")][0].startswith(f"20.0 ± 8.2 ({paper_average:.1f}, ")
    assert re.fullmatch(rf"20\.0 \[{NUMBER}, {NUMBER}\]", rows[("IQM [95% CI]", "")][0])
    notes = render_markdown(table)
    for expected in ("Data source: generated.", "Hopper-v4", "gymnasium 1.4.0", "Seeds: 0, 1, 2 of 3",
                     "Gradient steps per run: 200.", "commit(s): abc1234", "not directly comparable"):
        assert expected in notes


def test_table4_and_latex_hold_the_same_numbers(runs_dir, tmp_path):
    spec = make_spec(runs_dir)
    runs = load_runs(runs_dir, spec.methods, spec.tasks, spec.seeds)
    table = build_table4(spec, runs)
    write_table(table, tmp_path / "t4.md", tmp_path / "t4.tex", tmp_path / "t4.html")
    rows = markdown_rows((tmp_path / "t4.md").read_text())
    assert rows[("header", "")] == ["baseline", "K=5"]
    k5_paper = reported("K=5", "halfcheetah", "random", "table4")
    assert rows[("random", "halfcheetah")][1] == f"20.0 ± 8.2 ({k5_paper:.1f}, {20.0 - k5_paper:+.1f})"
    latex = (tmp_path / "t4.tex").read_text()
    assert f"$20.0 \\pm 8.2$ {{\\scriptsize (${k5_paper:.1f}$, ${20.0 - k5_paper:+.1f}$)}}" in latex
    assert latex.count("\\\\") == 1 + 4 + 3  # header, four rows, three summary rows
    assert "B\\_m = 1024" in latex and "\\begin{tabular}{llrr}" in latex
    html = (tmp_path / "t4.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "20.0 ± 8.2" in html
    assert not list(tmp_path.glob(".t4*"))  # no temporary files left behind


def test_table1_latex_escapes_labels(runs_dir):
    spec = make_spec(runs_dir, labels={"random": "50% random & co_1"})
    latex = render_latex(build_table1(spec, load_runs(runs_dir, spec.methods, spec.tasks, spec.seeds)))
    assert "50\\% random \\& co\\_1" in latex and "TD3+BC (paper)" in latex


def test_bad_final_json_is_rejected_with_its_path(tmp_path):
    directory = write_run(tmp_path, "iql", "hopper", "random", 0, 1.0)
    path = directory / "final.json"
    path.write_text(json.dumps({"env": "hopper", "final_score": "high"}))
    with pytest.raises(ValueError, match="final_score must be a finite number"):
        read_final(path)
    path.write_text(json.dumps({"env": "walker2d", "final_score": 1.0}))
    with pytest.raises(ValueError, match="env='walker2d' but lies in the directory of env='hopper'"):
        load_runs(tmp_path, ["iql"], [("hopper", "random")], [0])
    path.write_text(json.dumps({"env": "hopper"}))
    with pytest.raises(ValueError, match=r"lacks \['final_score'\]"):
        read_final(path)


def test_spec_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not in the paper's Table 4"):
        make_spec(tmp_path, table4={"columns": [{"method": "adept-sac", "paper_column": "K=7"}]})
    with pytest.raises(ValueError, match="figure3 env 'walker2d' is not one of the configured envs"):
        make_spec(tmp_path, figure3={"env": "walker2d", "methods": ["iql"]})
    with pytest.raises(ValueError, match="missing or has a malformed entry"):
        ReportSpec.from_dict({"runs_dir": "x"})


# ------------------------------------------------------------------------------------------ figure

def test_seed_curves_align_on_common_steps():
    steps, scores = seed_curves([(np.array([100, 200, 300]), np.array([1.0, 2.0, 3.0])),
                                 (np.array([100, 200]), np.array([5.0, 6.0]))])
    np.testing.assert_array_equal(steps, [100, 200])
    np.testing.assert_array_equal(scores, [[1.0, 2.0], [5.0, 6.0]])
    with pytest.raises(ValueError, match="share no evaluation step"):
        seed_curves([(np.array([100]), np.array([1.0])), (np.array([200]), np.array([1.0]))])


@pytest.mark.parametrize("band", ["std", "ci"])
def test_figure3_plots_every_method_with_data(runs_dir, tmp_path, band):
    spec = make_spec(runs_dir, figure3={"env": "halfcheetah", "methods": ["adept-sac", "iql", "diff-sac"],
                                        "band": band})
    runs = load_runs(runs_dir, spec.methods, spec.tasks, spec.seeds)
    fig = plot_figure3(spec, runs, tmp_path / "f.png", tmp_path / "f.pdf")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["halfcheetah-random", "halfcheetah-medium"]
    for ax in axes:  # diff-sac has no runs: two curves per panel, each the mean over 3 seeds
        assert len(ax.lines) == 2
        np.testing.assert_allclose(ax.lines[1].get_ydata(), [10.0, 20.0])  # iql: mean of score/2, score
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ADEPT-SAC", "IQL"]


def test_reporting_command_rebuilds_everything_while_runs_are_missing(runs_dir, tmp_path, capsys):
    spec_path = tmp_path / "report_spec.json"
    spec_path.write_text(json.dumps({
        "runs_dir": runs_dir.name,  # relative to the spec's folder
        "envs": ["hopper", "halfcheetah"], "datasets": ["random", "medium"],
        "seeds": [0, 1, 2, 3], "table1": {"methods": ["iql", "cql"]},
        "table4": {"columns": [{"method": "adept-sac", "label": "baseline", "paper_column": "baseline"}]},
        "figure3": {"env": "hopper", "methods": ["iql"]}, "bootstrap": {"reps": 200}}))
    assert reporting_main(["--spec", str(spec_path)]) == 0
    for name in ("table1.md", "table1.tex", "table1.html", "table4.md", "figure3.png", "figure3.pdf", "scores.csv"):
        assert (tmp_path / name).stat().st_size > 0
    rows = markdown_rows((tmp_path / "table1.md").read_text())
    assert rows[("random", "hopper")][0].endswith("[3/4]") and rows[("random", "hopper")][1] == "—"
    with open(tmp_path / "scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == 12 + 11  # iql: 4 tasks x 3 seeds; adept-sac (table 4): one run missing
    assert {row["method"] for row in scores} == {"iql", "adept-sac"}
    assert "wrote" in capsys.readouterr().out
