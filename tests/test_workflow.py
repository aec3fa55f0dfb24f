"""The Snakemake workflow: lint, dry runs of the paper's grid, config errors, drop-in baselines,
GPU pinning, profiles, and a real end-to-end run of config/test.yaml.

Snakemake runs in a subprocess with a temporary working directory, so nothing is written to the
repository (`-d`; the Snakefile reads its default config from the repository).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate
from snakemake_interface_common.exceptions import WorkflowError

ROOT = Path(__file__).resolve().parents[1]
GPU_LOCK = ROOT / "workflow" / "scripts" / "gpu_lock.py"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def snakemake(workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile", timeout: int = 300):
    # Rules call `python`: make it this interpreter even when the virtualenv is not activated.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def shell_command(output: str, fragment: str) -> str:
    commands = [line for line in output.splitlines() if line.startswith("Shell command:") and fragment in line]
    assert len(commands) == 1, f"expected one command with {fragment!r}, found {len(commands)}"
    return commands[0]


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory) -> tuple[Path, str]:
    """(working directory, output) of a dry run of config/config.yaml, the paper's grid."""
    workdir = tmp_path_factory.mktemp("paper")
    result = snakemake(workdir, "-n")
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result.stdout + result.stderr


def test_dry_run_of_the_paper_grid(paper_dry_run):
    _, out = paper_dry_run
    counts = job_counts(out)
    # 3 envs x 3 datasets x 5 seeds = 45 per method: 7 Table 1 methods and 5 Table 4 variants on all of
    # them, 3 Figure 3 ablations (diff-iql, diff-sac, adept-bc) on halfcheetah only (15); MOPO and COMBO
    # come from their drop-in rules, on one dynamics ensemble per (env, dataset, seed), SynthER (IQL) on
    # one SynthER model per (env, dataset, seed), and Diffuser from its own.
    assert counts["train"] == (7 + 5) * 45 + 3 * 15
    assert counts["baseline_mopo"] == counts["baseline_combo"] == counts["ensemble"] == 45
    assert counts["baseline_synther_iql"] == counts["synther"] == counts["baseline_diffuser"] == 45
    assert counts["fetch_d4rl"] == 9 and "generate_dataset" not in counts
    assert counts["behavior_policy"] == 45
    assert counts["world_model"] == 3 * 45 and counts["world_model_config"] == 3  # K=10, K=5, K=20
    assert all(counts[rule] == 1 for rule in ("table1", "table4", "figure3", "profiles", "figure_model_error", "scores",
                                              "report_spec", "all"))

    def world_model_of(method: str) -> str | None:
        command = shell_command(out, f"adept train --method {method} --env hopper --dataset medium-replay --seed 3 ")
        assert "--data data/d4rl/hopper_medium_replay-v2.hdf5 --source d4rl" in command
        assert f"--config results/configs/{method}.yaml" in command
        assert f"--out-dir results/runs/{method}/hopper-medium-replay/seed3 " in command
        assert "gpu_lock.py --gpus 1 --runs-per-gpu 1 -- python -m adept train" in command
        found = re.search(r"--world-model results/world_models/(wm-\w+)/hopper-medium-replay/seed3/model\.pt", command)
        behavior = "--behavior-policy results/behavior/hopper-medium-replay/seed3/policy.pt" in command
        assert behavior == method.startswith("adept-")
        return found.group(1) if found else None

    base = world_model_of("adept-sac")
    assert base is not None and world_model_of("adept-iql") == base
    assert world_model_of("adept-sac_Bm256") == base and world_model_of("adept-sac_noclip") == base
    assert world_model_of("adept-sac_K5") not in (None, base) and world_model_of("adept-sac_K20") not in (None, base)
    assert world_model_of("iql") is None


def test_quick_config_is_offline(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "quick.yaml"))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = job_counts(out)
    assert "fetch_d4rl" not in counts and counts["generate_dataset"] == 1
    assert counts["profiles"] == 1  # the performance profiles are part of the default target
    command = shell_command(out, "adept datasets generate")
    assert "--env halfcheetah --dataset random --seed 0 --size 100000" in command


