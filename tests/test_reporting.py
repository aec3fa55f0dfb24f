"""adept.reporting: the rliable adapter, per-run output reading, Tables 1/4, Figure 3, profiles.

Runs are per-run output folders written here in the contract's layout (docs/architecture.md).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from adept.reporting import (
    ReportSpec, ScoreMatrix, aggregate_estimates, build_table1, build_table4, load_runs, plot_figure3,
    plot_performance_profiles, probability_of_improvement, read_final, render_latex, render_markdown,
    score_matrix, write_table,
)
from adept.reporting.tables import render_html
from adept.reporting.__main__ import main as reporting_main
from adept.reporting.figure import seed_curves
from adept.methods import method_label
from adept.reporting.reference import TABLE1_COLUMNS, paper_task_order
from adept.reporting.stats import mean_curve_band, performance_profile, profile_thresholds

REFERENCE = Path(__file__).resolve().parents[1] / "adept" / "reporting" / "reference"
NUMBER = r"-?\d+\.\d"


# ------------------------------------------------------------------------------- stats (rliable)

def test_score_matrix_is_rliables_layout_and_scale():
    by_task = {("hopper", "random"): np.array([10.0, 20.0, 30.0]), ("walker2d", "random"): np.array([1.0, 2.0, 3.0])}
    tasks = [("walker2d", "random"), ("hopper", "random")]
    matrix = score_matrix(by_task, tasks)
    np.testing.assert_allclose(matrix.scores, [[0.01, 0.1], [0.02, 0.2], [0.03, 0.3]])  # (runs, tasks), score / 100
    assert matrix.tasks == tuple(tasks) and matrix.runs == 3 and matrix.dropped == 0
    assert score_matrix(by_task, [*tasks, ("halfcheetah", "random")]) is None  # a row without runs


def test_score_matrix_drops_to_the_common_run_count_with_a_warning(caplog):
    by_task = {("hopper", "random"): np.array([1.0, 2.0, 3.0]), ("hopper", "medium"): np.array([5.0, 6.0])}
    with caplog.at_level("WARNING", logger="adept.reporting"):
        matrix = score_matrix(by_task, list(by_task), "iql")
    np.testing.assert_allclose(matrix.scores * 100, [[1.0, 5.0], [2.0, 6.0]])  # the first runs in seed order
    assert matrix.dropped == 1
    assert "iql: rliable needs the same number of runs on every task; using the first 2 runs" in caplog.text


HAND_MADE = np.array([  # (runs, tasks) on the normalized-score scale, with a tie and a run above expert
    [12.0, 55.0, 90.0, 3.0],
    [20.0, 61.0, 104.0, 7.5],
    [15.0, 40.0, 98.0, 7.5],
    [31.0, 58.0, 111.0, 1.0],
    [9.0, 47.0, 85.0, 4.0],
])


def test_aggregates_match_independent_computations():
    matrix = ScoreMatrix(HAND_MADE / 100.0, tuple((f"env{i}", "random") for i in range(4)))
    estimates = aggregate_estimates(matrix, reps=1000)
    pooled = np.sort(HAND_MADE.ravel())
    assert estimates["IQM"].value == pytest.approx(pooled[5:15].mean())  # 20 runs: drop 5 from each end
    assert estimates["IQM"].value == pytest.approx(scipy.stats.trim_mean(HAND_MADE, 0.25, axis=None))
    task_means = HAND_MADE.mean(axis=0)
    assert estimates["Mean"].value == pytest.approx(task_means.mean())
    assert estimates["Median"].value == pytest.approx(np.median(task_means))
    assert estimates["Optimality gap"].value == pytest.approx(100.0 - np.minimum(HAND_MADE, 100.0).mean())
    for estimate in estimates.values():
        assert estimate.low <= estimate.value <= estimate.high and estimate.low < estimate.high


def test_bootstrap_is_stratified_deterministic_and_leaves_numpy_alone():
    # Task A always scores 0, task B always 100: resampling runs within each task keeps the mean of the
    # task means at 50 in every replicate, so the stratified interval collapses onto it.
    constant = ScoreMatrix(np.array([[0.0, 1.0]] * 4), (("a", "random"), ("b", "random")))
    assert aggregate_estimates(constant, reps=500)["Mean"].ci == pytest.approx((50.0, 50.0))
    matrix = ScoreMatrix(HAND_MADE / 100.0, tuple((f"env{i}", "random") for i in range(4)))
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = aggregate_estimates(matrix, reps=500, seed=7)
    assert np.random.rand() == expected_next  # numpy's global state is restored
    assert aggregate_estimates(matrix, reps=500, seed=7) == first
    assert aggregate_estimates(matrix, reps=500, seed=8)["IQM"].ci != first["IQM"].ci
    narrow, wide = (aggregate_estimates(matrix, reps=2000, confidence=c)["Mean"] for c in (0.5, 0.95))
    assert wide.low < narrow.low < narrow.high < wide.high
    with pytest.raises(ValueError, match="confidence must be in"):
        aggregate_estimates(matrix, reps=10, confidence=1.0)


def direct_probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over tasks of P(X > Y) counted pair by pair, ties counting 1/2 (independent of rliable)."""
    per_task = []
    for task in range(x.shape[1]):
        wins = sum((a > b) + 0.5 * (a == b) for a in x[:, task] for b in y[:, task])
        per_task.append(wins / (x.shape[0] * y.shape[0]))
    return float(np.mean(per_task))


