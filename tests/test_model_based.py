"""MOPO and COMBO: the dynamics ensemble (fit, elites, resume, termination rules), MOPO's penalty and
COMBO's conservative term on hand-computable cases, runs through the runner (resume = uninterrupted,
Theorem 4.4 and gt/ diagnostics for the ensemble), bad input, and the drop-in rules in a dry run."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adept.config import ConfigError, to_dict
from adept.data import generate, load_dataset
from adept.ensemble import EnsembleConfig, EnsembleDynamics, mopo_penalty, termination_rule
from adept.ensemble_training import fit_ensemble, output_paths
from adept.model_rollouts import ModelRolloutConfig, ModelRollouts
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from baselines import make_learner
from baselines.combo import COMBO
from baselines.replay import MixedSampler, TensorBuffer
from baselines.sac import SAC

ROOT = Path(__file__).resolve().parents[1]
TINY_ENSEMBLE = EnsembleConfig(num_members=3, num_elites=2, hidden_dim=32, depth=2, batch_size=64,
                               weight_decay=(2.5e-5, 5e-5, 1e-4))
TINY_FIT = {"max_steps": 60, "eval_every": 20, "checkpoint_every": 20, "max_holdout": 200, "progress": False}
RUN = {"run": {"steps": 40, "batch_size": 32, "eval_every": 20, "eval_episodes": 1, "log_every": 10,
               "checkpoint_every": 20, "final_eval_window": 1, "mixing": "fraction"},
       "learner": {"hidden_dim": 32},
       "model_rollouts": {"epoch_steps": 10, "rollouts_per_epoch": 16, "horizon": 3, "retain_epochs": 4,
                          "diagnostics_samples": 32, "ground_truth_states": 8}}
METHOD_RUN = {"mopo": {"run": {"real_fraction": 0.25}, "model_rollouts": {"penalty_coef": 1.0}},
              "combo": {"run": {"real_fraction": 0.5}, "learner": {"num_sampled_actions": 2}}}


def method_config(method: str) -> TrainConfig:
    extra = METHOD_RUN[method]
    return TrainConfig.from_dict({section: {**RUN.get(section, {}), **extra.get(section, {})}
                                  for section in {*RUN, *extra}})


@pytest.fixture(scope="module")
def hopper(tiny_random_dataset_path):
    return load_dataset("hopper", "random", path=tiny_random_dataset_path)


@pytest.fixture(scope="module")
def ensemble_path(hopper, tmp_path_factory):
    """A tiny ensemble fitted on the tiny hopper-random dataset, as `adept ensemble` writes it."""
    out = tmp_path_factory.mktemp("ensemble") / "ensemble.pt"
    fit_ensemble(hopper, TINY_ENSEMBLE, device="cpu", seed=0, out_path=out, **TINY_FIT)
    return out


# ------------------------------------------------------------------------------------ MOPO's penalty

def test_mopo_penalty_is_the_largest_member_norm_on_a_hand_computed_case():
    std = torch.tensor([[[3.0, 4.0], [1.0, 0.0]],     # member 0: rows with ||sigma|| 5 and 1
                        [[0.0, 1.0], [2.0, 2.0]]])    # member 1: rows with ||sigma|| 1 and sqrt(8)
    assert torch.allclose(mopo_penalty(std, "std"), torch.tensor([5.0, math.sqrt(8.0)]))
    # ||Sigma||_F of the diagonal covariance = ||sigma^2||_2: row 0 sqrt(81 + 256), row 1 sqrt(16 + 16)
    assert torch.allclose(mopo_penalty(std, "variance"), torch.tensor([math.sqrt(337.0), math.sqrt(32.0)]))


def _constant_ensemble(logvars: list[float], reward_mean: float) -> EnsembleDynamics:
    """An ensemble whose members predict delta s = 0, r = reward_mean and raw log-variance logvars[i] in
    every output dimension, whatever (s, a): zero weights, biases set by hand."""
    config = EnsembleConfig(num_members=len(logvars), num_elites=1, hidden_dim=4, depth=1, weight_decay=(0.0, 0.0))
    model = EnsembleDynamics(11, 3, "hopper", config)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        out_dim = model.obs_dim + 1
        model.layers[-1].bias[:, 0, out_dim - 1] = reward_mean
        for i, logvar in enumerate(logvars):
            model.layers[-1].bias[i, 0, out_dim:] = logvar
    model.set_elites([0])
    return model


def _soft_bounded(raw: float, low: float = -10.0, high: float = 0.5) -> float:
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    bounded = high - softplus(high - raw)
    return low + softplus(bounded - low)


def test_rollout_rewards_are_penalised_by_lambda_times_the_hand_computed_uncertainty(hopper):
    """h = 1 rollouts from the same states with the same noise, lambda = 0 and lambda = 2: every model
    reward differs by exactly 2 u, u = max_i ||sigma_i|| = sqrt(12) exp(lv_max / 2) (12 output dims)."""
    logvars = [-2.0, -1.0, -3.0]
    expected_u = math.sqrt(12) * math.exp(0.5 * max(_soft_bounded(v) for v in logvars))
    real = TensorBuffer.from_dataset(hopper, "cpu")
    rewards = {}
    for coef in (0.0, 2.0):
        config = ModelRolloutConfig(epoch_steps=10, rollouts_per_epoch=50, horizon=1, penalty_coef=coef,
                                    diagnostics_samples=0, ground_truth_states=0)
        source = ModelRollouts(config, _constant_ensemble(logvars, reward_mean=1.5), real,
                               generator=torch.Generator().manual_seed(3))
        learner = make_learner("sac", 11, 3, "cpu", overrides={"hidden_dim": 8, "seed": 0})
        stats = source.before_update(0, learner)
        assert source.synthetic.size == 50
        assert stats["rollout/uncertainty_mean"].item() == pytest.approx(expected_u, rel=1e-5)
        rewards[coef] = source.synthetic.rewards[:50].clone()
    assert torch.allclose(rewards[0.0] - rewards[2.0], torch.full((50,), 2.0 * expected_u), atol=1e-5)
    # the unpenalised rewards are samples of the elite's N(1.5, exp(lv_0))
    assert abs(rewards[0.0].mean().item() - 1.5) < 4 * math.exp(0.5 * _soft_bounded(-2.0)) / math.sqrt(50)


# --------------------------------------------------------------------------- COMBO's conservative term

def test_combo_conservative_term_on_a_hand_computed_case(monkeypatch):
    """With the logsumexp stubbed to a known value per row (row i: i), the gap is the mean over the rho
    rows minus the mean Q of the real rows' (s, a): 'mix' takes rho = all 8 rows, 'model' rows 3..7."""
    q = torch.tensor([[1.0, 2.0, 3.0, 9.0, 9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 6.0, 9.0, 9.0, 9.0, 9.0, 9.0]])
    obs, next_obs = torch.zeros(8, 3), torch.zeros(8, 3)
    obs[:, 0] = torch.arange(8.0)
    stub = lambda self, o, n: o[:, 0].expand(2, -1)  # noqa: E731
    monkeypatch.setattr(COMBO, "_sampled_q_logsumexp", stub)
    mix = make_learner("combo", 3, 2, "cpu", overrides={"hidden_dim": 8, "batch_size": 8, "real_rows": 3})
    model = make_learner("combo", 3, 2, "cpu", overrides={"hidden_dim": 8, "batch_size": 8, "real_rows": 3,
                                                          "conservative_states": "model"})
    # mix: mean(0..7) = 3.5; real Q means: critic 0 (1+2+3)/3 = 2, critic 1 (0+0+6)/3 = 2
    assert torch.allclose(mix._conservative_gap(obs, next_obs, q), torch.tensor([1.5, 1.5]))
    # model: mean(3..7) = 5
    assert torch.allclose(model._conservative_gap(obs, next_obs, q), torch.tensor([3.0, 3.0]))