def test_generated_source_gives_all_nine_datasets_offline(tmp_path):
    """medium comes from the shipped checkpoint; medium-replay from the collector's buffer,
    trained with the shipped checkpoint's settings so that both describe the same agent."""
    overlay = tmp_path / "generated.yaml"
    overlay.write_text("data: {source: generated}\n")
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(overlay))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = job_counts(out)
    assert "fetch_d4rl" not in counts
    assert counts["generate_dataset"] == 9 and counts["collector"] == 3
    manifest = json.loads((ROOT / "adept" / "collector_snapshots" / "manifest.json").read_text())
    hopper = shell_command(out, "collector train --env hopper")
    assert f"--seed {manifest['hopper']['seed']}" in hopper
    for key, value in manifest["hopper"]["online_config"]["sac"].items():
        assert f"--set sac.{key}={value}" in hopper
    assert f"--set snapshot={manifest['hopper']['online_config']['snapshot']}" in hopper
    replay = shell_command(out, "datasets generate --env hopper --dataset medium-replay")
    assert "ADEPT_COLLECTOR_DIR=data/collectors" in replay


def test_run_configs_and_world_model_configs(paper_dry_run):
    """The written configs: variants' overrides, and the world model's architecture keys apart."""
    tmp_path, out = paper_dry_run
    tags = dict(re.findall(r"--method (adept-sac(?:_K5)?) .*?--world-model results/world_models/(wm-\w+)/", out))
    targets = ["results/configs/adept-sac_K5.yaml", "results/configs/adept-sac_Bm256.yaml",
               "results/configs/iql.yaml", f"results/world_models/{tags['adept-sac_K5']}/config.yaml"]
    result = snakemake(tmp_path, "--cores", "1", *targets)
    assert result.returncode == 0, result.stdout + result.stderr
    k5 = yaml.safe_load((tmp_path / targets[0]).read_text())
    bm256 = yaml.safe_load((tmp_path / targets[1]).read_text())
    iql = yaml.safe_load((tmp_path / targets[2]).read_text())
    k5_model = yaml.safe_load((tmp_path / targets[3]).read_text())
    assert set(k5) == {"run", "learner", "world_model", "adept"} and set(iql) == {"run", "learner"}
    assert "diffusion_steps" not in k5["world_model"] and k5_model["world_model"]["diffusion_steps"] == 5
    assert bm256["world_model"]["is_batch_size"] == 256 and k5["world_model"]["is_batch_size"] == 1024
    assert iql["learner"]["expectile"] == 0.7 and k5["learner"]["tau"] == 0.005 and k5["run"]["steps"] == 1_000_000


def test_schema_fills_defaults_and_accepts_the_shipped_configs():
    config = {}
    validate(config, str(SCHEMA))
    assert config["envs"] == ["halfcheetah", "walker2d", "hopper"] and config["seeds"] == [0, 1, 2, 3, 4]
    assert config["data"] == {"source": "d4rl", "dir": "data", "size": None, "seed": 0}
    assert config["resources"]["train"] == {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 0}
    assert config["figure_model_error"] == {"pairs": "auto", "band": "std", "horizon_error": "mean", "yscale": "auto"}
    for overlay in ("quick.yaml", "test.yaml", "demo.yaml"):
        merged = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        update_config(merged, yaml.safe_load((ROOT / "config" / overlay).read_text()))
        validate(merged, str(SCHEMA))
        assert merged["data"]["source"] == "generated" and merged["device"] == "cpu"


@pytest.mark.parametrize("change, message", [
    ({"device": "gpu"}, r"'gpu' does not match"),
    ({"data": {"source": "minari"}}, r"'minari' is not one of \['d4rl', 'generated'\]"),
    ({"seeds": []}, r"\[\] should be non-empty"),
    ({"resources": {"train": {"gpu": -1}}}, r"-1 is less than the minimum of 0"),
    ({"variants": {"adept-sac_K5": {"method": "adept-sac", "override": {}}}}, r"'override' was unexpected"),
    ({"run": {"loggers": ["csv", "mlflow"]}}, r"'mlflow' is not one of \['csv', 'tensorboard', 'wandb'\]"),
    ({"figure_model_error": {"band": "iqr"}}, r"'iqr' is not one of \['std', 'ci', 'minmax'\]"),
    ({"figure_model_error": {"pairs": [{"adept": "adept-sac"}]}}, r"is not valid under any of the given schemas"),
])
def test_schema_rejects_bad_values(change, message):
    with pytest.raises(WorkflowError, match=message):
        validate(change, str(SCHEMA))