def test_probability_of_improvement_is_the_mann_whitney_count():
    tasks = tuple((f"env{i}", "random") for i in range(4))
    x = ScoreMatrix(HAND_MADE / 100.0, tasks)
    y_scores = np.array([[10.0, 55.0, 95.0, 2.0], [25.0, 50.0, 100.0, 7.5], [14.0, 62.0, 80.0, 5.0]])
    y = ScoreMatrix(y_scores / 100.0, tasks)  # fewer runs than X, and ties with X
    estimate = probability_of_improvement(x, y, reps=300, seed=3)
    assert estimate.value == pytest.approx(direct_probability_of_improvement(HAND_MADE, y_scores))
    assert estimate.low <= estimate.value <= estimate.high and estimate.low < estimate.high
    assert probability_of_improvement(x, y, reps=300, seed=3) == estimate
    reverse = probability_of_improvement(y, x, reps=300, seed=3)
    assert reverse.value == pytest.approx(1.0 - estimate.value)  # the pair counts are complementary
    assert probability_of_improvement(x, x, reps=50).value == 0.5
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(x, ScoreMatrix(y_scores / 100.0, tasks[::-1]), reps=50)


def test_performance_profile_is_the_fraction_of_runs_above_each_threshold():
    matrix = ScoreMatrix(HAND_MADE / 100.0, tuple((f"env{i}", "random") for i in range(4)))
    thresholds = profile_thresholds([matrix])
    assert thresholds[0] == 0.0 and thresholds[-1] == pytest.approx(1.2)  # up to the best run, rounded up
    profile, low, high = performance_profile(matrix, thresholds, reps=500)
    direct = [(HAND_MADE / 100.0 > tau).mean() for tau in thresholds]
    np.testing.assert_allclose(profile, direct)
    assert profile[0] == 1.0 and profile[-1] == 0.0
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)


