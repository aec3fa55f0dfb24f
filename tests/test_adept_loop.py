"""ADEPT end to end on a small generated dataset: world model + pi_D artifacts, the closed loop,
Diff+X and the BC ablation through the same runner, resume, and the IWU schedule."""
from __future__ import annotations

import json

import pytest
import torch

from adept.closed_loop import ClosedLoop, ClosedLoopConfig, iwu_steps_due
from adept.data import load_dataset
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from adept.world_model import WorldModel, WorldModelConfig
from adept.world_model_training import train_world_model
from baselines import fit_behavior_policy, make_learner, save_learner
from baselines.replay import TensorBuffer
from baselines.sac import SAC

TINY_WM = WorldModelConfig(diffusion_steps=3, hidden_dim=32, depth=2, reward_hidden_dim=32, batch_size=64,
                           is_batch_size=64, time_embedding_dim=8)
LOOP_RUN = {"run": {"steps": 40, "eval_every": 20, "eval_episodes": 1, "log_every": 10, "checkpoint_every": 20,
                    "final_eval_window": 1},
            "learner": {"hidden_dim": 32},
            "adept": {"epoch_steps": 10, "rollouts_per_epoch": 32, "horizon": 3, "iwu_steps_per_epoch": 5,
                      "synthetic_capacity": 1000, "diagnostics_samples": 64}}


@pytest.fixture(scope="module")
def artifacts(tiny_random_dataset_path, tmp_path_factory):
    """A world model (initial fit) and pi_D for the tiny hopper-random dataset, as the workflow makes them."""
    folder = tmp_path_factory.mktemp("artifacts")
    dataset = load_dataset("hopper", "random", path=tiny_random_dataset_path)
    world_model_path = folder / "world_model.pt"
    train_world_model(dataset, TINY_WM, steps=30, device="cpu", seed=0, out_path=world_model_path,
                      log_every=10, checkpoint_every=30, eval_size=64, progress=False)
    behavior, _ = fit_behavior_policy(dataset.observations, dataset.actions, config={"hidden_dim": 32},
                                      seed=0, max_steps=40, eval_every=20)
    behavior_path = folder / "behavior.pt"
    save_learner(behavior_path, behavior)
    return tiny_random_dataset_path, world_model_path, behavior_path


def _inputs(artifacts, out_dir, method):
    data, world_model, behavior = artifacts
    return RunInputs(method=method, env="hopper", dataset="random", seed=0, out_dir=out_dir, data_path=data,
                     source="generated", world_model_path=world_model,
                     behavior_policy_path=behavior if method.startswith("adept-") else None,
                     device="cpu", progress=False)


@pytest.mark.parametrize("method", ["adept-iql", "adept-sac", "diff-iql", "adept-bc"])
def test_model_based_methods_run_end_to_end(artifacts, tmp_path, method):
    final = train(_inputs(artifacts, tmp_path, method), TrainConfig.from_dict(LOOP_RUN))
    assert json.loads((tmp_path / "final.json").read_text())["final_score"] == final["final_score"]
    assert final["synthetic"] == method.split("-")[0]

    rows = read_csv(tmp_path / "train.csv")
    columns = set().union(*rows)
    assert "rollout/num_transitions" in columns and "rollout/model_return" in columns
    # once per epoch: 32 trajectories of 1..3 transitions (averaged per epoch, not per update)
    assert all(32 <= r["rollout/num_transitions"] <= 96 for r in rows)
    if method.startswith("adept-"):
        assert {"wm/loss", "iw/is_ess_fraction", "iw/is_clipped_fraction"} <= columns
    else:  # Diff+X never refits the world model
        assert not any(c.startswith(("wm/", "iw/")) for c in columns)

    evals = read_csv(tmp_path / "eval.csv")
    # Theorem 4.4 diagnostics are logged next to the real return at each evaluation.
    for row in evals:
        for key in ("eps_r", "eps_m", "eps_pi", "bound_C", "J_hat", "J"):
            assert row[key] is not None, key
        assert row["J"] == row["return_mean"]
    assert evals[0]["eps_pi"] == 0.0 and evals[1]["eps_pi"] > 0.0  # no previous policy at the first report


