"""The simulator as ground truth (adept.ground_truth): restored MuJoCo states, exact models give zero error,
independent re-computations of the rollout metrics, masking at true terminals, the gt/ columns of a run."""
from __future__ import annotations

import logging
import math
import shutil

import h5py
import numpy as np
import pytest
import torch

from adept.data import generate, load_dataset
from adept.diagnostics import return_gap_bound, return_gap_bound_appendix
from adept.envs import make_env
from adept.ground_truth import GroundTruth, Simulator, simulator_states
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from adept.world_model import WorldModel, WorldModelConfig
from adept.world_model_training import train_world_model
from adept.behavior_policy_training import fit_behavior_policy
from baselines import make_learner, save_learner

GAMMA = 0.99
REQUIRED = (["gt/onestep_state_mse_data", "gt/onestep_reward_mse_data", "gt/onestep_terminal_agreement_data",
             "gt/onestep_state_mse_policy", "gt/onestep_reward_mse_policy", "gt/onestep_terminal_agreement_policy"]
            + [f"gt/rollout_state_mse_t{t}" for t in (1, 2, 3)]
            + ["gt/rollout_state_mse_mean", "gt/rollout_reward_mse_mean", "gt/J_H", "gt/J_hat_H", "gt/return_gap",
               "gt/eps_r", "gt/eps_m", "gt/eps_pi", "gt/C_eq9", "gt/C_appendix", "gt/sim_floor_state_mse",
               "gt/sim_floor_reward_mse", "gt/states"])