def test_mean_curve_band_brackets_the_curve():
    samples = np.array([[0.0, 10.0, 20.0], [2.0, 12.0, 26.0], [4.0, 14.0, 23.0]])
    low, high = mean_curve_band(samples, reps=2000)
    assert np.all(low <= samples.mean(axis=0)) and np.all(samples.mean(axis=0) <= high)
    assert np.all(low >= samples.min(axis=0)) and np.all(high <= samples.max(axis=0))
    assert np.all(low < high)


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
        "bootstrap": {"reps": 500, "comparison_reps": 300},
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
        "Average", "IQM [95% CI]", "Mean [95% CI]", "Median [95% CI]", "Optimality gap [95% CI]",
        "ADEPT vs baselines: probability of improvement", "P(ADEPT-SAC > column) [95% CI]"]

    # IQL: mean ± std over seeds, then the paper's value and ours - paper.
    paper = reported("IQL", "hopper", "medium")
    assert rows[("medium", "hopper")][0] == f"20.0 ± 8.2 ({paper:.1f}, {20.0 - paper:+.1f})"
    # ADEPT-SAC: the paper's ± std, and a run missing on hopper-medium is counted, not filled in.
    cell = rows[("medium", "hopper")][1]
    assert cell.startswith("20.0 ± 5.0 (32.8 ± 3.9, -12.8)") and cell.endswith("[2/3]")
    # No runs at all: "—" everywhere, also in the summary rows.
    assert all(rows[key][2] == "—" and rows[key][3] == "—" for key in rows if key[0] != "header" and any(rows[key]))
    assert rows[("ADEPT vs baselines: probability of improvement", "")] == [""] * len(header)  # the block's title
    # Reported-only columns carry the CSV's numbers exactly and no IQM.
    mopo = header.index("MOPO (paper)")
    for dataset, env in task_rows:
        assert float(rows[(dataset, env)][mopo]) == reported("MOPO", env, dataset)
    assert rows[("IQM [95% CI]", "")][mopo] == "—"
    # Average: mean of the row means; the paper's average over the same rows beside it.
    paper_average = np.mean([reported("IQL", env, dataset) for dataset, env in task_rows])
    assert rows[("Average", "")][0].startswith(f"20.0 ± 8.2 ({paper_average:.1f}, ")
    # rliable's aggregates of IQL's 12 runs (10, 20, 30 on every row), on the 0-100 scale.
    for name, value in (("IQM", 20.0), ("Mean", 20.0), ("Median", 20.0), ("Optimality gap", 80.0)):
        assert re.fullmatch(rf"{value:.1f} \[{NUMBER}, {NUMBER}\]", rows[(f"{name} [95% CI]", "")][0])
    notes = render_markdown(table)
    for expected in ("Data source: generated.", "Hopper-v4", "gymnasium 1.4.0", "Seeds: 0, 1, 2 of 3",
                     "Gradient steps per run: 200.", "commit(s): abc1234", "not directly comparable"):
        assert expected in notes


def test_table1_adept_vs_baselines_block(tmp_path):
    """P(ADEPT-X > column) for both ADEPT methods and every other measured column, in all three formats."""
    runs_dir = tmp_path / "runs"
    spec = make_spec(runs_dir, table1={"methods": ["iql", "adept-iql", "adept-sac"]},
                     bootstrap={"reps": 200, "comparison_reps": 100})
    rng = np.random.default_rng(5)
    scores: dict[str, dict] = {}
    for method, shift in (("iql", 0.0), ("adept-iql", 6.0), ("adept-sac", 3.0)):
        for env, dataset in spec.tasks:
            for seed in spec.seeds:
                if method == "adept-sac" and (env, dataset) == ("hopper", "medium") and seed == 0:
                    continue  # unequal runs: rliable's matrix keeps the first 2 of every row
                score = round(float(rng.normal(40.0 + shift, 8.0)), 1)
                write_run(runs_dir, method, env, dataset, seed, score)
                scores.setdefault(method, {}).setdefault((env, dataset), []).append(score)
    table = build_table1(spec, load_runs(runs_dir, spec.methods, spec.tasks, spec.seeds))
    text = render_markdown(table)
    rows = markdown_rows(text)
    header = rows[("header", "")]

    def matrix(method: str) -> np.ndarray:
        runs = 2 if method == "adept-sac" else 3
        return np.array([scores[method][task][:runs] for task in spec.tasks]).T

    for x_label, x in (("ADEPT-IQL", "adept-iql"), ("ADEPT-SAC", "adept-sac")):
        row = rows[(f"P({x_label} > column) [95% CI]", "")]
        for y_label, y in (("IQL", "iql"), ("ADEPT-IQL", "adept-iql"), ("ADEPT-SAC", "adept-sac")):
            cell = row[header.index(y_label)]
            if x == y:
                assert cell == "—"
                continue
            value, low, high = map(float, re.fullmatch(r"(\d\.\d\d) \[(\d\.\d\d), (\d\.\d\d)\]", cell).groups())
            assert value == pytest.approx(direct_probability_of_improvement(matrix(x), matrix(y)), abs=0.0051)
            assert low <= value <= high
        assert row[header.index("SAC (paper)")] == "—" and row[header.index("MOPO (paper)")] == "—"
    assert ("ADEPT-SAC: rliable needs the same number of runs on every row, so its statistics use the first 2 "
            "run(s) (seed order) of each row; 3 run(s) left out.") in text
    assert "P(X > column) [95% CI]: rliable's probability of improvement" in text and "100 resamples" in text
    latex = render_latex(table)
    assert "\\emph{ADEPT vs baselines: probability of improvement}" in latex
    assert "\\multicolumn{2}{l}{P(ADEPT-IQL $>$ column) [95\\% CI]}" in latex
    assert '<th colspan="12" class="section">ADEPT vs baselines' in render_html(table)  # 2 + 3 + 7 paper columns


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
    assert latex.count("\\\\") == 1 + 4 + 5  # header, four rows, five summary rows; no comparison block
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
    with pytest.raises(ValueError, match="env='walker2d' but lies in the folder of env='hopper'"):
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


