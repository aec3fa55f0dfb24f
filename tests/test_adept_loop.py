"""ADEPT end to end on a small generated dataset: world model + pi_D artifacts, the closed loop,
Diff+X and the BC ablation through the same runner, resume, and the IWU schedule."""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from adept.closed_loop import ClosedLoop, ClosedLoopConfig, iwu_steps_due
from adept.data import load_dataset
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from adept.world_model import WorldModel, WorldModelConfig
from adept.world_model_training import train_world_model
from adept.behavior_policy_training import fit_behavior_policy
from baselines import make_learner, save_learner
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


def test_adept_resumes_to_the_uninterrupted_result(artifacts, tmp_path, monkeypatch, checkpoint_loads_as_on_cuda):
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
    assert checkpoint_loads_as_on_cuda == ["cpu"]

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
    from adept.data.dataset import split_holdout
    from adept.world_model_training import world_model_split

    data, world_model_path, _ = artifacts
    dataset = load_dataset("hopper", "random", path=data)
    train_rows, heldout_rows = world_model_split(world_model_path, dataset)
    train_idx, heldout_idx = split_holdout(len(dataset.observations), 0.05, 0)
    assert len(heldout_rows) == len(heldout_idx) == 250
    assert (heldout_rows == heldout_idx).all() and (train_rows == train_idx).all()
    assert not set(heldout_idx) & set(train_idx)


def test_iwu_never_trains_on_the_rows_the_initial_fit_held_out(artifacts, tmp_path, monkeypatch):
    from adept.data.dataset import split_holdout

    dataset = load_dataset("hopper", "random", path=artifacts[0])
    _, heldout_idx = split_holdout(len(dataset.observations), 0.05, 0)
    heldout = {row.tobytes() for row in dataset.observations[heldout_idx]}
    seen = []
    original_update = WorldModel.update

    def recording_update(self, batch, weights=None, generator=None):
        seen.append(batch.observations.numpy().copy())
        return original_update(self, batch, weights, generator)

    monkeypatch.setattr(WorldModel, "update", recording_update)
    train(_inputs(artifacts, tmp_path, "adept-sac"), TrainConfig.from_dict(LOOP_RUN))
    rows = np.concatenate(seen)
    assert len(rows) == 4 * 5 * 64  # 4 epochs x 5 IWU steps x B_m = 64
    assert not any(row.tobytes() in heldout for row in rows)  # 5% held out: ~64 hits if IWU sampled all rows


def test_a_world_model_without_its_split_stops_adept_but_not_diff(artifacts, tmp_path, caplog):
    lone = tmp_path / "elsewhere" / "world_model.pt"  # no model.json next to it
    lone.parent.mkdir()
    payload = torch.load(artifacts[1], weights_only=False)
    del payload["metadata"]  # a model saved before models recorded their split
    torch.save(payload, lone)
    config = TrainConfig.from_dict({**LOOP_RUN, "run": {**LOOP_RUN["run"], "steps": 10, "eval_every": 10}})
    with pytest.raises(ValueError, match=r"no report .* split is unknown, so IWU would train on the rows the "
                                         r"diagnostics hold out") as err:
        train(replace(_inputs(artifacts, tmp_path / "adept", "adept-sac"), world_model_path=lone), config)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "adept" / "eval.csv").exists()
    with caplog.at_level(logging.WARNING, logger="adept.runner"):
        train(replace(_inputs(artifacts, tmp_path / "diff", "diff-sac"), world_model_path=lone), config)
    assert "diff-sac never refits the world model" in caplog.text
    assert (tmp_path / "diff" / "final.json").exists()


def test_training_does_not_depend_on_how_often_it_is_evaluated(artifacts, tmp_path):
    """Evaluation (here with sampled actions), diagnostics and the ground truth draw from the evaluation
    generator: learner and world-model training are identical whether evaluation runs every 10 steps or once."""
    from adept.provenance import stream_seed
    from adept.runner import EVALUATION_STREAM, TRAINING_STREAM

    assert len({0, stream_seed(0, TRAINING_STREAM), stream_seed(0, EVALUATION_STREAM)}) == 3  # learner's seed is 0
    for every in (10, 40):
        run = {**LOOP_RUN["run"], "eval_every": every, "checkpoint_every": 40, "deterministic_eval": False}
        train(_inputs(artifacts, tmp_path / str(every), "adept-sac"), TrainConfig.from_dict({**LOOP_RUN, "run": run}))
    often, once = (torch.load(tmp_path / d / "policy.pt", weights_only=True)["state_dict"] for d in ("10", "40"))
    assert often["num_updates"] == once["num_updates"] == 40
    for part in ("actor", "critic"):
        for key, tensor in often[part].items():
            assert torch.equal(tensor, once[part][key]), (part, key)
    rows = [[{k: v for k, v in r.items() if k != "updates_per_s"} for r in read_csv(tmp_path / d / "train.csv")]
            for d in ("10", "40")]
    assert rows[0] == rows[1] and "wm/loss" in rows[0][0]
    assert len(read_csv(tmp_path / "10" / "eval.csv")) == 4 and len(read_csv(tmp_path / "40" / "eval.csv")) == 1