@pytest.mark.parametrize("override, message", [
    (["--config", "learners={iql: {betaa: 3}}"], r"config of method 'iql' is invalid: .*unknown key\(s\) \['betaa'\]"),
    (["--config", "table1={methods: [iql, mbpo]}"], r"method 'mbpo' is neither a harness method"),
    (["--config", "table4={variants: [adept-sac_K7]}"], r"table4.variants \['adept-sac_K7'\] are not defined"),
    (["--config", "figure_model_error={pairs: [{adept: adept-td3bc, diff: diff-td3bc}]}"],
     r"figure_model_error.pairs names 'adept-td3bc', which no table or figure runs"),
    (["--config", "figure_model_error={pairs: [{adept: diff-sac, diff: adept-sac}]}"],
     r"figure_model_error.pairs: the `adept:` entry must be named adept-<learner>, got 'diff-sac'"),
])
def test_inconsistent_config_is_rejected_before_any_job(tmp_path, override, message):
    result = snakemake(tmp_path, "-n", *override)
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), result.stdout + result.stderr


def copy_workflow(destination: Path, drop_baselines: tuple[str, ...] = ()) -> Path:
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Snakefile", destination / "Snakefile")
    for name in drop_baselines:
        (destination / "workflow" / "rules" / "baselines" / name).unlink()
    return destination / "Snakefile"


def test_dropping_in_a_baseline_adds_its_column(tmp_path):
    overlay = tmp_path / "random_only.yaml"
    overlay.write_text(yaml.safe_dump({
        "envs": ["hopper"], "datasets": ["random"], "seeds": [0, 1], "labels": {"random": "Random policy"},
        "table1": {"methods": ["random"]}, "figure3": {"methods": []}, "table4": {"variants": []},
        "bootstrap": {"reps": 200, "comparison_reps": 200}}))
    args = ("results/table1.md", "results/profiles.png", "--cores", "2", "--configfile", str(overlay))

    without = snakemake(tmp_path / "work_without", *args, snakefile=copy_workflow(tmp_path / "without", ("random.smk",)))
    assert without.returncode != 0 and "method 'random' is neither a harness method" in without.stderr

    result = snakemake(tmp_path / "work", *args, snakefile=copy_workflow(tmp_path / "with"))
    assert result.returncode == 0, result.stdout + result.stderr
    table = (tmp_path / "work" / "results" / "table1.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Dataset"))
    assert "| Random policy |" in header
    row = next(line for line in table.splitlines() if line.startswith("| random | hopper"))
    cell = row.split("|")[3].strip()
    mean, std = map(float, re.fullmatch(r"(-?\d+\.\d) ± (\d+\.\d)", cell).groups())
    assert -5.0 < mean < 10.0  # a random policy scores about 0 by the score's definition
    assert (tmp_path / "work" / "results" / "profiles.png").read_bytes()[:4] == b"\x89PNG"  # drop-ins are profiled too
    run = tmp_path / "work" / "results" / "runs" / "random" / "hopper-random" / "seed1"
    final = json.loads((run / "final.json").read_text())
    with open(run / "eval.csv") as f:
        (evaluation,) = list(csv.DictReader(f))
    assert final["final_score"] == pytest.approx(float(evaluation["score_mean"]))
    assert final["env_id"] == "Hopper-v4" and (run / "train.csv").is_file()


# --------------------------------------------------------------------- rliable statistics and profiles

