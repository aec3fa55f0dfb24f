"""SynthER: the EDM loss and schedule on hand-computable cases, the sampler against the exact denoiser of
N(0, I) data, the EMA warm-up, a fit that resumes to the uninterrupted result, the upsampled run (D-hat
filled once, resumed runs regenerate it), bad input, and the drop-in rules (SynthER and Diffuser) in a
dry run of the test config."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adept.data import load_dataset
from adept.methods import parse_method
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from adept.synther import (SyntherConfig, SyntheticUpsampling, TransitionDiffusion, UpsamplingConfig,
                           ema_decay_at, transition_columns)
from adept.synther_training import fit_synther, learning_rate, output_paths
from baselines.td3bc import TD3BC

ROOT = Path(__file__).resolve().parents[1]
TINY = SyntherConfig(width=32, blocks=2, embed_dim=16, batch_size=64, small_batch_size=64, ema_start=4)
FIT = {"steps": 40, "log_every": 10, "checkpoint_every": 20, "check_samples": 200, "sample_steps": 4,
       "progress": False}


class ZeroNetwork(torch.nn.Module):
    def forward(self, x, c):
        return torch.zeros_like(x)


@pytest.fixture(scope="module")
def hopper(tiny_random_dataset_path):
    return load_dataset("hopper", "random", path=tiny_random_dataset_path)


@pytest.fixture(scope="module")
def synther_path(hopper, tmp_path_factory):
    out = tmp_path_factory.mktemp("synther") / "synther.pt"
    fit_synther(hopper, TINY, out_path=out, device="cpu", seed=0, **FIT)
    return out


# --------------------------------------------------------------------------------------------- EDM

def test_edm_loss_on_a_hand_computed_case():
    """F = 0 and sigma = sigma_data = 1: D = c_skip x_sigma = (x + n) / 2, lambda = 2, so the loss is
    2 * mean(((n - x) / 2)^2) = mean((n - x)^2) / 2 per row."""
    model = TransitionDiffusion(1, 1, SyntherConfig(width=8, blocks=1, embed_dim=8))  # x = (s, a, r, s', terminal)
    model.denoiser = ZeroNetwork()
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    noise = torch.ones(2, 5)
    loss = model.loss(x, sigma=torch.ones(2), noise=noise)
    row0 = (0 + 1 + 4 + 9 + 1) / 5 / 2   # n - x = 0, -1, -2, -3, 1
    row1 = (1 + 1 + 1 + 1 + 0) / 5 / 2
    assert loss.item() == pytest.approx((row0 + row1) / 2)
    # the loss is computed on normalized columns: with mean 1 and std 2 in every column, x = 1 + 2 z
    model.mean.fill_(1.0)
    model.std.fill_(2.0)
    assert model.loss(1 + 2 * x, sigma=torch.ones(2), noise=noise).item() == pytest.approx((row0 + row1) / 2)


def test_preconditioning_and_schedule_by_hand():
    model = TransitionDiffusion(1, 1, SyntherConfig(width=8, blocks=1, embed_dim=8))
    model.denoiser = ZeroNetwork()
    x = torch.tensor([[2.0, -1.0, 0.5, 3.0, 1.0]])
    assert torch.allclose(model.denoise(x, torch.tensor([3.0])), x / 10)  # c_skip = 1 / (1 + 9)
    assert model.loss_weight(torch.tensor([2.0])).item() == pytest.approx(5 / 4)
    sigmas = model.sigma_schedule(4)
    # (80^(1/7) + i/3 (0.002^(1/7) - 80^(1/7)))^7, then 0
    expected = [(80 ** (1 / 7) + i / 3 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7 for i in range(4)] + [0.0]
    assert sigmas.tolist() == pytest.approx(expected)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[3] == pytest.approx(0.002)


def test_sampler_draws_the_data_distribution_with_the_exact_denoiser():
    """With sigma_data = 1 and F = 0, D(x; sigma) = x / (1 + sigma^2) is the exact denoiser of N(0, I) data:
    the sampler must return N(0, I) in normalized units, i.e. N(mean, std^2) columns."""
    model = TransitionDiffusion(2, 1, SyntherConfig(width=8, blocks=1, embed_dim=8))
    model.denoiser = ZeroNetwork()
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, 10.0, 0.0])
    std = torch.tensor([0.1, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0])
    model.mean.copy_(mean)
    model.std.copy_(std)
    columns = model.sample(20_000, steps=32, generator=torch.Generator().manual_seed(0), batch_size=7_000)
    assert columns.shape == (20_000, 7) and torch.isfinite(columns).all()
    assert torch.allclose(columns.mean(dim=0), mean, atol=4 * 0.05 * std.max())
    assert torch.allclose(columns.std(dim=0) / std, torch.ones(7), atol=0.05)
    obs, act, rew, next_obs, terminal = model.split(columns)
    assert obs.shape == (20_000, 2) and act.shape == (20_000, 1) and rew.shape == (20_000,)
    assert next_obs.shape == (20_000, 2) and set(terminal.unique().tolist()) == {0.0, 1.0}
    assert terminal.mean().item() == pytest.approx(1 - 0.6915, abs=0.015)  # P(N(0, 1) > 0.5)
    assert torch.equal(next_obs, columns[:, 4:6]) and torch.equal(rew, columns[:, 3])


def test_data_statistics_leave_the_terminal_column_raw(hopper):
    columns = transition_columns(hopper.observations, hopper.actions, hopper.rewards, hopper.next_observations,
                                 hopper.terminals)
    assert columns.shape == (len(hopper.rewards), 11 + 3 + 1 + 11 + 1)
    model = TransitionDiffusion(11, 3, TINY)
    model.set_data_stats(columns)
    assert model.mean[-1] == 0 and model.std[-1] == 1
    z = model.normalize(torch.as_tensor(columns))
    assert torch.allclose(z[:, :-1].mean(dim=0), torch.zeros(26), atol=1e-4)
    assert torch.allclose(z[:, :-1].std(dim=0), torch.ones(26), atol=1e-3)


def test_ema_warm_up_and_learning_rate_by_hand():
    config = SyntherConfig()  # ema_start 100, every 10, decay 0.995
    assert ema_decay_at(5, config) is None and ema_decay_at(100, config) == 0.0 and ema_decay_at(110, config) == 0.0
    assert ema_decay_at(120, config) == pytest.approx(1 - 21 ** (-2 / 3))
    assert ema_decay_at(100_000, config) == 0.995
    assert learning_rate(0, 100, config) == pytest.approx(3e-4)
    assert learning_rate(50, 100, config) == pytest.approx(1.5e-4)
    assert learning_rate(0, 100, SyntherConfig(lr_schedule="constant", lr=1e-3)) == 1e-3


# --------------------------------------------------------------------------------------------- fit

def test_fit_writes_the_ema_model_and_a_sample_check(hopper, synther_path):
    report = json.loads(output_paths(synther_path)["report"].read_text())
    assert report["steps_done"] == 40 and report["batch_size"] == 64  # < 800k transitions: small_batch_size
    check = report["sample_check"]
    assert check["samples"] == 200 and 0 <= check["terminal_rate"] <= 1
    assert [r["step"] for r in read_csv(output_paths(synther_path)["log"])] == [10, 20, 30, 40]
    model = TransitionDiffusion.load(synther_path)
    assert model.env == "hopper" and model.trained_on["dataset"] == "random" and model.dim == 27


def test_fit_resumes_to_the_uninterrupted_result(hopper, tmp_path, monkeypatch):
    fit = lambda out: fit_synther(hopper, TINY, out_path=out, device="cpu", seed=1, **FIT)  # noqa: E731
    full = fit(tmp_path / "full" / "s.pt")
    original = TransitionDiffusion.loss
    calls = {"n": 0}

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 27:  # after the checkpoint at step 20
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TransitionDiffusion, "loss", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed" / "s.pt")
    assert not (tmp_path / "resumed" / "s.pt").exists() and (tmp_path / "resumed" / "s.ckpt").exists()
    monkeypatch.setattr(TransitionDiffusion, "loss", original)
    resumed = fit(tmp_path / "resumed" / "s.pt")
    a, b = (TransitionDiffusion.load(tmp_path / d / "s.pt").state_dict() for d in ("full", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = {"wall_time_s", "steps_per_s", "final"}
    assert {k: v for k, v in full.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}
    drop = {"wall_time_s", "steps_per_s"}
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_csv(tmp_path / d / "s.csv")]
            for d in ("full", "resumed")]
    assert rows[0] == rows[1]


# --------------------------------------------------------------------------------------------- runs

def test_upsampling_fills_d_hat_once_with_num_samples_transitions(synther_path):
    model = TransitionDiffusion.load(synther_path)
    source = SyntheticUpsampling(UpsamplingConfig(num_samples=300, sample_steps=4, sample_batch_size=128), model,
                                 seed=5, device=torch.device("cpu"))
    stats = source.before_update(0, None)
    buffer = source.synthetic
    assert buffer.size == 300 and set(buffer.dones.unique().tolist()) <= {0.0, 1.0}
    assert buffer.actions.abs().max() <= 1.0 and 0 <= stats["synthetic/terminal_rate"].item() <= 1
    assert source.before_update(1, None) == {} and buffer.size == 300
    first = buffer.observations.clone()
    again = SyntheticUpsampling(source.config, model, seed=5, device=torch.device("cpu"))
    again.load_state_dict(source.state_dict(), None)  # a resumed run regenerates the same samples
    assert torch.equal(again.synthetic.observations, first)
    wrong = {**source.state_dict(), "fingerprint": source.fingerprint + 1.0}
    with pytest.raises(ValueError, match="regenerated other synthetic transitions"):
        SyntheticUpsampling(source.config, model, seed=5, device=torch.device("cpu")).load_state_dict(wrong, None)


def run_config() -> TrainConfig:
    return TrainConfig.from_dict({
        "run": {"steps": 40, "batch_size": 32, "eval_every": 20, "eval_episodes": 1, "log_every": 10,
                "checkpoint_every": 20, "final_eval_window": 1, "mixing": "fraction", "real_fraction": 0.0},
        "learner": {"hidden_dim": 32},
        "upsampling": {"num_samples": 500, "sample_steps": 4, "sample_batch_size": 250}})


def _inputs(data, model, out_dir, method="synther-td3bc"):
    return RunInputs(method=method, env="hopper", dataset="random", seed=0, out_dir=out_dir, data_path=data,
                     source="generated", synther_path=model, device="cpu", progress=False)


def test_run_resumes_to_the_uninterrupted_result(tiny_random_dataset_path, synther_path, tmp_path, monkeypatch):
    config = run_config()
    final = train(_inputs(tiny_random_dataset_path, synther_path, tmp_path / "full"), config)
    assert final["synthetic"] == "synther" and final["learner"] == "td3bc" and final["synther"] == str(synther_path)
    rows = read_csv(tmp_path / "full" / "train.csv")
    assert rows[0]["synthetic/terminal_rate"] is not None and rows[1]["synthetic/terminal_rate"] is None  # once

    original = TD3BC.update
    calls = {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:  # after the checkpoint at step 20
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(TD3BC, "update", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(tiny_random_dataset_path, synther_path, tmp_path / "resumed"), config)
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert set(checkpoint["closed_loop"]) == {"num_samples", "fingerprint"}  # the samples are not stored
    monkeypatch.setattr(TD3BC, "update", original)
    train(_inputs(tiny_random_dataset_path, synther_path, tmp_path / "resumed"), config)

    full, resumed = (torch.load(tmp_path / d / "policy.pt", weights_only=True) for d in ("full", "resumed"))
    for part in ("actor", "critic"):
        for key, tensor in full["state_dict"][part].items():
            assert torch.equal(tensor, resumed["state_dict"][part][key]), f"{part}.{key}"
    drop = {"wall_time_s", "updates_per_s"}
    for name in ("eval.csv", "train.csv"):
        a, b = (read_csv(tmp_path / d / name) for d in ("full", "resumed"))
        assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
               [{k: v for k, v in r.items() if k not in drop} for r in b]


def test_learner_trains_only_on_samples_with_real_fraction_zero(tiny_random_dataset_path, synther_path, tmp_path,
                                                                monkeypatch):
    """Every batch row is one of the synthetic transitions (none is a row of D)."""
    seen = []
    original = TD3BC.update

    def record(self, batch):
        seen.append(batch.observations.clone())
        return original(self, batch)

    monkeypatch.setattr(TD3BC, "update", record)
    config = TrainConfig.from_dict({"run": {"steps": 5, "batch_size": 16, "eval_every": 5, "eval_episodes": 1,
                                            "mixing": "fraction", "real_fraction": 0.0},
                                    "learner": {"hidden_dim": 16},
                                    "upsampling": {"num_samples": 64, "sample_steps": 4}})
    train(_inputs(tiny_random_dataset_path, synther_path, tmp_path / "run"), config)
    real = torch.as_tensor(load_dataset("hopper", "random", path=tiny_random_dataset_path).observations)
    batch_rows = torch.cat(seen)
    assert batch_rows.shape == (80, 11)
    assert not (torch.cdist(batch_rows, real).min(dim=1).values == 0).any()


def test_missing_or_foreign_model_and_bad_names_are_one_line_errors(tiny_random_dataset_path, synther_path,
                                                                   tmp_path):
    with pytest.raises(ValueError, match="needs a fitted SynthER model: pass --synther"):
        train(_inputs(tiny_random_dataset_path, None, tmp_path / "a"), run_config())
    walker = RunInputs(method="synther-td3bc", env="walker2d", dataset="random", seed=0, out_dir=tmp_path / "b",
                       synther_path=synther_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="trained on hopper, not on this run's env walker2d"):
        train(walker, run_config())
    assert parse_method("synther-iql").needs_synther and parse_method("synther-iql").learner == "iql"
    with pytest.raises(ValueError, match="unknown method 'synther-combo'"):
        parse_method("synther-combo")


def test_cli_fits_a_model_and_trains_synther_iql(tiny_random_dataset_path, tmp_path):
    def adept(*args):
        return subprocess.run([sys.executable, "-m", "adept", *args], capture_output=True, text=True, timeout=300,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})

    fit = adept("synther", "--env", "hopper", "--data", str(tiny_random_dataset_path), "--out", str(tmp_path / "s.pt"),
                "--steps", "10", "--log-every", "5", "--check-samples", "50", "--sample-steps", "4",
                "--set", "synther.width=16", "--set", "synther.blocks=1", "--device", "cpu", "--quiet")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout.splitlines()[-1])["steps_done"] == 10
    run = adept("train", "--method", "synther-iql", "--env", "hopper", "--dataset", "random", "--data",
                str(tiny_random_dataset_path), "--synther", str(tmp_path / "s.pt"), "--out-dir", str(tmp_path / "run"),
                "--set", "run.steps=10", "--set", "run.eval_every=10", "--set", "run.eval_episodes=1",
                "--set", "run.mixing=fraction", "--set", "run.real_fraction=0.0", "--set", "learner.hidden_dim=16",
                "--set", "upsampling.num_samples=100", "--set", "upsampling.sample_steps=4", "--device", "cpu",
                "--quiet")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "final.json").read_text())["method"] == "synther-iql"
    bad = adept("synther", "--env", "hopper", "--data", str(tiny_random_dataset_path), "--out", str(tmp_path / "x.pt"),
                "--set", "synther.widht=16")
    assert bad.returncode == 2 and "widht" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


# ------------------------------------------------------------------------------------------- workflow

def test_drop_in_rules_run_synther_and_diffuser_in_a_dry_run_of_the_test_config(tmp_path):
    overlay = tmp_path / "per_task.yaml"  # per-dataset settings reach the runs as --set flags
    overlay.write_text("task_overrides: {synther-iql: {hopper-random: {learner: {beta: 2.0}}},\n"
                       "                 diffuser: {hopper-random: {learner: {guide_scale: 0.01}}}}\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                             "-n", "-p", "--configfile", str(ROOT / "config" / "test.yaml"), str(overlay)],
                            capture_output=True, text=True, timeout=300,
                            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert counts["baseline_synther_iql"] == counts["synther"] == counts["baseline_diffuser"] == 2  # 2 seeds
    run = next(line for line in out.splitlines() if "adept train --method synther-iql" in line and "--seed 1 " in line)
    assert "--synther results/synther/hopper-random/seed1/synther.pt" in run
    assert "--config results/configs/synther-iql.yaml" in run and "--set learner.beta=2.0" in run
    fit = next(line for line in out.splitlines() if "adept synther " in line and "--seed 0 " in line)
    assert "--out results/synther/hopper-random/seed0/synther.pt" in fit and "--config results/synther/config.yaml" in fit
    assert "synther_training:\n  steps: 50\n" in out  # the fit's settings file, as every fit takes them
    planner = next(line for line in out.splitlines() if "adept train --method diffuser" in line)
    assert "--config results/configs/diffuser.yaml" in planner and "--out-dir results/runs/diffuser/" in planner
    assert "--set learner.guide_scale=0.01" in planner
    assert not any("--method diffuser" in line and "logs/train/" in line for line in out.splitlines())


# ------------------------------------------------------------------------------------------- reporting

def test_table1_cells_of_synther_and_diffuser_are_ours_vs_the_paper(tmp_path):
    """Runs of synther-iql and diffuser fill the paper's SynthER and Diffuser columns: their reported-only
    columns disappear and each cell is ours (paper, ours - paper)."""
    from adept.reporting import build_table1, load_runs, render_markdown
    from tests.test_reporting import make_spec, markdown_rows, reported, write_run

    runs = tmp_path / "runs"
    for method in ("synther-iql", "diffuser"):
        for env in ("hopper", "halfcheetah"):
            for dataset in ("random", "medium"):
                for seed in (0, 1, 2):
                    write_run(runs, method, env, dataset, seed, 10.0 + seed)
    spec = make_spec(runs, table1={"methods": ["synther-iql", "diffuser"]})
    rows = markdown_rows(render_markdown(build_table1(spec, load_runs(runs, spec.methods, spec.tasks, spec.seeds))))
    header = rows[("header", "")]
    assert header[:2] == ["SynthER (IQL)", "Diffuser"]
    assert "SynthER (paper)" not in header and "Diffuser (paper)" not in header and "MOPO (paper)" in header
    for column, name in enumerate(("SynthER", "Diffuser")):
        paper = reported(name, "hopper", "random")
        assert rows[("random", "hopper")][column] == f"11.0 ± 0.8 ({paper:.1f}, {11.0 - paper:+.1f})"
