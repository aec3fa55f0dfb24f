"""The training runner on real data and a real MuJoCo env: outputs, resume, divergence, bad input."""
from __future__ import annotations

import json
import math

import pytest
import torch

from adept.config import ConfigError
from adept.outputs import read_csv
from adept.runner import DivergenceError, RunInputs, TrainConfig, load_train_config, train
from baselines import load_learner
from baselines.iql import IQL

TINY_RUN = {"run": {"steps": 60, "eval_every": 20, "eval_episodes": 2, "log_every": 10,
                    "checkpoint_every": 20, "final_eval_window": 2},
            "learner": {"hidden_dim": 32}}


def _inputs(path, out_dir, method="iql", seed=0):
    return RunInputs(method=method, env="hopper", dataset="random", seed=seed, out_dir=out_dir,
                     data_path=path, source="generated", device="cpu", progress=False)


def _params(path):
    learner = load_learner(path, "cpu")
    return {k: v for k, v in learner.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_state(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif key != "state":  # optimizer per-parameter state is nested one level deeper
            assert a[key] == b[key], key


def test_plain_learner_run_writes_valid_outputs(tiny_random_dataset_path, tmp_path):
    out = tmp_path / "run"
    final = train(_inputs(tiny_random_dataset_path, out), TrainConfig.from_dict(TINY_RUN))

    assert {p.name for p in out.iterdir()} == {"eval.csv", "train.csv", "final.json", "completed.json", "policy.pt"}
    assert (out / "completed.json").read_text() == (out / "final.json").read_text()  # survives Snakemake's deletion
    evals = read_csv(out / "eval.csv")
    assert [r["step"] for r in evals] == [20, 40, 60]
    for row in evals:
        assert set(row) >= {"return_mean", "return_std", "score_mean", "score_std", "episode_length_mean",
                            "wall_time_s"}
        # hopper's D4RL normalization: score = 100 * (return + 20.272305) / 3254.572305
        assert row["score_mean"] == pytest.approx(100 * (row["return_mean"] + 20.272305) / 3254.572305, rel=1e-6)
    train_rows = read_csv(out / "train.csv")
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40, 50, 60]
    assert all(math.isfinite(r["critic_loss"]) for r in train_rows)

    on_disk = json.loads((out / "final.json").read_text())
    assert on_disk == json.loads(json.dumps(final, default=str))
    assert on_disk["final_score"] == pytest.approx((evals[-1]["score_mean"] + evals[-2]["score_mean"]) / 2)
    assert on_disk["best_score"] == pytest.approx(max(r["score_mean"] for r in evals))
    assert on_disk["method"] == "iql" and on_disk["seed"] == 0 and on_disk["env_id"] == "Hopper-v4"
    assert on_disk["learner_config"]["hidden_dim"] == 32
    assert {"torch", "gymnasium", "mujoco", "commit"} <= set(on_disk["versions"])
    assert load_learner(out / "policy.pt", "cpu").act(torch.zeros(3, 11)).shape == (3, 3)


def test_same_seed_same_result_and_other_seed_differs(tiny_random_dataset_path, tmp_path):
    config = TrainConfig.from_dict({**TINY_RUN, "run": {**TINY_RUN["run"], "steps": 20}})
    a = train(_inputs(tiny_random_dataset_path, tmp_path / "a"), config)
    b = train(_inputs(tiny_random_dataset_path, tmp_path / "b"), config)
    c = train(_inputs(tiny_random_dataset_path, tmp_path / "c", seed=1), config)
    _assert_same_state(_params(tmp_path / "a" / "policy.pt"), _params(tmp_path / "b" / "policy.pt"))
    assert a["final_score"] == b["final_score"]
    actor_a = _params(tmp_path / "a" / "policy.pt")["actor"]
    actor_c = _params(tmp_path / "c" / "policy.pt")["actor"]
    assert any(not torch.equal(actor_a[k], actor_c[k]) for k in actor_a)
    assert c["seed"] == 1


def test_interrupted_run_resumes_to_the_uninterrupted_result(tiny_random_dataset_path, tmp_path, monkeypatch,
                                                         checkpoint_loads_as_on_cuda):
    config = TrainConfig.from_dict(TINY_RUN)
    train(_inputs(tiny_random_dataset_path, tmp_path / "full"), config)

    original_update = IQL.update
    calls = {"n": 0}

    def update_then_crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 47:  # after the checkpoint at step 40
            raise KeyboardInterrupt
        return original_update(self, batch)

    monkeypatch.setattr(IQL, "update", update_then_crash)
    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(tiny_random_dataset_path, resumed_dir), config)
    assert (resumed_dir / "checkpoint.pt").exists() and not (resumed_dir / "final.json").exists()
    assert [r["step"] for r in read_csv(resumed_dir / "eval.csv")] == [20, 40]

    monkeypatch.setattr(IQL, "update", original_update)
    train(_inputs(tiny_random_dataset_path, resumed_dir), config)
    assert checkpoint_loads_as_on_cuda == ["cpu"]  # RNG states reached set_state as CPU ByteTensors
    assert not (resumed_dir / "checkpoint.pt").exists()

    _assert_same_state(_params(tmp_path / "full" / "policy.pt"), _params(resumed_dir / "policy.pt"))
    for name, ignore in (("eval.csv", {"wall_time_s"}), ("train.csv", {"updates_per_s"})):
        full_rows = read_csv(tmp_path / "full" / name)
        resumed_rows = read_csv(resumed_dir / name)
        assert [{k: v for k, v in r.items() if k not in ignore} for r in full_rows] == \
               [{k: v for k, v in r.items() if k not in ignore} for r in resumed_rows]