def test_performance_profiles_figure(runs_dir, tmp_path):
    spec = make_spec(runs_dir)
    runs = load_runs(runs_dir, spec.methods, spec.tasks, spec.seeds)
    fig = plot_performance_profiles(spec, runs, tmp_path / "p.png", tmp_path / "p.pdf")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["IQL", "ADEPT-SAC"]  # BC and random have no runs
    assert "not shown (no run on some rows): BC, Random policy" in fig._suptitle.get_text()
    iql = ax.lines[0]
    taus = np.asarray(iql.get_xdata())
    assert taus[0] <= 0.0 and taus[-1] >= 100.0  # the normalized-score axis, random to expert at least
    iql_runs = np.array([10.0, 20.0, 30.0] * 4)
    np.testing.assert_allclose(iql.get_ydata(), [(iql_runs > tau).mean() for tau in taus], atol=1e-12)
    assert len(ax.collections) == 2  # one CI band per method
    (tmp_path / "p.pdf").unlink()
    plot_performance_profiles(spec, runs, tmp_path / "p.png", tmp_path / "p.pdf")
    first = (tmp_path / "p.pdf").read_bytes()
    plot_performance_profiles(spec, runs, tmp_path / "p.png", tmp_path / "p.pdf")
    assert (tmp_path / "p.pdf").read_bytes() == first  # same seed, same figure


