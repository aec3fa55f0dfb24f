"""fit_behavior_policy recovers a known behaviour policy, selects on held-out NLL, and the
`adept behavior-policy` command writes a loadable policy and its report."""
import argparse
import json

import numpy as np
import pytest
import torch

from adept.commands import behavior_policy
from adept.config import ConfigError
from adept.data.dataset import split_holdout
from adept.behavior_policy_training import fit_behavior_policy
from baselines import BC, load_learner

WEIGHTS = np.array([[0.8, -0.3], [0.2, 0.6]], np.float32)
SIGMA = np.array([0.2, 0.5], np.float32)



def behaviour_data(num: int, seed: int = 0):
    """a = tanh(u), u ~ N(s W, diag(SIGMA^2)): a tanh-Gaussian behaviour policy with known parameters."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num, 2)).astype(np.float32)
    u = obs @ WEIGHTS + SIGMA * rng.normal(size=(num, 2)).astype(np.float32)
    return obs, np.tanh(u).astype(np.float32), u


def true_nll(obs, actions, u) -> float:
    log_normal = -0.5 * ((u - obs @ WEIGHTS) / SIGMA) ** 2 - np.log(SIGMA) - 0.5 * np.log(2 * np.pi)
    return float(-(log_normal - np.log1p(-actions.astype(np.float64) ** 2)).sum(axis=1).mean())


def test_fit_recovers_a_known_gaussian_behaviour_policy():
    obs, actions, u = behaviour_data(20_000)
    learner, report = fit_behavior_policy(obs, actions, config={"hidden_dim": 64}, seed=0, max_steps=2_000,
                                          eval_every=250, patience=None)
    assert isinstance(learner, BC)
    test_obs = np.random.default_rng(1).normal(size=(500, 2)).astype(np.float32)
    with torch.no_grad():
        mean, log_std = learner.actor(learner.normalizer.observations(torch.as_tensor(test_obs)))
    assert np.abs(mean.numpy() - test_obs @ WEIGHTS).mean() < 0.05
    np.testing.assert_allclose(log_std.exp().mean(dim=0).numpy(), SIGMA, rtol=0.1)
    # its held-out NLL is that of the true policy, up to sampling noise (1000 held-out transitions)
    _, heldout = split_holdout(len(obs), 0.05, seed=0)
    assert report["best_heldout_nll"] == pytest.approx(true_nll(obs[heldout], actions[heldout], u[heldout]), abs=0.05)
    assert len(report["history"]) == 8 and report["steps_trained"] == 2_000 and not report["stopped_early"]
    assert report["num_train"] + report["num_heldout"] == 20_000 and report["num_heldout"] == 1_000


def test_model_selection_keeps_the_best_heldout_nll_and_stops_on_patience():
    # 200 transitions and a wide network overfit quickly: the held-out NLL turns up.
    obs, actions, _ = behaviour_data(200, seed=3)
    learner, report = fit_behavior_policy(obs, actions, config={"hidden_dim": 256, "lr": 3e-3}, seed=0,
                                          max_steps=4_000, eval_every=50, holdout_fraction=0.25, patience=5)
    heldout_curve = [record["heldout_nll"] for record in report["history"]]
    best = int(np.argmin(heldout_curve))
    assert report["best_step"] == report["history"][best]["step"]
    assert report["best_heldout_nll"] == heldout_curve[best]
    assert report["stopped_early"] and len(heldout_curve) == best + 1 + 5  # 5 evaluations without improvement
    assert heldout_curve[-1] > heldout_curve[best]
    # the returned parameters are the selected ones, not the last ones
    _, heldout = split_holdout(len(obs), 0.25, seed=0)
    assert learner.mean_nll(torch.as_tensor(obs[heldout]), torch.as_tensor(actions[heldout])) == pytest.approx(
        report["best_heldout_nll"], abs=1e-5)
    assert learner.num_updates == report["best_step"]
    # training NLL keeps falling below the held-out NLL: the selection had something to do
    assert report["history"][-1]["train_nll"] < heldout_curve[-1]


def test_fit_rejects_bad_input():
    obs, actions, _ = behaviour_data(100)
    with pytest.raises(ValueError, match="same N"):
        fit_behavior_policy(obs[:50], actions)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fit_behavior_policy(obs, actions * 3)
    with pytest.raises(ValueError, match="holdout_fraction"):
        fit_behavior_policy(obs, actions, holdout_fraction=0.0)
    with pytest.raises(ValueError, match="finite"):
        fit_behavior_policy(np.full_like(obs, np.nan), actions)


def run_command(argv: list[str]) -> int:
    """The command as `python -m adept` runs it (its parser registered on a fresh host parser)."""
    parser = argparse.ArgumentParser(prog="adept")
    behavior_policy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_behavior_policy_command_writes_policy_and_report(tiny_random_dataset_path, tmp_path, capsys):
    out = tmp_path / "pi_D.pt"
    status = run_command(["behavior-policy", "--env", "hopper", "--data", str(tiny_random_dataset_path),
                          "--seed", "1", "--out", str(out), "--steps", "300", "--eval-every", "100",
                          "--set", "behavior_policy.learner.hidden_dim=32", "--device", "cpu"])
    assert status == 0
    assert "held-out NLL" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["env"] == "hopper" and report["dataset"] == "random" and report["config"]["hidden_dim"] == 32
    assert [r["step"] for r in report["history"]] == [100, 200, 300]
    policy = load_learner(out, "cpu")
    assert policy.name == "bc" and policy.config.seed == 1
    assert policy.log_prob(torch.zeros(4, 11), torch.zeros(4, 3)).shape == (4,)

    with pytest.raises(ConfigError, match=r"behavior_policy\.learner: unknown key\(s\) \['hiden_dim'\]; valid keys"):
        run_command(["behavior-policy", "--env", "hopper", "--data", str(tiny_random_dataset_path),
                     "--out", str(tmp_path / "x.pt"), "--set", "behavior_policy.learner.hiden_dim=32"])
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['bc'\] .*valid sections are "
                                          r"\['behavior_policy'\]"):
        run_command(["behavior-policy", "--env", "hopper", "--data", str(tiny_random_dataset_path),
                     "--out", str(tmp_path / "x.pt"), "--set", "bc.lr=1e-3"])


def test_behavior_policy_settings_from_a_config_file_and_set(tmp_path):
    from adept.behavior_policy_training import BehaviorPolicyFitConfig
    from adept.commands.behavior_policy import BEHAVIOR_POLICY_FLAGS, load_behavior_policy_settings

    path = tmp_path / "pi.yaml"
    path.write_text("behavior_policy: {steps: 300, eval_every: 100, learner: {hidden_dim: 32}}\n")
    fit = load_behavior_policy_settings(path, ["behavior_policy.learner.lr=1e-4", "behavior_policy.patience=0"])
    fit = fit.behavior_policy
    assert (fit.steps, fit.eval_every, fit.patience, fit.learner.hidden_dim, fit.learner.lr) == (300, 100, 0, 32, 1e-4)
    path.write_text("behavior_policy: {step: 300}\n")
    with pytest.raises(ConfigError, match=r"behavior_policy: unknown key\(s\) \['step'\]; valid keys are .* "
                                          r"\(.*pi\.yaml\): fix that entry of the file") as err:
        load_behavior_policy_settings(path, [])
    assert "\n" not in str(err.value)
    assert set(BEHAVIOR_POLICY_FLAGS) <= set(BehaviorPolicyFitConfig.__dataclass_fields__)