def test_adept_resumes_to_the_uninterrupted_result(artifacts, tmp_path, monkeypatch):
    config = TrainConfig.from_dict(LOOP_RUN)
    train(_inputs(artifacts, tmp_path / "full", "adept-sac"), config)

    original_update = SAC.update
    calls = {"n": 0}

    def crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:
            raise KeyboardInterrupt
        return original_update(self, batch)

    monkeypatch.setattr(SAC, "update", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(artifacts, tmp_path / "resumed", "adept-sac"), config)
    monkeypatch.setattr(SAC, "update", original_update)
    train(_inputs(artifacts, tmp_path / "resumed", "adept-sac"), config)

    full, resumed = (torch.load(tmp_path / d / "policy.pt", weights_only=True) for d in ("full", "resumed"))
    for key, tensor in full["state_dict"]["actor"].items():
        assert torch.equal(tensor, resumed["state_dict"]["actor"][key]), key
    drop = {"wall_time_s", "updates_per_s"}
    for name in ("eval.csv", "train.csv"):
        a, b = (read_csv(tmp_path / d / name) for d in ("full", "resumed"))
        assert [{k: v for k, v in r.items() if k not in drop} for r in a] == \
               [{k: v for k, v in r.items() if k not in drop} for r in b]


def test_loaded_world_model_architecture_cannot_be_overridden(artifacts, tmp_path):
    config = TrainConfig.from_dict({**LOOP_RUN, "world_model": {"diffusion_steps": 5}})
    with pytest.raises(ValueError, match="diffusion_steps"):
        train(_inputs(artifacts, tmp_path, "adept-iql"), config)


def test_runtime_world_model_overrides_reach_the_loop(artifacts, tmp_path):
    config = TrainConfig.from_dict({**LOOP_RUN, "run": {**LOOP_RUN["run"], "steps": 10},
                                    "world_model": {"clip_to_data": False, "is_batch_size": 32}})
    final = train(_inputs(artifacts, tmp_path, "adept-iql"), config)
    assert final["config"]["world_model"] == {"clip_to_data": False, "is_batch_size": 32}


@pytest.mark.parametrize("per_epoch, expected", [(1, [0] * 9 + [1]), (10, [1] * 10), (5, [0, 1] * 5),
                                                 (20, [2] * 10), (3, [0, 0, 0, 1, 0, 0, 1, 0, 0, 1])])
def test_iwu_steps_are_spread_evenly_over_the_epoch(per_epoch, expected):
    due = [iwu_steps_due(i, 10, per_epoch) for i in range(10)]
    assert due == expected and sum(due) == per_epoch


def test_importance_sampled_update_uses_policy_ratio(artifacts):
    """IWU weights are pi_phi/pi_D on the sampled batch; with pi_phi == pi_D they are all one and the
    update equals the unweighted one."""
    data, world_model_path, behavior_path = artifacts
    dataset = load_dataset("hopper", "random", path=data)
    real = TensorBuffer.from_dataset(dataset, "cpu")
    from baselines import load_learner

    behavior = load_learner(behavior_path, "cpu")
    models = [WorldModel.load(world_model_path, "cpu") for _ in range(2)]
    loops = [ClosedLoop(ClosedLoopConfig(rollouts_per_epoch=8, horizon=2, synthetic_capacity=100), model, real,
                        behavior, generator=torch.Generator().manual_seed(3)) for model in models]
    metrics = loops[0].importance_sampled_update(behavior)  # pi_phi = pi_D: weights exactly 1
    assert metrics["iw/is_max_weight"].item() == pytest.approx(1.0, abs=1e-5)
    assert metrics["iw/is_ess_fraction"].item() == pytest.approx(1.0, abs=1e-5)
    generator = torch.Generator().manual_seed(3)
    batch = real.sample(models[1].config.is_batch_size, generator)
    models[1].update(batch, None, generator)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)

    other = make_learner("sac", 11, 3, "cpu", overrides={"hidden_dim": 32, "seed": 5})
    metrics = loops[0].importance_sampled_update(other)
    assert metrics["iw/is_max_weight"].item() > 1.0


def test_diagnostics_use_the_transitions_the_initial_fit_held_out(artifacts):
    from adept.runner import _heldout_transitions
    from adept.data.dataset import split_holdout

    data, world_model_path, _ = artifacts
    dataset = load_dataset("hopper", "random", path=data)
    heldout = _heldout_transitions(world_model_path, dataset, "cpu")
    train_idx, heldout_idx = split_holdout(len(dataset.observations), 0.05, 0)
    assert heldout.size == len(heldout_idx) == 250
    assert torch.equal(heldout.observations, torch.as_tensor(dataset.observations[heldout_idx]))
    assert not set(heldout_idx) & set(train_idx)