def test_reporting_command_rebuilds_everything_while_runs_are_missing(runs_dir, tmp_path, capsys):
    spec_path = tmp_path / "report_spec.json"
    spec_path.write_text(json.dumps({
        "runs_dir": runs_dir.name,  # relative to the spec's folder
        "envs": ["hopper", "halfcheetah"], "datasets": ["random", "medium"],
        "seeds": [0, 1, 2, 3], "table1": {"methods": ["iql", "cql"]},
        "table4": {"columns": [{"method": "adept-sac", "label": "baseline", "paper_column": "baseline"}]},
        "figure3": {"env": "hopper", "methods": ["iql"]}, "bootstrap": {"reps": 200, "comparison_reps": 200}}))
    assert reporting_main(["--spec", str(spec_path)]) == 0
    for name in ("table1.md", "table1.tex", "table1.html", "table4.md", "figure3.png", "figure3.pdf", "scores.csv",
                 "profiles.png", "profiles.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    rows = markdown_rows((tmp_path / "table1.md").read_text())
    assert rows[("random", "hopper")][0].endswith("[3/4]") and rows[("random", "hopper")][1] == "—"
    with open(tmp_path / "scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == 12 + 11  # iql: 4 tasks x 3 seeds; adept-sac (table 4): one run missing
    assert {row["method"] for row in scores} == {"iql", "adept-sac"}
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------------------- model-error figure

from adept.reporting.figure import curve_band  # noqa: E402
from adept.reporting.model_error import (  # noqa: E402
    NO_GT, ModelErrorSpec, load_model_error_spec, model_error_panels, plot_model_error,
)
from adept.reporting.spec import Bootstrap  # noqa: E402

GT_STEPS = (100, 200, 300)
GT_BASE = {"adept": 0.01, "diff": 1.0}  # Diff+X's errors 100x ADEPT-X's: a log axis


def onestep_error(method: str, seed: int, i: int) -> float:
    return GT_BASE[method.split("-")[0]] * (seed + 1) * (i + 1)


def write_gt_run(runs_dir: Path, method: str, env: str, dataset: str, seed: int, floor: float = 1e-3) -> Path:
    """A completed run whose eval.csv has the simulator ground truth (H = 3) and, for ADEPT, ESS in train.csv.
    Rollout errors at t = 1, 2, 3 are 1x, 2x, 3x the one-step error: mean over t 2x, final 3x."""
    directory = write_run(runs_dir, method, env, dataset, seed, 10.0, curve=[1.0, 2.0, 3.0])
    columns = ["step", "return_mean", "return_std", "score_mean", "score_std", "episode_length_mean", "wall_time_s",
               "gt/onestep_state_mse_policy", "gt/rollout_state_mse_t1", "gt/rollout_state_mse_t2",
               "gt/rollout_state_mse_t3", "gt/rollout_state_mse_mean", "gt/sim_floor_state_mse"]
    with open(directory / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, step in enumerate(GT_STEPS):
            error = onestep_error(method, seed, i)
            writer.writerow([step, 10.0, 1.0, 1.0 + i, 0.5, 1000, i,
                             error, error, 2 * error, 3 * error, 2 * error, floor])
    train = "step,critic_loss" + (",iw/is_ess_fraction" if method.startswith("adept-") else "") + "\n"
    for step in range(50, 301, 50):
        train += f"{step},1.0" + (f",{0.5 - 0.1 * seed}" if method.startswith("adept-") else "") + "\n"
    (directory / "train.csv").write_text(train)
    return directory


@pytest.fixture
def gt_runs(tmp_path) -> Path:
    """ADEPT-SAC and Diff+SAC on halfcheetah-random with ground truth, on halfcheetah-medium without
    (a dataset without qpos/qvel), SAC beside them (not part of the figure); no runs on hopper-random."""
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        for method in ("adept-sac", "diff-sac"):
            write_gt_run(runs, method, "halfcheetah", "random", seed)
            write_run(runs, method, "halfcheetah", "medium", seed, 10.0)
        write_run(runs, "sac", "halfcheetah", "random", seed, 10.0)
    return runs


def model_error_spec(**changes) -> ModelErrorSpec:
    data = {"pairs": [{"adept": "adept-sac", "diff": "diff-sac"}],
            "tasks": [["hopper", "random"], ["halfcheetah", "medium"], ["halfcheetah", "random"]],
            "band": "std", "horizon_error": "mean", "yscale": "auto", **changes}
    return ModelErrorSpec.from_dict(data, {"diff-sac": "Diff+SAC (fitted once)"})


def test_curve_band_std_ci_minmax():
    samples = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]])
    mean, low, high = curve_band(samples, "minmax", Bootstrap())
    np.testing.assert_allclose([mean, low, high], [[3.0, 20.0], [1.0, 10.0], [6.0, 30.0]])
    _, low, high = curve_band(samples, "std", Bootstrap())
    np.testing.assert_allclose(high - mean, samples.std(axis=0))
    _, low, high = curve_band(samples, "ci", Bootstrap(comparison_reps=500))
    assert np.all(low <= mean) and np.all(mean <= high) and np.all(high <= samples.max(axis=0))
    with pytest.raises(ValueError, match=r"band must be one of \['std', 'ci', 'minmax'\], got 'iqr'"):
        curve_band(samples, "iqr", Bootstrap())


