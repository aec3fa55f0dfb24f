"""`medium` / `medium-replay` recipes of the generated source (adept.data.policy_datasets)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from adept.data.dataset import OfflineDataset
from adept.data.generated import get_recipe, load_generated
from adept.data.hdf5 import read_d4rl_hdf5
from adept.collector import (SHIPPED_SNAPSHOT_DIR, load_collector_snapshot, make_config, same_actor,
                             save_collector_snapshot, ship_collector_snapshot, train_collector)
from adept.data.policy_datasets import collect_with_policy, medium_recipe, medium_replay_recipe, write_policy_dataset
from adept.envs import get_env_spec
from adept.provenance import file_sha256

HOPPER = get_env_spec("hopper")
MANIFEST = json.loads((SHIPPED_SNAPSHOT_DIR / "manifest.json").read_text()) \
    if (SHIPPED_SNAPSHOT_DIR / "manifest.json").is_file() else {}



@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished collector run with a small network, stopped at its first evaluation."""
    out = tmp_path_factory.mktemp("run")
    config = make_config(dict(target_return=-1e9, start_steps=200, eval_every=400, eval_episodes=2,
                              final_eval_episodes=2, log_every=10**6, sac={"hidden_dim": 32, "batch_size": 32}))
    summary = train_collector("hopper", out, config, seed=0, progress=False)
    return out, summary


def test_medium_is_deterministic_given_checkpoint_and_seed(tiny_run):
    out, _ = tiny_run
    first, meta = medium_recipe(HOPPER, 600, 4, False, policy_path=out / "policy.pt")
    again, _ = medium_recipe(HOPPER, 600, 4, False, policy_path=out / "policy.pt")
    other, _ = medium_recipe(HOPPER, 600, 5, False, policy_path=out / "policy.pt")
    assert sorted(first) == sorted(again)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["actions"], other["actions"])
    assert meta["policy"]["checkpoint_sha256"] == file_sha256(out / "policy.pt")


def test_medium_layout_actions_sampled_and_log_probs_of_the_policy(tiny_run):
    out, summary = tiny_run
    arrays, meta = medium_recipe(HOPPER, 700, 0, False, policy_path=out / "policy.pt")
    dataset = OfflineDataset.from_arrays(arrays, env="hopper", dataset="medium", source="generated")
    assert len(dataset) == 700 and set(dataset.infos) == {"qpos", "qvel", "action_log_probs"}
    assert dataset.unflagged_boundaries.sum() == 0
    assert meta["policy"]["train_steps"] == summary["train_steps"]
    assert meta["policy"]["measured_return_mean"] == pytest.approx(summary["measured_return_mean"])
    snapshot = load_collector_snapshot(out / "policy.pt")
    obs = torch.as_tensor(dataset.observations)
    recomputed = snapshot.learner.log_prob(obs, torch.as_tensor(dataset.actions)).detach().numpy()
    np.testing.assert_allclose(dataset.infos["action_log_probs"], recomputed, rtol=1e-4, atol=1e-4)
    mean_actions = snapshot.learner.act(obs, deterministic=True).numpy()
    assert np.abs(dataset.actions - mean_actions).mean() > 0.05, "medium actions are sampled, not the mean"


def test_medium_replay_is_the_training_buffer_up_to_the_snapshot(tiny_run):
    out, summary = tiny_run
    arrays, meta = medium_replay_recipe(HOPPER, None, 0, False, run_dir=out)
    replay, _ = read_d4rl_hdf5(out / "replay.hdf5")
    assert len(arrays["rewards"]) == summary["train_steps"] == meta["replay_transitions"]
    for key in replay:
        np.testing.assert_array_equal(arrays[key], replay[key], err_msg=key)
    OfflineDataset.from_arrays(arrays, env="hopper", dataset="medium-replay", source="generated")
    assert meta["policy"]["checkpoint_sha256"] == summary["policy_sha256"]
    head, _ = medium_replay_recipe(HOPPER, 100, 0, False, run_dir=out)
    np.testing.assert_array_equal(head["observations"], replay["observations"][:100])
    with pytest.raises(ValueError, match="holds"):
        medium_replay_recipe(HOPPER, summary["train_steps"] + 1, 0, False, run_dir=out)