def test_combo_update_pushes_up_only_the_real_rows(monkeypatch):
    """In a real update, the logged gap equals mean(stub over rho) - mean over the real rows of the
    critic's Q(s, a) before the step: model rows never enter the push-up."""
    stub = lambda self, o, n: o[:, 0].expand(2, -1)  # noqa: E731
    monkeypatch.setattr(COMBO, "_sampled_q_logsumexp", stub)
    learner = make_learner("combo", 3, 2, "cpu", overrides={"hidden_dim": 8, "batch_size": 8, "real_rows": 2,
                                                            "conservative_states": "model", "normalize_obs": False})
    generator = torch.Generator().manual_seed(0)
    obs, next_obs = torch.randn(8, 3, generator=generator), torch.randn(8, 3, generator=generator)
    actions = torch.rand(8, 2, generator=generator) * 2 - 1
    batch = TensorBuffer.from_arrays(obs, actions, torch.zeros(8), next_obs, torch.zeros(8), "cpu").batch_at(
        torch.arange(8))
    with torch.no_grad():
        q_real = learner.critic(obs[:2], actions[:2]).mean(dim=1)
    metrics = learner.update(batch)
    expected = (obs[2:, 0].mean() - q_real).mean()
    assert metrics["cql_gap"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_fraction_sampler_puts_the_real_rows_first_and_says_where_they_end():
    real = TensorBuffer.from_arrays(np.zeros((10, 2)), np.zeros((10, 1)), np.zeros(10), np.zeros((10, 2)),
                                    np.zeros(10), "cpu")
    synthetic = TensorBuffer(10, 2, 1, "cpu")
    sampler = MixedSampler(real, synthetic, 8, rule="fraction", real_fraction=0.25,
                           generator=torch.Generator().manual_seed(0))
    assert sampler.real_rows == 8  # D-hat empty: every row is real
    synthetic.add(np.ones((5, 2)), np.ones((5, 1)), np.ones(5), np.ones((5, 2)), np.zeros(5))
    assert sampler.real_rows == 2
    batch = sampler.sample()
    assert batch.rewards.tolist() == [0.0, 0.0] + [1.0] * 6
    assert MixedSampler(real, synthetic, 8, rule="uniform").real_rows is None


# ------------------------------------------------------------------------------------------ ensemble

@pytest.mark.parametrize("env", ["hopper", "walker2d", "halfcheetah"])
def test_termination_rules_match_the_simulator(env, tiny_random_dataset_path, tmp_path):
    """The rule on s' agrees with the env's own terminal flags on every row of a generated dataset."""
    path = tiny_random_dataset_path if env == "hopper" else generate(env, "random", seed=0, size=1500,
                                                                     out=tmp_path / f"{env}.hdf5", progress=False)
    data = load_dataset(env, "random", path=path)
    predicted = termination_rule(env)(torch.as_tensor(data.next_observations)).numpy()
    assert np.array_equal(predicted, data.terminals)
    if env != "halfcheetah":
        assert data.terminals.sum() > 10  # random hopper/walker2d episodes end by falling


def test_elites_are_the_members_with_the_lowest_held_out_error(hopper, ensemble_path):
    report = json.loads(output_paths(ensemble_path)["report"].read_text())
    best = report["best_heldout_mse"]
    assert report["elites"] == sorted(np.argsort(best)[:TINY_ENSEMBLE.num_elites].tolist())
    model = EnsembleDynamics.load(ensemble_path)
    assert model.elites.tolist() == report["elites"]
    # each member is restored to its best held-out snapshot: its MSE on the held-out rows is the best one
    from adept.model_rollouts import ensemble_split

    _, heldout = ensemble_split(model, hopper)
    assert len(heldout) == report["heldout_transitions"] == 200
    rows = [torch.as_tensor(getattr(hopper, k)[heldout]) for k in ("observations", "actions", "rewards",
                                                                    "next_observations")]
    assert model.member_mse(*rows).tolist() == pytest.approx(best, rel=1e-5)
    log = read_csv(output_paths(ensemble_path)["log"])
    assert [r["step"] for r in log] == [20, 40, 60]
    for i in range(TINY_ENSEMBLE.num_members):
        assert best[i] == pytest.approx(min(r[f"heldout_mse_{i}"] for r in log), rel=1e-6)


def test_fit_stops_when_no_member_improves_for_patience_evaluations(hopper, tmp_path):
    report = fit_ensemble(hopper, TINY_ENSEMBLE, device="cpu", seed=0, out_path=tmp_path / "e.pt",
                          **{**TINY_FIT, "max_steps": 10_000, "eval_every": 10}, patience=2, min_improvement=0.5)
    log = read_csv(tmp_path / "e.csv")
    assert report["stopped_early"] and report["steps_done"] < 10_000
    assert [r["members_improved"] for r in log][-2:] == [0, 0] and log[-3]["members_improved"] > 0


def test_ensemble_fit_resumes_to_the_uninterrupted_result(hopper, tmp_path, monkeypatch):
    fit = lambda out: fit_ensemble(hopper, TINY_ENSEMBLE, device="cpu", seed=1, out_path=out, **TINY_FIT)  # noqa: E731
    full = fit(tmp_path / "full" / "e.pt")
    original = EnsembleDynamics.fit_loss
    calls = {"n": 0}

    def crash(self, *args):
        calls["n"] += 1
        if calls["n"] == 47:  # after the checkpoint at step 40
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(EnsembleDynamics, "fit_loss", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed" / "e.pt")
    assert not (tmp_path / "resumed" / "e.pt").exists() and (tmp_path / "resumed" / "e.ckpt").exists()
    monkeypatch.setattr(EnsembleDynamics, "fit_loss", original)
    resumed = fit(tmp_path / "resumed" / "e.pt")

    a, b = (EnsembleDynamics.load(tmp_path / d / "e.pt").state_dict() for d in ("full", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = {"wall_time_s", "steps_per_s", "final"}
    assert {k: v for k, v in full.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}
    drop = {"wall_time_s", "steps_per_s"}
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_csv(tmp_path / d / "e.csv")]
            for d in ("full", "resumed")]
    assert rows[0] == rows[1]


# ------------------------------------------------------------------------------------- runs

def _inputs(data, ensemble, out_dir, method):
    return RunInputs(method=method, env="hopper", dataset="random", seed=0, out_dir=out_dir, data_path=data,
                     source="generated", ensemble_path=ensemble, device="cpu", progress=False)


@pytest.mark.parametrize("method, learner_cls", [("mopo", SAC), ("combo", COMBO)])
def test_run_resumes_to_the_uninterrupted_result(method, learner_cls, tiny_random_dataset_path, ensemble_path,
                                                 tmp_path, monkeypatch):
    config = method_config(method)
    final = train(_inputs(tiny_random_dataset_path, ensemble_path, tmp_path / "full", method), config)
    assert final["synthetic"] == "ensemble" and final["ensemble"] == str(ensemble_path)
    if method == "combo":
        assert final["learner_config"]["real_rows"] == 16  # run.real_fraction 0.5 of run.batch_size 32
    evals = read_csv(tmp_path / "full" / "eval.csv")
    for column in ("eps_m", "eps_r", "J_hat", "J", "gt/onestep_state_mse_policy", "gt/rollout_state_mse_mean"):
        assert all(math.isfinite(row[column]) for row in evals), column  # the ensemble's model errors
    train_rows = read_csv(tmp_path / "full" / "train.csv")
    assert any(row.get("rollout/uncertainty_mean") not in (None, "") for row in train_rows)

    original = learner_cls.update
    calls = {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:  # after the checkpoint at step 20, mid-epoch
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(learner_cls, "update", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(tiny_random_dataset_path, ensemble_path, tmp_path / "resumed", method), config)
    monkeypatch.setattr(learner_cls, "update", original)
    train(_inputs(tiny_random_dataset_path, ensemble_path, tmp_path / "resumed", method), config)

    full, resumed = (torch.load(tmp_path / d / "policy.pt", weights_only=True) for d in ("full", "resumed"))
    for part in ("actor", "critic"):
        for key, tensor in full["state_dict"][part].items():
            assert torch.equal(tensor, resumed["state_dict"][part][key]), f"{part}.{key}"
    drop = {"wall_time_s", "updates_per_s"}
    for name in ("eval.csv", "train.csv"):
        a, b = (read_csv(tmp_path / d / name) for d in ("full", "resumed"))
        assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
               [{k: v for k, v in r.items() if k not in drop} for r in b]


@pytest.mark.parametrize("method, change, message", [
    ("mopo", {"run": {"mixing": "uniform"}}, "set run.mixing=fraction"),
    ("mopo", {"model_rollouts": {"penalty_coef": 0.0}}, "set model_rollouts.penalty_coef > 0"),
    ("combo", {"model_rollouts": {"penalty_coef": 1.0}}, "set model_rollouts.penalty_coef=0"),
    ("combo", {"run": {"real_fraction": 1.0}}, "real_rows must be in [1, batch_size - 1]"),
])
def test_settings_that_are_not_the_method_are_refused_before_any_output(method, change, message,
                                                                        tiny_random_dataset_path, ensemble_path,
                                                                        tmp_path):
    values = to_dict(method_config(method))
    for section, update in change.items():
        values[section].update(update)
    with pytest.raises((ConfigError, ValueError), match=re.escape(message)):
        train(_inputs(tiny_random_dataset_path, ensemble_path, tmp_path / "run", method), TrainConfig.from_dict(values))
    assert not (tmp_path / "run" / "final.json").exists() and not (tmp_path / "run" / "eval.csv").exists()


def test_missing_or_foreign_ensemble_is_a_one_line_error(tiny_random_dataset_path, ensemble_path, tmp_path):
    with pytest.raises(ValueError, match="needs a fitted dynamics ensemble: pass --ensemble"):
        train(_inputs(tiny_random_dataset_path, None, tmp_path / "a", "mopo"), method_config("mopo"))
    walker = RunInputs(method="mopo", env="walker2d", dataset="random", seed=0, out_dir=tmp_path / "b",
                       ensemble_path=ensemble_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="trained on hopper, not on this run's env walker2d"):
        train(walker, method_config("mopo"))
    with pytest.raises(ValueError, match=r"unknown method 'adept-combo'.*'combo', 'mopo'"):
        train(_inputs(tiny_random_dataset_path, ensemble_path, tmp_path / "c", "adept-combo"), method_config("mopo"))


def test_cli_fits_an_ensemble_and_trains_mopo(tiny_random_dataset_path, tmp_path):
    def adept(*args):
        return subprocess.run([sys.executable, "-m", "adept", *args], capture_output=True, text=True, timeout=300,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})

    fit = adept("ensemble", "--env", "hopper", "--data", str(tiny_random_dataset_path), "--out",
                str(tmp_path / "e.pt"), "--max-steps", "20", "--eval-every", "10", "--max-holdout", "100",
                "--set", "ensemble.num_members=2", "--set", "ensemble.num_elites=1", "--set", "ensemble.hidden_dim=16",
                "--device", "cpu", "--quiet")
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout.splitlines()[-1])["steps_done"] == 20
    run = adept("train", "--method", "mopo", "--env", "hopper", "--dataset", "random", "--data",
                str(tiny_random_dataset_path), "--ensemble", str(tmp_path / "e.pt"), "--out-dir", str(tmp_path / "run"),
                "--set", "run.steps=10", "--set", "run.eval_every=10", "--set", "run.eval_episodes=1",
                "--set", "run.mixing=fraction", "--set", "run.real_fraction=0.05", "--set", "learner.hidden_dim=16",
                "--set", "model_rollouts.penalty_coef=1.0", "--set", "model_rollouts.rollouts_per_epoch=8",
                "--set", "model_rollouts.ground_truth_states=0", "--device", "cpu", "--quiet")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "final.json").read_text())["method"] == "mopo"
    bad = adept("train", "--method", "mopo", "--env", "hopper", "--dataset", "random", "--data",
                str(tiny_random_dataset_path), "--ensemble", str(tmp_path / "e.pt"), "--out-dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: mopo trains on a fixed share of real data")
    assert len(bad.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ workflow

def test_drop_in_rules_run_mopo_and_combo_in_a_dry_run_of_the_test_config(tmp_path):
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                             "-n", "-p", "--configfile", str(ROOT / "config" / "test.yaml")],
                            capture_output=True, text=True, timeout=300,
                            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert counts["baseline_mopo"] == counts["baseline_combo"] == counts["ensemble"] == 2  # 2 seeds, one ensemble each
    mopo = next(line for line in out.splitlines() if "adept train --method mopo" in line and "--seed 1 " in line)
    assert "--ensemble results/ensembles/hopper-random/seed1/ensemble.pt" in mopo
    assert "--config results/configs/mopo.yaml" in mopo
    # MOPO's hopper-random setting (h = 5, lambda = 1) arrives as --set flags
    assert "--set model_rollouts.horizon=5" in mopo and "--set model_rollouts.penalty_coef=1.0" in mopo
    combo = next(line for line in out.splitlines() if "adept train --method combo" in line and "--seed 0 " in line)
    assert "--set learner.cql_alpha=1.0" in combo
    fit = next(line for line in out.splitlines() if "adept ensemble" in line and "--seed 0 " in line)
    assert "--out results/ensembles/hopper-random/seed0/ensemble.pt" in fit