def test_model_error_panels_hold_seed_means_bands_and_floor(gt_runs):
    report = make_spec(gt_runs, envs=["halfcheetah", "hopper"], datasets=["random", "medium"])
    spec = model_error_spec()
    assert spec.tasks == (("halfcheetah", "random"), ("hopper", "random"), ("halfcheetah", "medium"))  # paper order
    runs = load_runs(gt_runs, ["adept-sac", "diff-sac", "sac"], spec.tasks, [0, 1, 2])
    panels = model_error_panels(report, spec, runs)
    assert set(panels) == {(row, task) for row in ("onestep", "rollout", "ess") for task in spec.tasks}

    random = ("halfcheetah", "random")
    onestep = panels[("onestep", random)]
    assert [s.label for s in onestep.series] == ["ADEPT-SAC", "Diff+SAC (fitted once)"]  # no SAC: not a pair
    for series, method in zip(onestep.series, ("adept-sac", "diff-sac")):
        per_seed = np.array([[onestep_error(method, seed, i) for i in range(3)] for seed in (0, 1, 2)])
        assert series.seeds == (0, 1, 2) and list(series.steps) == list(GT_STEPS)
        np.testing.assert_allclose(series.mean, per_seed.mean(axis=0))
        np.testing.assert_allclose(series.high - series.mean, per_seed.std(axis=0))
    assert onestep.floor == pytest.approx(1e-3) and onestep.log_y and onestep.note is None

    rollout = panels[("rollout", random)]
    np.testing.assert_allclose(rollout.series[0].mean, 2 * onestep.series[0].mean)  # gt/rollout_state_mse_mean
    assert rollout.horizons == (3,)
    final = model_error_panels(report, model_error_spec(horizon_error="final"), runs)[("rollout", random)]
    np.testing.assert_allclose(final.series[1].mean, 3 * onestep.series[1].mean)  # gt/rollout_state_mse_t3

    ess = model_error_panels(report, model_error_spec(band="minmax"), runs)[("ess", random)]
    (adept,) = ess.series  # Diff+SAC has no importance weights
    assert adept.method == "adept-sac" and list(adept.steps) == [50, 100, 150, 200, 250, 300]
    np.testing.assert_allclose([adept.mean, adept.low, adept.high], [[0.4] * 6, [0.3] * 6, [0.5] * 6])
    assert not ess.log_y and ess.floor is None
    linear = model_error_panels(report, model_error_spec(yscale="linear"), runs)[("onestep", random)]
    assert not linear.log_y

    for row in ("onestep", "rollout"):  # runs without gt/ columns: the panel says so
        assert panels[(row, ("halfcheetah", "medium"))].series == ()
        assert panels[(row, ("halfcheetah", "medium"))].note == NO_GT
        assert panels[(row, ("hopper", "random"))].note == "no completed runs"
    assert panels[("ess", ("halfcheetah", "medium"))].note == "no iw/is_ess_fraction in train.csv"