def test_medium_replay_without_a_training_run_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="collector train --env hopper --seed 2"):
        medium_replay_recipe(HOPPER, None, 2, False, run_dir=tmp_path)


def test_wrong_env_and_bad_files_are_rejected(tiny_run, tmp_path):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="trained on hopper, not walker2d"):
        collect_with_policy(get_env_spec("walker2d"), load_collector_snapshot(out / "policy.pt"), 10, 0, False)
    with pytest.raises(FileNotFoundError, match="collector train"):
        load_collector_snapshot(tmp_path / "missing.pt")
    torch.save({"actor": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a collector snapshot"):
        load_collector_snapshot(tmp_path / "other.pt")


def test_written_file_loads_through_the_generated_source(tiny_run, tmp_path):
    out, _ = tiny_run
    path, snapshot = write_policy_dataset(out / "policy.pt", tmp_path / "hopper-medium.hdf5", size=300, seed=1,
                                          progress=False)
    dataset = load_generated("hopper", "medium", path=path)
    assert len(dataset) == 300
    assert dataset.metadata["policy"]["checkpoint_sha256"] == snapshot.sha256
    direct, _ = medium_recipe(HOPPER, 300, 1, False, policy_path=out / "policy.pt")
    np.testing.assert_array_equal(dataset.actions, direct["actions"])


def test_recipes_are_registered_with_the_generated_source():
    assert get_recipe("medium") is medium_recipe
    assert get_recipe("medium-replay") is medium_replay_recipe
    # In a fresh interpreter the generated source must find them without importing this module first.
    code = "from adept.data.generated import get_recipe; print(get_recipe('medium').__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "adept.data.policy_datasets", out.stderr


def test_ship_writes_a_reproducible_checkpoint_and_manifest(tiny_run, tmp_path):
    out, summary = tiny_run
    entry = ship_collector_snapshot(out, tmp_path)
    shipped = tmp_path / "hopper-medium.pt"
    assert entry["sha256"] == file_sha256(shipped) == summary["policy_sha256"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["hopper"]["train_steps"] == summary["train_steps"]
    assert ship_collector_snapshot(out, tmp_path)["sha256"] == entry["sha256"]  # same bytes again
    assert same_actor(out / "policy.pt", shipped)
    snapshot = load_collector_snapshot(shipped)
    snapshot.learner.actor.net[0].weight.data.add_(1e-3)
    save_collector_snapshot(tmp_path / "changed.pt", snapshot.learner, snapshot.info)
    assert not same_actor(out / "policy.pt", tmp_path / "changed.pt")


@pytest.mark.parametrize("env", sorted(MANIFEST))
def test_shipped_snapshot_matches_its_manifest(env):
    entry = MANIFEST[env]
    path = SHIPPED_SNAPSHOT_DIR / entry["file"]
    assert path.stat().st_size < 1_000_000
    assert file_sha256(path) == entry["sha256"]
    snapshot = load_collector_snapshot(path)
    assert snapshot.env == env and snapshot.info["train_steps"] == entry["train_steps"]
    assert all(p.dtype == torch.float32 for p in snapshot.learner.actor.state_dict().values())


@pytest.mark.parametrize("env", sorted(MANIFEST))
def test_shipped_snapshot_generates_data_at_its_measured_return(env):
    """A few generated medium episodes have the manifest's return, within 3 standard errors."""
    entry = MANIFEST[env]
    arrays, _ = medium_recipe(get_env_spec(env), 4000, 0, False)
    dataset = OfflineDataset.from_arrays(arrays, env=env, dataset="medium", source="generated")
    complete = dataset.terminals | dataset.timeouts
    returns = dataset.episode_returns()[complete[dataset.episode_ends]]  # drop the cut last episode
    assert len(returns) >= 2
    tolerance = 3 * entry["measured_return_std"] / np.sqrt(len(returns)) + 0.05 * abs(entry["measured_return_mean"])
    assert abs(returns.mean() - entry["measured_return_mean"]) < tolerance