def test_table1_probabilities_and_profiles_are_built_by_their_rules(tmp_path):
    """config/test.yaml's Table 1 and performance profiles, by Snakemake on hand-made runs of every
    Table 1 method: rliable's P(ADEPT-X > column) in the table, the figure, both in --report."""
    import numpy as np

    from adept.methods import method_label

    sys.path.insert(0, str(ROOT / "tests"))
    from test_reporting import direct_probability_of_improvement, write_run

    args = ("--configfile", str(ROOT / "config" / "test.yaml"))
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / "test.yaml").read_text()))
    methods = config["table1"]["methods"]
    assert {"sac", "iql", "adept-iql", "adept-sac"} <= set(methods)
    scores = {}
    for index, method in enumerate(methods):  # the ADEPT runs win some pairs and lose others
        scores[method] = [10.0 + 3.0 * index, 30.0 - 2.0 * index]
        for seed, score in enumerate(scores[method]):
            write_run(tmp_path / "results" / "runs", method, "hopper", "random", seed, score)
    # Only the aggregation rules may run: the hand-made runs stand in for the training jobs.
    targets = ("results/table1.md", "results/profiles.png", *args, "--allowed-rules", "table1", "profiles",
               "report_spec")
    result = snakemake(tmp_path, *targets, "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "results" / "report_spec.json").read_text())["table1"]["methods"] == methods
    header, rows = markdown_table(tmp_path / "results" / "table1.md")
    for adept in ("adept-iql", "adept-sac"):
        row = rows[(f"P({method_label(adept)} > column) [95% CI]", "")]
        for method in methods:
            cell = row[header.index(method_label(method))]
            if method == adept:
                assert cell == "—"
                continue
            expected = direct_probability_of_improvement(np.array([scores[adept]]).T, np.array([scores[method]]).T)
            assert float(cell.split()[0]) == pytest.approx(expected, abs=0.0051), (adept, method, cell)
    assert (tmp_path / "results" / "profiles.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results" / "profiles.pdf").read_bytes()[:5] == b"%PDF-"
    report = snakemake(tmp_path, *targets, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "profiles.png" in html and "Performance profiles (Agarwal et al., 2021)" in html


# ---------------------------------------------------------------------------- model-error figure

def test_model_error_figure_is_in_the_dag_and_built_by_its_rule(tmp_path):
    """config/test.yaml: the figure is in the default DAG, with every adept-X / diff-X pair it runs;
    its rule, run by Snakemake on hand-made run folders, draws it, and --report includes it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_reporting import write_gt_run

    args = ("--configfile", str(ROOT / "config" / "test.yaml"))
    dry = snakemake(tmp_path, "-n", *args)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert job_counts(dry.stdout)["figure_model_error"] == 1
    for method in ("adept-iql", "diff-iql", "adept-sac", "diff-sac"):
        for seed in (0, 1):
            write_gt_run(tmp_path / "results" / "runs", method, "hopper", "random", seed)
    # Only the figure's rules may run: the hand-made runs stand in for the training jobs.
    targets = ("results/figure_model_error.png", *args, "--allowed-rules", "figure_model_error", "report_spec")
    result = snakemake(tmp_path, *targets, "--cores", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    spec = json.loads((tmp_path / "results" / "report_spec.json").read_text())["figure_model_error"]
    assert spec["pairs"] == [{"adept": "adept-iql", "diff": "diff-iql"}, {"adept": "adept-sac", "diff": "diff-sac"}]
    assert spec["tasks"] == [["hopper", "random"]] and spec["band"] == "std"
    assert (tmp_path / "results" / "figure_model_error.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results" / "figure_model_error.pdf").read_bytes()[:5] == b"%PDF-"
    report = snakemake(tmp_path, *targets, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "figure_model_error.png" in html and "World-model error against the MuJoCo simulator" in html


def test_demo_config_validates_and_runs_the_demo_grid(tmp_path):
    """config/demo.yaml: SAC, Diff+SAC and ADEPT-SAC x 2 seeds on one generated halfcheetah random
    dataset, paper-size networks, Table 1 / Figure 3 / the model-error figure and nothing else."""
    merged = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((ROOT / "config" / "demo.yaml").read_text()))
    validate(merged, str(SCHEMA))
    args = ("--configfile", str(ROOT / "config" / "demo.yaml"))
    result = snakemake(tmp_path, "-n", "-p", *args)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    counts = job_counts(out)
    assert counts["generate_dataset"] == 1 and "fetch_d4rl" not in counts and "collector" not in counts
    assert counts["train"] == 3 * 2 and counts["world_model"] == 2 and counts["behavior_policy"] == 2
    assert all(counts[rule] == 1 for rule in ("table1", "figure3", "figure_model_error", "scores", "all"))
    assert "table4" not in counts
    assert sorted(set(re.findall(r"adept train --method (\S+)", out))) == ["adept-sac", "diff-sac", "sac"]
    assert "--env halfcheetah --dataset random --seed 0 --size 100000" in shell_command(out, "adept datasets generate")
    # The run and world-model configs the jobs get: the paper's networks and closed loop, a short run.
    tag = re.search(r"--world-model results/world_models/(wm-\w+)/", out).group(1)
    configs = ["results/configs/adept-sac.yaml", f"results/world_models/{tag}/config.yaml"]
    built = snakemake(tmp_path, *configs, *args, "--cores", "1")
    assert built.returncode == 0, built.stdout + built.stderr
    run_config = yaml.safe_load((tmp_path / configs[0]).read_text())
    model = yaml.safe_load((tmp_path / configs[1]).read_text())["world_model"]
    assert (model["hidden_dim"], model["diffusion_steps"], model["depth"]) == (256, 10, 3)
    assert run_config["learner"]["hidden_dim"] == 256 and run_config["run"]["steps"] == 25_000
    assert (run_config["adept"]["horizon"], run_config["adept"]["rollouts_per_epoch"]) == (10, 1000)
    assert run_config["world_model"]["is_batch_size"] == 1024


# ---------------------------------------------------------------------------------------- GPU locks

def fake_nvidia_smi(folder: Path, gpus: int) -> dict[str, str]:
    """An environment whose nvidia-smi lists `gpus` GPUs."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(gpus)))
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_locked(tmp_path: Path, env: dict, gpus: int, name: str, hold_s: float) -> subprocess.Popen:
    command = f"echo $CUDA_VISIBLE_DEVICES > {tmp_path / name}; sleep {hold_s}"
    return subprocess.Popen([sys.executable, str(GPU_LOCK), "--gpus", str(gpus), "--lock-dir", str(tmp_path / "locks"),
                             "--", "sh", "-c", command], env=env, stderr=subprocess.PIPE, text=True)


def test_gpu_lock_gives_concurrent_jobs_different_gpus(tmp_path):
    env = fake_nvidia_smi(tmp_path / "bin", gpus=2)
    first = start_locked(tmp_path, env, 1, "a", hold_s=3)
    second = start_locked(tmp_path, env, 1, "b", hold_s=3)
    time.sleep(1.0)
    third = start_locked(tmp_path, env, 1, "c", hold_s=0)  # both GPUs busy: waits for one to be released
    time.sleep(1.0)
    assert not (tmp_path / "c").exists()
    for process in (first, second, third):
        assert process.wait(timeout=30) == 0
    assert {(tmp_path / n).read_text().strip() for n in "ab"} == {"0", "1"}
    assert (tmp_path / "c").read_text().strip() in {"0", "1"}
    assert "waiting" in third.stderr.read()


def test_gpu_lock_is_a_no_op_without_gpus(tmp_path):
    env = fake_nvidia_smi(tmp_path / "bin", gpus=0)
    for gpus in (1, 0):
        process = start_locked(tmp_path, env, gpus, f"out{gpus}", hold_s=0)
        assert process.wait(timeout=30) == 0
        assert (tmp_path / f"out{gpus}").read_text().strip() == ""
    failing = subprocess.run([sys.executable, str(GPU_LOCK), "--gpus", "0", "--", "sh", "-c", "exit 3"], env=env)
    assert failing.returncode == 3  # the command's exit status is the job's


def test_conda_env_lists_the_runtime_dependencies():
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "adept.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def test_profiles():
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert default["rerun-incomplete"] and default["keep-going"] and "executor" not in default
    assert slurm["executor"] == "slurm" and slurm["rerun-incomplete"] and slurm["retries"] >= 1
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert all(config["resources"][kind]["gpu"] == 1 for kind in ("behavior_policy", "world_model", "train"))


# ------------------------------------------------------------------------------------- end to end

def markdown_table(path: Path) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    header, rows = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] == "Dataset":
                header = cells[2:]
            else:
                rows[(cells[0].strip("*"), cells[1])] = cells[2:]
    return header, rows


def reported(table: str, column: str, env: str, dataset: str) -> float:
    with open(ROOT / "adept" / "reporting" / "reference" / f"{table}_reported.csv") as f:
        return next(float(r[column]) for r in csv.DictReader(f) if (r["env"], r["dataset"]) == (env, dataset))


@pytest.mark.slow
def test_end_to_end_tiny_config(tiny_config_run):
    """config/test.yaml for real: dataset, pi_D, world models, ensembles, SynthER models, 32 training runs, tables,
    figure, report."""
    args = ("--cores", "2", "--configfile", str(ROOT / "config" / "test.yaml"))
    tmp_path, result = tiny_config_run  # the run (tests/conftest.py), shared with tests/test_slurm.py
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    results = tmp_path / "results"

    header, rows = markdown_table(results / "table1.md")
    assert header == ["SAC", "TD3+BC", "CQL", "IQL", "MOPO", "COMBO", "SynthER (IQL)", "Diffuser", "BC", "ADEPT-IQL",
                      "ADEPT-SAC"]  # every column of the paper run by the harness: none is reported-only
    paper_column = {"SynthER (IQL)": "SynthER"}
    cells = rows[("random", "hopper")]
    for column, cell in zip(header, cells):
        match = re.fullmatch(r"(-?\d+\.\d) ± (\d+\.\d)(?: \((-?\d+\.\d)(?: ± \d+\.\d)?, ([+-]\d+\.\d)\))?", cell)
        assert match, f"{column}: {cell!r}"
        if column != "BC":
            ours, paper, delta = float(match.group(1)), float(match.group(3)), float(match.group(4))
            assert paper == reported("table1", paper_column.get(column, column), "hopper", "random")
            assert delta == pytest.approx(ours - paper, abs=0.11)
    assert re.fullmatch(r"-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]", rows[("IQM [95% CI]", "")][0])
    improvement = rows[("P(ADEPT-SAC > column) [95% CI]", "")]  # rliable's P(ADEPT-SAC > SAC), ...
    assert re.fullmatch(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", improvement[header.index("SAC")])
    assert improvement[header.index("ADEPT-SAC")] == "—"
    assert "Data source: generated." in (results / "table1.md").read_text()
    assert "\\begin{tabular}" in (results / "table1.tex").read_text()

    header4, rows4 = markdown_table(results / "table4.md")
    assert header4 == ["baseline", "K=5", "no clipping"]
    no_clip = re.fullmatch(r"-?\d+\.\d ± \d+\.\d \((-?\d+\.\d), [+-]\d+\.\d\)", rows4[("random", "hopper")][2])
    assert float(no_clip.group(1)) == reported("table4", "no_clipping", "hopper", "random")
    assert (results / "figure3.png").read_bytes()[:4] == b"\x89PNG" and (results / "figure3.pdf").stat().st_size
    assert (results / "figure_model_error.png").read_bytes()[:4] == b"\x89PNG"
    assert (results / "profiles.png").read_bytes()[:4] == b"\x89PNG" and (results / "profiles.pdf").stat().st_size
    with open(results / "scores.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * (11 + 3 + 2)  # seeds x (Table 1 + Figure 3 + Table 4 variants)

    report = snakemake(tmp_path, *args, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert all(name in html for name in ("table1.html", "table4.html", "figure3.png", "profiles.png",
                                         "figure_model_error.png"))

    # Nothing reruns when nothing changed; a changed learner setting reruns exactly the runs that use
    # that learner (iql, adept-iql, diff-iql, synther-iql x 2 seeds) and the aggregation, no world model.
    again = snakemake(tmp_path, *args, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    changed = snakemake(tmp_path, *args, "-n", "--config", "learners={iql: {beta: 2.0}}")
    counts = job_counts(changed.stdout + changed.stderr)
    assert counts["train"] == 3 * 2 and counts["method_config"] == 4 and "world_model" not in counts
    assert counts["baseline_synther_iql"] == 2 and "synther" not in counts  # the SynthER model does not change
    assert re.findall(r"adept train --method (\S+)", changed.stdout).count("adept-iql") == 2