class LinearPolicy:
    """a = tanh(W s): deterministic, so the simulator and the model rollouts take the same actions."""

    def __init__(self, obs_dim: int, act_dim: int, scale: float = 0.3, seed: int = 0):
        self.weight = torch.randn(obs_dim, act_dim, generator=torch.Generator().manual_seed(seed)) * scale

    def act(self, obs, deterministic=True, generator=None):
        return torch.tanh(obs @ self.weight)

    def numpy(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(obs.astype(np.float32) @ self.weight.numpy())


class ToyModel:
    """The interface of WorldModel that the ground truth uses, with the dataset's normalization."""

    def __init__(self, dataset):
        self.obs_dim, self.act_dim = dataset.obs_dim, dataset.act_dim
        self.obs_mean = torch.as_tensor(dataset.observations.mean(0))
        self.obs_std = torch.as_tensor(dataset.observations.std(0) + 1e-3)
        self.reward_std = torch.as_tensor(dataset.rewards.std())
        self.reward_abs_max = torch.as_tensor(np.abs(dataset.rewards).max())
        self.device = torch.device("cpu")

    def normalize_obs(self, obs):
        return (obs - self.obs_mean) / self.obs_std


class CopyModel(ToyModel):
    """s' = s, reward 0, never terminal."""

    def step(self, obs, act, generator=None):
        return obs.clone(), torch.zeros(len(obs)), torch.zeros(len(obs), dtype=torch.bool)


class HalfCheetahOracle(ToyModel):
    """The simulator itself: halfcheetah's observation (qpos[1:], qvel) is its whole state, because
    neither the dynamics nor the reward depend on the root's x position."""

    def __init__(self, dataset):
        super().__init__(dataset)
        self.simulator = Simulator("halfcheetah")

    def step(self, obs, act, generator=None):
        obs = obs.double().numpy()
        qpos = np.concatenate([np.zeros((len(obs), 1)), obs[:, :8]], axis=1)
        out = self.simulator.step(qpos, obs[:, 8:], act.numpy())
        return (torch.as_tensor(out.next_observations), torch.as_tensor(out.rewards),
                torch.as_tensor(out.terminated))


@pytest.fixture(scope="module")
def halfcheetah(tmp_path_factory):
    path = generate("halfcheetah", "random", seed=0, size=1000,
                    out=tmp_path_factory.mktemp("hc") / "halfcheetah.hdf5", progress=False)
    return load_dataset("halfcheetah", "random", "generated", path=path)


@pytest.fixture(scope="module")
def hopper(tiny_random_dataset_path):
    return load_dataset("hopper", "random", "generated", path=tiny_random_dataset_path)


def test_simulator_restores_dataset_rows_and_each_step_is_a_pure_function(hopper):
    sim = Simulator("hopper")
    rows = np.arange(0, 5000, 37)
    qpos, qvel = hopper.infos["qpos"][rows], hopper.infos["qvel"][rows]
    np.testing.assert_allclose(sim.observe(qpos, qvel), hopper.observations[rows], atol=1e-6)
    step = sim.step(qpos, qvel, hopper.actions[rows])
    np.testing.assert_allclose(step.next_observations, hopper.next_observations[rows], atol=1e-5)
    np.testing.assert_allclose(step.rewards, hopper.rewards[rows], atol=1e-5)
    assert (step.terminated == hopper.terminals[rows]).all()
    # The same rows in reverse order give bit-identical results (no warm start carried between rows).
    backwards = sim.step(qpos[::-1], qvel[::-1], hopper.actions[rows][::-1])
    assert np.array_equal(backwards.next_observations[::-1], step.next_observations)
    assert np.array_equal(backwards.qvel[::-1], step.qvel)
    # Inactive rows are not stepped.
    frozen = sim.step(qpos, qvel, hopper.actions[rows], active=np.zeros(len(rows), bool))
    assert np.array_equal(frozen.qpos, qpos) and (frozen.rewards == 0).all()


def test_an_exact_model_has_zero_error_and_no_return_gap(halfcheetah):
    states = simulator_states(halfcheetah, np.arange(40))
    policy = LinearPolicy(17, 6)
    horizon = 5
    truth = GroundTruth("halfcheetah", states, num_states=100, horizon=horizon, gamma=GAMMA, tolerance=0.1,
                        deterministic_policy=True)
    report = truth.measure(HalfCheetahOracle(halfcheetah), policy, None, torch.Generator().manual_seed(0))
    assert report["gt/states"] == 40
    for key in ("sim_floor_state_mse", "sim_floor_reward_mse", "onestep_state_mse_data", "onestep_reward_mse_data",
                "onestep_state_mse_policy", "rollout_state_mse_mean", "rollout_reward_mse_mean", "eps_m", "eps_r"):
        assert report[f"gt/{key}"] < 1e-8, key
    assert report["gt/onestep_terminal_agreement_data"] == report["gt/onestep_terminal_agreement_policy"] == 1.0
    assert report["gt/eps_m_tv"] == report["gt/eps_r_tv"] == report["gt/eps_pi"] == 0.0
    assert report["gt/C_eq9"] < 1e-3 and report["gt/C_appendix_H_tv"] == 0.0

    # J_H recomputed independently: each row simulated on its own env, as an ordinary episode would.
    env = make_env("halfcheetah", seed=0)
    returns = []
    for qpos, qvel in zip(states.qpos, states.qvel):
        env.unwrapped.set_state(qpos, qvel)
        obs, total = env.unwrapped._get_obs(), 0.0
        for t in range(horizon):
            obs, reward, *_ = env.unwrapped.step(policy.numpy(obs[None])[0])
            total += GAMMA ** t * reward
        returns.append(total)
    assert report["gt/J_H"] == pytest.approx(np.mean(returns), rel=1e-4)
    assert report["gt/J_hat_H"] == pytest.approx(report["gt/J_H"], rel=1e-4)
    assert report["gt/J_openloop_H"] == pytest.approx(report["gt/J_H"], rel=1e-4)
    assert report["gt/return_gap"] < 1e-3 * abs(report["gt/J_H"]) + 1e-4


def test_rollout_errors_match_an_independent_simulation_with_terminals(hopper):
    """Copy model (s' = s, r = 0, never terminal) on hopper: every number re-derived with a plain env loop,
    trajectories stopping at the first true terminal (the terminal transition counted)."""
    rows = np.arange(300)
    states = simulator_states(hopper, rows)
    policy, model, horizon = LinearPolicy(11, 3, scale=1.0, seed=1), CopyModel(hopper), 10
    truth = GroundTruth("hopper", states, num_states=300, horizon=horizon, gamma=GAMMA, tolerance=0.1,
                        deterministic_policy=True)
    report = truth.measure(model, policy, None, torch.Generator().manual_seed(0))

    def z(x):
        return (x - model.obs_mean.numpy()) / model.obs_std.numpy()

    std2 = float(model.reward_std) ** 2
    env = make_env("hopper", seed=0)
    open_loop = [[] for _ in range(horizon)]       # ||s_t - s_0||^2 (the copy model never moves)
    one_step = [[] for _ in range(horizon)]        # ||s_{t+1} - s_t||^2
    rewards = [[] for _ in range(horizon)]
    first_terminal, lengths, returns = [], [], []
    for qpos, qvel in zip(states.qpos, states.qvel):
        env.unwrapped.set_state(qpos, qvel)
        start = obs = env.unwrapped._get_obs()
        total = 0.0
        for t in range(horizon):
            next_obs, reward, terminated, *_ = env.unwrapped.step(policy.numpy(obs[None])[0])
            open_loop[t].append(np.mean((z(next_obs) - z(start)) ** 2))
            one_step[t].append(np.mean((z(next_obs) - z(obs)) ** 2))
            rewards[t].append(reward ** 2 / std2)
            total += GAMMA ** t * reward
            if t == 0:
                first_terminal.append(terminated)
            obs = next_obs
            if terminated:
                break
        lengths.append(t + 1)
        returns.append(total)
    assert min(lengths) < horizon, "no trajectory terminated: the masking is not exercised"
    for t in range(horizon):
        assert report[f"gt/rollout_state_mse_t{t + 1}"] == pytest.approx(np.mean(open_loop[t]), rel=1e-3), t
        assert report[f"gt/rollout_reward_mse_t{t + 1}"] == pytest.approx(np.mean(rewards[t]), rel=1e-3), t
    assert report["gt/rollout_state_mse_mean"] == pytest.approx(np.mean(np.concatenate(open_loop)), rel=1e-3)
    assert report["gt/rollout_length_mean"] == pytest.approx(np.mean(lengths))
    assert report["gt/J_H"] == pytest.approx(np.mean(returns), rel=1e-4)
    assert report["gt/J_hat_H"] == 0.0 and report["gt/return_gap"] == pytest.approx(abs(report["gt/J_H"]))
    assert report["gt/eps_m"] == pytest.approx(max(np.mean(errors) for errors in one_step), rel=1e-3)
    tolerance_share = [np.mean(np.asarray(errors) > 0.1 ** 2) for errors in one_step]
    assert report["gt/eps_m_tv"] == pytest.approx(max(tolerance_share), abs=1e-6)
    assert report["gt/onestep_terminal_agreement_policy"] == pytest.approx(1 - np.mean(first_terminal))
    # The dataset action: the copy model's error is the file's own step size (the simulator matches the file).
    data = hopper.next_observations[rows], hopper.observations[rows]
    assert report["gt/onestep_state_mse_data"] == pytest.approx(np.mean((z(data[0]) - z(data[1])) ** 2), rel=1e-3)
    assert report["gt/sim_floor_state_mse"] < 1e-10 and report["gt/sim_floor_reward_mse"] < 1e-10
    # The bounds from these eps: Eq. (9) and the appendix's sum differ by exactly 2 r_max eps_m / (1 - gamma).
    r_max = report["gt/r_max"]
    assert report["gt/C_eq9"] == pytest.approx(return_gap_bound(report["gt/eps_r"], report["gt/eps_m"], 0.0, r_max,
                                                                GAMMA), rel=1e-5)
    assert report["gt/C_appendix"] - report["gt/C_eq9"] == pytest.approx(2 * r_max * report["gt/eps_m"] / (1 - GAMMA),
                                                                          rel=1e-4)


def test_bounds_of_eq9_and_of_the_appendix():
    eps_r, eps_m, eps_pi, r_max, gamma = 0.01, 0.02, 0.005, 3.0, 0.9
    appendix = return_gap_bound_appendix(eps_r, eps_m, eps_pi, r_max, gamma)
    summed = 2 * r_max * sum(gamma ** t * (eps_r + (t + 1) * eps_m + 2 * (t + 1) * eps_pi) for t in range(2000))
    assert appendix == pytest.approx(summed)
    assert appendix - return_gap_bound(eps_r, eps_m, eps_pi, r_max, gamma) == pytest.approx(
        2 * r_max * eps_m / (1 - gamma))
    assert return_gap_bound_appendix(eps_r, eps_m, eps_pi, r_max, gamma, horizon=1) == pytest.approx(
        2 * r_max * (eps_r + eps_m + 2 * eps_pi))
    assert return_gap_bound_appendix(eps_r, eps_m, eps_pi, r_max, gamma, horizon=2000) == pytest.approx(appendix)
    with pytest.raises(ValueError, match="horizon"):
        return_gap_bound_appendix(eps_r, eps_m, eps_pi, r_max, gamma, horizon=0)


def test_measurement_is_deterministic_and_leaves_the_learners_generator_alone(hopper):
    model = WorldModel.from_dataset(hopper, WorldModelConfig(diffusion_steps=3, hidden_dim=32, depth=1,
                                                             reward_hidden_dim=16, time_embedding_dim=8))
    learner = make_learner("sac", 11, 3, "cpu", overrides={"hidden_dim": 32, "seed": 0})
    other = make_learner("sac", 11, 3, "cpu", overrides={"hidden_dim": 32, "seed": 1})
    truth = GroundTruth("hopper", simulator_states(hopper, np.arange(2000)), num_states=64, horizon=4, gamma=GAMMA,
                        tolerance=0.1)
    learner_state = learner.generator.get_state()
    first = truth.measure(model, learner, other, torch.Generator().manual_seed(7))
    assert torch.equal(learner.generator.get_state(), learner_state)
    assert truth.measure(model, learner, other, torch.Generator().manual_seed(7)) == first
    assert truth.measure(model, learner, other, torch.Generator().manual_seed(8)) != first
    assert first["gt/eps_pi"] > 0.0 and all(math.isfinite(v) for v in first.values())
    assert truth.measure(model, learner, learner, torch.Generator().manual_seed(7))["gt/eps_pi"] == 0.0


def test_files_without_simulator_states_skip_with_one_warning(hopper, caplog):
    hopper_without = load_dataset("hopper", "random", "generated", path=hopper.path)
    hopper_without.infos = {}
    with caplog.at_level(logging.WARNING, logger="adept.ground_truth"):
        assert simulator_states(hopper_without) is None
    assert len(caplog.records) == 1 and "infos/qpos" in caplog.text


# ---- through the runner -----------------------------------------------------------------------
TINY_WM = WorldModelConfig(diffusion_steps=3, hidden_dim=32, depth=2, reward_hidden_dim=32, batch_size=64,
                           is_batch_size=64, time_embedding_dim=8)
RUN = {"run": {"steps": 20, "eval_every": 10, "eval_episodes": 1, "log_every": 10, "checkpoint_every": 20,
               "final_eval_window": 1},
       "learner": {"hidden_dim": 32},
       "adept": {"epoch_steps": 10, "rollouts_per_epoch": 16, "horizon": 3, "iwu_steps_per_epoch": 2,
                 "synthetic_capacity": 1000, "diagnostics_samples": 64}}


@pytest.fixture(scope="module")
def artifacts(tiny_random_dataset_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gt-artifacts")
    dataset = load_dataset("hopper", "random", path=tiny_random_dataset_path)
    train_world_model(dataset, TINY_WM, steps=20, device="cpu", seed=0, out_path=folder / "world_model.pt",
                      log_every=10, checkpoint_every=20, eval_size=64, progress=False)
    behavior, _ = fit_behavior_policy(dataset.observations, dataset.actions, config={"hidden_dim": 32},
                                      seed=0, max_steps=20, eval_every=10)
    save_learner(folder / "behavior.pt", behavior)
    return tiny_random_dataset_path, folder / "world_model.pt", folder / "behavior.pt"


def _run(artifacts, out_dir, method, config=RUN, data=None):
    path, world_model, behavior = artifacts
    inputs = RunInputs(method=method, env="hopper", dataset="random", seed=0, out_dir=out_dir,
                       data_path=data or path, source="generated", world_model_path=world_model,
                       behavior_policy_path=behavior if method.startswith("adept-") else None, device="cpu",
                       progress=False)
    train(inputs, TrainConfig.from_dict(config))
    return read_csv(out_dir / "eval.csv")


@pytest.mark.parametrize("method", ["adept-sac", "diff-sac"])
def test_runs_log_the_ground_truth_at_each_evaluation(artifacts, tmp_path, method):
    evals = _run(artifacts, tmp_path, method)
    assert len(evals) == 2
    for row in evals:
        assert set(REQUIRED) <= set(row)
        assert "gt/rollout_state_mse_t4" not in row
        assert row["gt/states"] == 250  # the default 256, capped at the 250 rows the initial fit held out
        assert all(math.isfinite(row[key]) for key in REQUIRED)
        assert row["gt/return_gap"] == pytest.approx(abs(row["gt/J_H"] - row["gt/J_hat_H"]), rel=1e-5)
        assert row["gt/sim_floor_state_mse"] < 1e-10
        assert 0.0 <= row["gt/onestep_terminal_agreement_policy"] <= 1.0
    assert evals[0]["gt/eps_pi"] == 0.0 < evals[1]["gt/eps_pi"]


def test_ground_truth_off_and_files_without_states_have_no_gt_columns(artifacts, tmp_path, caplog):
    off = {**RUN, "adept": {**RUN["adept"], "ground_truth_states": 0}}
    assert not any(key.startswith("gt/") for row in _run(artifacts, tmp_path / "off", "diff-sac", off) for key in row)

    data = tmp_path / "no-states.hdf5"
    shutil.copy(artifacts[0], data)
    with h5py.File(data, "a") as f:
        del f["infos/qpos"], f["infos/qvel"]
    with caplog.at_level(logging.WARNING, logger="adept.ground_truth"):
        evals = _run(artifacts, tmp_path / "no-states", "diff-sac", data=data)
    assert not any(key.startswith("gt/") for row in evals for key in row) and "eps_m" in evals[0]
    assert [r.name for r in caplog.records if r.name == "adept.ground_truth"] == ["adept.ground_truth"]