def test_model_error_figure_draws_the_panels(gt_runs, tmp_path):
    report = make_spec(gt_runs, envs=["halfcheetah"], datasets=["random", "medium"])
    spec = model_error_spec(tasks=[["halfcheetah", "random"], ["halfcheetah", "medium"]])
    runs = load_runs(gt_runs, spec.methods, spec.tasks, [0, 1, 2])
    fig = plot_model_error(report, spec, runs, tmp_path / "m.png", tmp_path / "m.pdf")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "m.pdf").read_bytes()[:5] == b"%PDF-"
    axes = np.array(fig.axes).reshape(3, 2)  # rows: one-step, rollout, ESS; columns: random, medium
    panels = model_error_panels(report, spec, runs)
    onestep = axes[0, 0]
    adept_line, diff_line, floor_line = onestep.lines
    np.testing.assert_allclose(adept_line.get_ydata(), panels[("onestep", ("halfcheetah", "random"))].series[0].mean)
    np.testing.assert_allclose(diff_line.get_xdata(), GT_STEPS)
    assert adept_line.get_linestyle() == "-" and diff_line.get_linestyle() == "--"
    assert adept_line.get_color() == diff_line.get_color()  # same learner, same colour
    np.testing.assert_allclose(floor_line.get_ydata(), [1e-3, 1e-3])
    assert onestep.get_yscale() == "log" and axes[2, 0].get_yscale() == "linear"
    assert len(axes[2, 0].lines) == 1 and onestep.get_title() == "halfcheetah-random"
    assert "one-step state MSE" in onestep.get_ylabel() and "H = 3" in axes[1, 0].get_ylabel()
    assert not axes[0, 1].lines and any("no gt/ columns" in t.get_text() for t in axes[0, 1].texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ADEPT-SAC", "Diff+SAC (fitted once)", "simulator floor (dataset vs simulator)"]
    assert "band ± 1 std" in fig._suptitle.get_text()


def test_model_error_floor_of_zero_is_named_on_a_log_axis(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed in (0, 1):
        for method in ("adept-sac", "diff-sac"):
            write_gt_run(runs_dir, method, "halfcheetah", "random", seed, floor=0.0)  # data made by this simulator
    report = make_spec(runs_dir, envs=["halfcheetah"], datasets=["random"], seeds=[0, 1])
    spec = model_error_spec(tasks=[["halfcheetah", "random"]])
    fig = plot_model_error(report, spec, load_runs(runs_dir, spec.methods, spec.tasks, [0, 1]),
                           tmp_path / "m.png", tmp_path / "m.pdf")
    onestep = fig.axes[0]
    assert onestep.get_yscale() == "log" and len(onestep.lines) == 2
    assert [t.get_text() for t in onestep.texts] == ["simulator floor = 0"]


def test_model_error_panel_names_a_pair_method_without_data(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed in (0, 1):
        write_gt_run(runs_dir, "adept-sac", "hopper", "random", seed)
        write_run(runs_dir, "diff-sac", "hopper", "random", seed, 10.0)  # e.g. an older run without gt/ columns
    report = make_spec(runs_dir, envs=["hopper"], datasets=["random"], seeds=[0, 1], figure3={"methods": []})
    spec = model_error_spec(tasks=[["hopper", "random"]])
    panel = model_error_panels(report, spec, load_runs(runs_dir, spec.methods, spec.tasks, [0, 1]))[
        ("onestep", ("hopper", "random"))]
    assert [s.method for s in panel.series] == ["adept-sac"] and panel.note == "no data: Diff+SAC (fitted once)"


def test_model_error_spec_errors():
    with pytest.raises(ValueError, match=r"figure_model_error.band must be one of \['std', 'ci', 'minmax'\]"):
        model_error_spec(band="iqr")
    with pytest.raises(ValueError, match=r"figure_model_error.horizon_error must be one of"):
        model_error_spec(horizon_error="last")
    with pytest.raises(ValueError, match=r"first must be an adept-<learner> method and the second a diff-<learner>"):
        model_error_spec(pairs=[{"adept": "diff-sac", "diff": "adept-sac"}])
    with pytest.raises(ValueError, match=r"figure_model_error is missing or has a malformed entry: KeyError\('diff'\)"):
        model_error_spec(pairs=[{"adept": "adept-sac"}])


def test_reporting_command_draws_the_model_error_figure_from_the_spec(gt_runs, tmp_path):
    section = {"pairs": [{"adept": "adept-sac", "diff": "diff-sac"}], "tasks": [["halfcheetah", "random"]],
               "band": "ci", "horizon_error": "final", "yscale": "auto"}
    data = {"runs_dir": gt_runs.name, "envs": ["halfcheetah"], "datasets": ["random"], "seeds": [0, 1, 2],
            "table1": {"methods": ["sac"]}, "table4": {"columns": []}, "figure3": {"env": "halfcheetah", "methods": []},
            "bootstrap": {"reps": 200, "comparison_reps": 200}, "labels": {"adept-sac": "ADEPT (ours)"}}
    spec_path = tmp_path / "report_spec.json"
    spec_path.write_text(json.dumps({**data, "figure_model_error": section}))
    _, spec = load_model_error_spec(spec_path)
    assert spec.pairs[0].adept.label == "ADEPT (ours)" and spec.band == "ci" and spec.horizon_error == "final"
    assert reporting_main(["--spec", str(spec_path)]) == 0
    assert (tmp_path / "figure_model_error.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "figure_model_error.pdf").read_bytes()[:5] == b"%PDF-"
    (tmp_path / "figure_model_error.png").unlink()
    spec_path.write_text(json.dumps({**data, "figure_model_error": {**section, "pairs": []}}))  # no pairs: no figure
    assert load_model_error_spec(spec_path)[1] is None
    assert reporting_main(["--spec", str(spec_path)]) == 0 and not (tmp_path / "figure_model_error.png").exists()