def test_resume_with_another_config_is_refused(tiny_random_dataset_path, tmp_path, monkeypatch):
    config = TrainConfig.from_dict(TINY_RUN)
    original_update = IQL.update
    calls = {"n": 0}

    def crash_after_checkpoint(self, batch):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return original_update(self, batch)

    monkeypatch.setattr(IQL, "update", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(tiny_random_dataset_path, tmp_path), config)
    monkeypatch.setattr(IQL, "update", original_update)
    other = TrainConfig.from_dict({**TINY_RUN, "learner": {"hidden_dim": 64}})
    with pytest.raises(ValueError, match="different config"):
        train(_inputs(tiny_random_dataset_path, tmp_path), other)


def test_divergence_names_step_and_loss_and_keeps_last_checkpoint(tiny_random_dataset_path, tmp_path, monkeypatch):
    original_update = IQL.update
    calls = {"n": 0}

    def diverge_late(self, batch):
        metrics = original_update(self, batch)
        calls["n"] += 1
        if calls["n"] > 25:
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics

    monkeypatch.setattr(IQL, "update", diverge_late)
    with pytest.raises(DivergenceError, match=r"step 30: critic_loss=nan"):
        train(_inputs(tiny_random_dataset_path, tmp_path), TrainConfig.from_dict(TINY_RUN))
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 20
    assert not (tmp_path / "final.json").exists()


@pytest.mark.parametrize("overrides, message", [
    (["run.steps=0"], "run.steps must be >= 1, got 0"),
    (["run.mixing=sometimes"], "run.mixing must be 'uniform' or 'fraction'"),
    (["runn.steps=3"], "unknown config section(s) ['runn']"),
    (["adept.horizon=0"], "adept.horizon must be >= 1"),
])
def test_bad_config_values_are_rejected_up_front(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_train_config(None, overrides)
    assert message in str(err.value)


def test_bad_learner_override_is_rejected_before_training(tiny_random_dataset_path, tmp_path):
    config = TrainConfig.from_dict({**TINY_RUN, "learner": {"expectile": 1.5}})
    with pytest.raises(ConfigError, match="expectile"):
        train(_inputs(tiny_random_dataset_path, tmp_path), config)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("method, needs", [("adept-iql", "--world-model"), ("diff-sac", "--world-model")])
def test_model_based_methods_need_their_artifacts(tiny_random_dataset_path, tmp_path, method, needs):
    with pytest.raises(ValueError, match=needs):
        train(_inputs(tiny_random_dataset_path, tmp_path, method=method), TrainConfig.from_dict(TINY_RUN))


def test_unknown_method_lists_valid_ones(tiny_random_dataset_path, tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'ppo'.*adept-iql"):
        train(_inputs(tiny_random_dataset_path, tmp_path, method="ppo"), TrainConfig.from_dict(TINY_RUN))
