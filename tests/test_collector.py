"""The collector: online SAC trainer and snapshot file (adept.collector) on real hopper episodes with tiny networks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import adept.collector as collector
from adept.collector import CollectorConfig, load_collector_snapshot, make_config, train_collector
from adept.config import ConfigError
from adept.data.hdf5 import read_d4rl_hdf5
from adept.data.schema import validate_layout, validate_values
from adept.envs import get_env_spec, make_env
from adept.provenance import file_sha256
from adept.outputs import read_csv

HOPPER = get_env_spec("hopper")



def tiny_config(**overrides) -> CollectorConfig:
    """Small networks and short intervals: a run of a few thousand env steps takes seconds."""
    values = dict(max_steps=1200, start_steps=200, eval_every=300, eval_episodes=2, final_eval_episodes=2,
                  checkpoint_every=300, log_every=10**6, sac={"hidden_dim": 32, "batch_size": 32})
    values.update(overrides)
    return make_config(values)


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """A run whose target is out of reach: it ends at max_steps and keeps its best snapshot."""
    out = tmp_path_factory.mktemp("budget")
    summary = train_collector("hopper", out, tiny_config(target_return=1e6), seed=3, progress=False)
    return out, summary


def test_stops_once_the_stochastic_return_reaches_the_target(tmp_path):
    config = tiny_config(target_return=80.0, max_steps=6000, start_steps=300, eval_every=400, eval_episodes=3,
                         sac={"hidden_dim": 64, "batch_size": 64})
    summary = train_collector("hopper", tmp_path, config, seed=0, progress=False)
    evals = read_csv(tmp_path / "eval.csv")
    assert summary["reached_target"] is True
    assert evals[-1]["return_mean"] >= 80.0 > max(row["return_mean"] for row in evals[:-1])
    assert summary["train_steps"] == evals[-1]["step"] < 6000
    assert summary["stop_eval_return_mean"] == pytest.approx(evals[-1]["return_mean"])
    # A uniform random hopper policy returns ~20: the target was reached by learning.
    assert evals[0]["return_mean"] < 40.0
    assert not (tmp_path / "checkpoint.pt").exists()
    arrays, metadata = read_d4rl_hdf5(tmp_path / "replay.hdf5")
    assert len(arrays["rewards"]) == summary["train_steps"] == summary["replay_transitions"]
    assert metadata["policy_sha256"] == summary["policy_sha256"] == file_sha256(tmp_path / "policy.pt")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_budget_exhausted_keeps_the_best_evaluated_snapshot(budget_run):
    out, summary = budget_run
    evals = read_csv(out / "eval.csv")
    best = max(evals, key=lambda row: row["return_mean"])
    assert summary["reached_target"] is False
    assert summary["run_steps"] >= 1200
    assert summary["train_steps"] == best["step"] == summary["replay_transitions"]
    assert summary["stop_eval_return_mean"] == pytest.approx(best["return_mean"])
    snapshot = load_collector_snapshot(out / "policy.pt")
    assert snapshot.info["train_steps"] == best["step"] and snapshot.info["reached_target"] is False


def test_replay_record_is_the_collection_in_order(budget_run):
    out, summary = budget_run
    arrays, _ = read_d4rl_hdf5(out / "replay.hdf5")
    n = validate_layout(arrays, HOPPER, "replay")
    validate_values(arrays, "replay")
    assert n == summary["train_steps"]
    ends = arrays["terminals"] | arrays["timeouts"]
    assert ends[-1], "the snapshot is taken at an episode end"
    continuing = ~ends[:-1]
    np.testing.assert_array_equal(arrays["next_observations"][:-1][continuing], arrays["observations"][1:][continuing])
    assert not (arrays["terminals"] & arrays["timeouts"]).any()
    # Uniform actions (density 2^-act_dim) for the first start_steps, then the policy's own log-probs.
    np.testing.assert_allclose(arrays["infos/action_log_probs"][:200], -HOPPER.act_dim * math.log(2.0), rtol=1e-6)
    assert not np.allclose(arrays["infos/action_log_probs"][200:], -HOPPER.act_dim * math.log(2.0))
    # qpos/qvel are the simulator state before each step: they reproduce the observations.
    env = make_env("hopper", seed=0)
    for t in (0, 57, 199, 200, n // 2, n - 1):
        env.unwrapped.set_state(arrays["infos/qpos"][t], arrays["infos/qvel"][t])
        np.testing.assert_allclose(env.unwrapped._get_obs(), arrays["observations"][t], rtol=1e-5, atol=1e-5)


def test_interrupted_run_resumes_to_the_same_result(budget_run, tmp_path, monkeypatch, checkpoint_loads_as_on_cuda):
    reference_dir, reference = budget_run
    real_save = collector.atomic_torch_save

    def save_then_crash(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt  # the job is killed right after its first checkpoint

    monkeypatch.setattr(collector, "atomic_torch_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_collector("hopper", tmp_path, tiny_config(target_return=1e6), seed=3, progress=False)
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(collector, "atomic_torch_save", real_save)
    resumed = train_collector("hopper", tmp_path, tiny_config(target_return=1e6), seed=3, progress=False)
    assert checkpoint_loads_as_on_cuda == ["cpu"]  # RNG states reached set_state as CPU ByteTensors

    for key in ("train_steps", "run_steps", "stop_eval_return_mean", "measured_return_mean"):
        assert resumed[key] == reference[key], key
    ours_actor = load_collector_snapshot(tmp_path / "policy.pt").learner.actor.state_dict()
    for name, weight in load_collector_snapshot(reference_dir / "policy.pt").learner.actor.state_dict().items():
        assert torch.equal(ours_actor[name], weight), name
    ours, _ = read_d4rl_hdf5(tmp_path / "replay.hdf5")
    theirs, _ = read_d4rl_hdf5(reference_dir / "replay.hdf5")
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert read_csv(tmp_path / "eval.csv") == [
        {**row, "wall_time_s": mine["wall_time_s"]}
        for row, mine in zip(read_csv(reference_dir / "eval.csv"), read_csv(tmp_path / "eval.csv"))]


def interrupt_after_first_checkpoint(out_dir, seed, monkeypatch):
    """Start an unreachable-target run and stop it right after its first checkpoint is saved."""
    real_save = collector.atomic_torch_save

    def save_then_crash(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(collector, "atomic_torch_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_collector("hopper", out_dir, tiny_config(target_return=1e6), seed=seed, progress=False)
    monkeypatch.setattr(collector, "atomic_torch_save", real_save)


def test_resumed_run_may_end_early_with_its_best_snapshot(tmp_path, monkeypatch):
    interrupt_after_first_checkpoint(tmp_path, 3, monkeypatch)
    # A smaller budget ends the run at the next episode end; the target can change too.
    summary = train_collector("hopper", tmp_path, tiny_config(target_return=2e6, max_steps=300), seed=3,
                                   progress=False)
    evals = read_csv(tmp_path / "eval.csv")
    assert summary["reached_target"] is False and summary["target_return"] == 2e6
    assert 300 <= summary["run_steps"] < 1200
    assert summary["train_steps"] == max(evals, key=lambda row: row["return_mean"])["step"]


def test_medium_replay_data_is_a_prefix_of_a_longer_run(budget_run, tmp_path):
    """Same seed, earlier stop: the stopped run's buffer is the first rows of the longer run's."""
    longer_dir, longer = budget_run
    summary = train_collector("hopper", tmp_path, tiny_config(target_return=-1e9), seed=3, progress=False)
    assert summary["reached_target"] and summary["train_steps"] <= longer["train_steps"]
    short, _ = read_d4rl_hdf5(tmp_path / "replay.hdf5")
    long, _ = read_d4rl_hdf5(longer_dir / "replay.hdf5")
    assert len(short["rewards"]) == summary["train_steps"] >= 300
    for key in long:
        np.testing.assert_array_equal(short[key], long[key][:len(short[key])], err_msg=key)


def test_completed_run_is_not_retrained(budget_run):
    out, summary = budget_run
    mtime = (out / "policy.pt").stat().st_mtime_ns
    assert train_collector("hopper", out, tiny_config(target_return=1e6), seed=3, progress=False) == summary
    assert (out / "policy.pt").stat().st_mtime_ns == mtime


def test_checkpoint_of_another_run_is_rejected(tmp_path, monkeypatch):
    interrupt_after_first_checkpoint(tmp_path, 0, monkeypatch)
    with pytest.raises(ValueError, match="belongs to another run"):
        train_collector("hopper", tmp_path, tiny_config(target_return=1e6), seed=1, progress=False)


def test_bad_configuration_is_rejected_with_the_valid_keys():
    with pytest.raises(ConfigError, match="valid keys"):
        make_config({"max_step": 10})
    with pytest.raises(ConfigError, match="start_steps"):
        make_config({"start_steps": 0})
    with pytest.raises(ValueError, match="valid envs"):
        collector.default_target_return("ant")
    assert collector.default_target_return("halfcheetah") == 4770.0


def test_snapshot_rules():
    replaces = collector._replaces
    for rule in ("first", "closest"):  # below the target both keep the best evaluation
        assert replaces(10.0, 5.0, 100.0, rule) and not replaces(4.0, 5.0, 100.0, rule)
        assert replaces(50.0, -math.inf, 100.0, rule)
    # Learning jumped past the target: "first" keeps the evaluation that reached it, "closest" the nearer one.
    assert replaces(200.0, 95.0, 100.0, "first")
    assert not replaces(200.0, 95.0, 100.0, "closest") and replaces(102.0, 95.0, 100.0, "closest")
    with pytest.raises(ConfigError, match="snapshot must be one of"):
        make_config({"snapshot": "last"})


def test_stochastic_evaluation_does_not_touch_the_learner_generator():
    learner = collector.make_sac("hopper", {"hidden_dim": 32}, seed=0, device=torch.device("cpu"))
    before = learner.generator.get_state()
    first = collector.evaluate_stochastic(learner, "hopper", 2, seed=5, device=torch.device("cpu"))
    again = collector.evaluate_stochastic(learner, "hopper", 2, seed=5, device=torch.device("cpu"))
    assert first == again
    assert torch.equal(learner.generator.get_state(), before)
