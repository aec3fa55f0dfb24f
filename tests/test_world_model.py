"""WorldModel (eps_theta + r_eta) and its initial fit: learning, guidance, clipping, IWU, persistence, resume."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adept.config import ConfigError, from_dict
from adept.data import OfflineDataset
from adept.outputs import read_csv
from adept.rollouts import generate_rollouts
from adept.world_model import WorldModel, WorldModelConfig, check_finite
from adept.world_model_training import convergence, output_paths, train_world_model
from baselines.replay import Batch

OBS_DIM, ACT_DIM = 3, 2
A = np.array([[0.9, 0.2, 0.0], [-0.2, 0.9, 0.1], [0.0, 0.3, 0.7]], np.float32)
B = np.array([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]], np.float32)
TINY = dict(hidden_dim=32, depth=2, reward_hidden_dim=32, reward_depth=1, diffusion_steps=5,
            time_embedding_dim=8)
CONFIG_YAML = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def linear_system(n: int, seed: int = 0, noise: float = 0.01) -> OfflineDataset:
    """s' = A s + B a + noise; r = s'_0 - 0.1 |a|^2; terminal when s'_1 > 0.5 (about 30% of transitions)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32)
    next_obs = (obs @ A.T + act @ B.T + noise * rng.normal(size=(n, OBS_DIM))).astype(np.float32)
    rewards = (next_obs[:, 0] - 0.1 * (act**2).sum(1)).astype(np.float32)
    terminals = next_obs[:, 1] > 0.5
    return OfflineDataset(observations=obs, actions=act, rewards=rewards, next_observations=next_obs,
                          terminals=terminals, timeouts=np.zeros(n, bool), env="linear", dataset="synthetic",
                          source="test")


def as_batch(dataset: OfflineDataset, idx=slice(None)) -> Batch:
    return Batch(*(torch.as_tensor(np.asarray(getattr(dataset, name)[idx], np.float32)) for name in
                   ("observations", "actions", "rewards", "next_observations", "terminals")))


@pytest.fixture(scope="module")
def trained():
    """A tiny model fitted to the linear system (about 5 s). One torch thread: these matrices are too small
    to gain from more, and on a busy machine extra threads spin against other processes."""
    data = linear_system(4096)
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(**{**TINY, "hidden_dim": 64}))
    full = as_batch(data)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(1500):
            idx = torch.randint(0, len(data), (256,), generator=generator)
            model.update(Batch(*(x[idx] for x in full)), generator=generator)
    finally:
        torch.set_num_threads(threads)
    return model


def test_trained_model_recovers_linear_dynamics_far_better_than_unconditional(trained):
    test = as_batch(linear_system(1024, seed=1))

    def next_state_mse(weight):
        model = copy.deepcopy(trained)
        model.apply_runtime_overrides({"guidance_convention": "eq2", "guidance_weight": weight})
        pred = model.sample_next(test.observations, test.actions, generator=torch.Generator().manual_seed(0))
        return (model.normalize_obs(pred) - model.normalize_obs(test.next_observations)).square().mean().item()

    conditional, unconditional = next_state_mse(1.0), next_state_mse(0.0)
    assert conditional < 0.05, conditional        # normalized units: the data variance is ~1 per dimension
    assert unconditional > 0.5, unconditional     # the unconditional model only knows the marginal of s'
    reward, terminal = trained.reward_terminal(test.observations, test.actions, test.next_observations)
    assert (reward - test.rewards).square().mean() < 0.05 * test.rewards.var()
    assert (terminal == (test.dones > 0.5)).float().mean() > 0.9  # always-False would score ~0.7


def test_guided_sampling_with_weight_one_equals_conditional_sampling(trained):
    model = copy.deepcopy(trained)
    model.apply_runtime_overrides({"guidance_convention": "eq2", "guidance_weight": 1.0})
    obs, act = torch.randn(32, OBS_DIM), torch.rand(32, ACT_DIM) * 2 - 1
    guided = model.sample_next(obs, act, generator=torch.Generator().manual_seed(3))
    # reference: the reverse process written out with the conditional denoiser only
    generator = torch.Generator().manual_seed(3)
    condition = torch.cat([model.normalize_obs(obs), act], -1)
    bounds = (model.normalize_obs(model.obs_min), model.normalize_obs(model.obs_max))
    x = torch.randn(32, OBS_DIM, generator=generator)
    with torch.no_grad():
        for k in range(model.config.diffusion_steps, 0, -1):
            eps = model.denoise(x, torch.full((32,), k), condition, torch.ones(32, 1))
            # clip_denoised clamps x0_hat in steps K..2; the last step's x0_hat is the sample, left to `step`
            x = model.schedule.reverse_step(x, k, eps, generator, bounds if k > 1 else None)
    torch.testing.assert_close(guided, model.denormalize_obs(x), rtol=0, atol=0)
    ho_salimans = copy.deepcopy(trained)
    ho_salimans.apply_runtime_overrides({"guidance_convention": "ho_salimans", "guidance_weight": 0.0})
    torch.testing.assert_close(ho_salimans.sample_next(obs, act, generator=torch.Generator().manual_seed(3)), guided)


def test_step_clips_states_and_rewards_to_the_data_range():
    data = linear_system(512)
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(**TINY, clip_denoised=False))
    with torch.no_grad():  # an untrained model pushed far out of range
        model.denoiser[-1].bias.fill_(-50.0)
        model.reward_model[-1].bias[0] = 100.0
    obs, act = as_batch(data, slice(0, 256))[:2]
    next_obs, reward, _ = model.step(obs, act, torch.Generator().manual_seed(0))
    low, high = np.minimum(data.observations.min(0), data.next_observations.min(0)), \
        np.maximum(data.observations.max(0), data.next_observations.max(0))
    assert (next_obs >= torch.as_tensor(low)).all() and (next_obs <= torch.as_tensor(high)).all()
    assert torch.allclose(reward, torch.tensor(data.rewards.max()))
    model.apply_runtime_overrides({"clip_to_data": False})
    unclipped, unclipped_reward, _ = model.step(obs, act, torch.Generator().manual_seed(0))
    assert (unclipped > torch.as_tensor(high)).any() or (unclipped < torch.as_tensor(low)).any()
    assert (unclipped_reward > data.rewards.max()).all()


def tiny_range_model() -> WorldModel:
    """An untrained model of data whose states and rewards span about +-3e-4: std floored at 1e-3, so the
    data range is about +-0.3 in normalized units and the untrained denoiser and r_eta overshoot it."""
    rng = np.random.default_rng(0)
    tiny = lambda *shape: (1e-4 * rng.normal(size=shape)).astype(np.float32)  # noqa: E731
    torch.manual_seed(0)
    return WorldModel.from_arrays(tiny(256, OBS_DIM), rng.uniform(-1, 1, (256, ACT_DIM)).astype(np.float32),
                                  tiny(256), tiny(256, OBS_DIM), WorldModelConfig(**TINY))


class TanhPolicy:
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.tanh(obs[:, :ACT_DIM] * 1e3)


def generated_range(model: WorldModel, overrides: dict) -> dict[str, bool]:
    """Whether the states and rewards of `step` and of H = 3 rollouts stay inside the data range."""
    model = copy.deepcopy(model)
    model.apply_runtime_overrides(overrides)
    obs = model.obs_min + (model.obs_max - model.obs_min) * torch.rand(512, OBS_DIM,
                                                                       generator=torch.Generator().manual_seed(0))
    next_obs, reward, _ = model.step(obs, TanhPolicy().act(obs), torch.Generator().manual_seed(1))
    rollout = generate_rollouts(model, TanhPolicy(), obs, horizon=3, generator=torch.Generator().manual_seed(2))
    inside = lambda x, low, high: bool(((x >= low) & (x <= high)).all())  # noqa: E731
    return {"step_states": inside(next_obs, model.obs_min, model.obs_max),
            "step_rewards": inside(reward, model.reward_min, model.reward_max),
            "rollout_states": inside(rollout.next_observations, model.obs_min, model.obs_max),
            "rollout_rewards": inside(rollout.rewards, model.reward_min, model.reward_max)}


def test_no_clipping_variant_lets_generated_values_leave_the_data_range():
    """Table 4's "no clipping" (the variant shipped in config/config.yaml) turns off every clamp of generated
    states and rewards; the default keeps them all in the data range."""
    model = tiny_range_model()
    assert all(generated_range(model, {}).values())
    variant = yaml.safe_load(CONFIG_YAML.read_text())["variants"]["adept-sac_noclip"]["overrides"]["world_model"]
    assert variant == {"clip_to_data": False, "clip_denoised": False}
    assert not any(generated_range(model, variant).values())
    # clip_to_data alone decides whether the output is clipped: the sampler's x0 clamp stops at step 2
    assert not any(generated_range(model, {"clip_to_data": False, "clip_denoised": True}).values())


def test_importance_weighted_update_with_unit_weights_equals_unweighted_update():
    data = linear_system(512)
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(**TINY))
    twin, other = copy.deepcopy(model), copy.deepcopy(model)
    batch = as_batch(data, slice(0, 128))
    for step in range(3):
        model.update(batch, None, torch.Generator().manual_seed(step))
        twin.update(batch, torch.ones(128), torch.Generator().manual_seed(step))
        other.update(batch, torch.linspace(0.0, 2.0, 128), torch.Generator().manual_seed(step))
    for a, b, c in zip(model.parameters(), twin.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(model.parameters(), other.parameters()))


def test_per_sample_loss_is_the_algorithm_1_loss():
    data = linear_system(64)
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(**TINY, predict_terminal=False))
    batch = as_batch(data)
    loss, metrics = model.per_sample_loss(*batch, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (64,) and "terminal_loss" not in metrics
    assert loss.mean().item() == pytest.approx((metrics["denoiser_loss"] + metrics["reward_loss"]).item(), rel=1e-5)


def test_check_finite_names_the_component_and_step():
    data = linear_system(256)
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(**TINY))
    batch = as_batch(data, slice(0, 64))
    check_finite(model.update(batch), step=1)  # finite: no error
    with torch.no_grad():
        model.reward_model[-1].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"step 7: reward loss"):
        check_finite(model.update(batch), step=7)
    broken = WorldModel.from_dataset(data, WorldModelConfig(**TINY))
    with torch.no_grad():
        broken.denoiser[0].weight.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"denoiser loss.*wm/denoiser_loss"):
        broken.check_finite({f"wm/{k}": v for k, v in broken.update(batch).items()}, step=2)
    with pytest.raises(FloatingPointError, match="generated states"):
        check_finite({"rollout/generated_state_abs_mean": torch.tensor(float("nan"))}, step=3)


def test_save_load_round_trip_keeps_config_stats_and_outputs(tmp_path):
    data = linear_system(256)
    torch.manual_seed(0)
    model = WorldModel.from_dataset(data, WorldModelConfig(**TINY, guidance_weight=0.7))
    model.update(as_batch(data, slice(0, 64)))
    path = tmp_path / "nested" / "wm.pt"
    model.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["wm.pt"]  # no temporary files left behind
    loaded = WorldModel.load(path)
    assert loaded.config == model.config
    obs, act = torch.randn(8, OBS_DIM), torch.zeros(8, ACT_DIM)
    for a, b in zip(model.step(obs, act, torch.Generator().manual_seed(1)),
                    loaded.step(obs, act, torch.Generator().manual_seed(1))):
        assert torch.equal(a, b)
    torch.testing.assert_close(loaded.reward_abs_max, torch.tensor(np.abs(data.rewards).max()))
    assert loaded.optimizer.state_dict()["state"].keys() == model.optimizer.state_dict()["state"].keys()
    with pytest.raises(FileNotFoundError, match="world-model"):
        WorldModel.load(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a world model"):
        WorldModel.load(tmp_path / "other.pt")


def test_config_validation_and_runtime_overrides():
    with pytest.raises(ConfigError, match="cond_drop_prob"):
        from_dict(WorldModelConfig, {"cond_drop_prob": 0.0}, "world_model")
    with pytest.raises(ConfigError, match="guidance_convention"):
        from_dict(WorldModelConfig, {"guidance_convention": "cfg"}, "world_model")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(WorldModelConfig, {"guidance": 1.0}, "world_model")
    model = WorldModel(OBS_DIM, ACT_DIM, WorldModelConfig(**TINY))
    model.apply_runtime_overrides({"guidance_weight": 2.0, "lr": 1e-4})
    assert model.config.guidance_weight == 2.0 and model.optimizer.param_groups[0]["lr"] == 1e-4
    with pytest.raises(ConfigError, match="hidden_dim"):
        model.apply_runtime_overrides({"hidden_dim": 128})
    bad = linear_system(16)
    bad.rewards[3] = np.nan
    with pytest.raises(ValueError, match="rewards contain NaN"):
        WorldModel.from_dataset(bad)


def test_training_resumes_to_the_same_result_as_an_uninterrupted_run(tmp_path):
    data = linear_system(600)
    config = WorldModelConfig(**TINY, batch_size=32)
    common = dict(device="cpu", seed=3, log_every=5, checkpoint_every=5, holdout_fraction=0.1, progress=False)
    full = train_world_model(data, config, steps=20, out_path=tmp_path / "full" / "wm.pt", **common)
    first = train_world_model(data, config, steps=10, out_path=tmp_path / "split" / "wm.pt", **common)
    assert first["steps_done"] == 10
    resumed = train_world_model(data, config, steps=20, out_path=tmp_path / "split" / "wm.pt", **common)
    assert resumed["steps_done"] == 20 and full["final"] == resumed["final"]
    a, b = WorldModel.load(tmp_path / "full" / "wm.pt"), WorldModel.load(tmp_path / "split" / "wm.pt")
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    drop_time = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_time_s", "steps_per_s")}  # noqa: E731
                              for r in rows]
    paths = output_paths(tmp_path / "split" / "wm.pt")
    assert drop_time(read_csv(paths["log"])) == drop_time(read_csv(output_paths(tmp_path / "full" / "wm.pt")["log"]))
    assert [row["step"] for row in read_csv(paths["log"])] == [5, 10, 15, 20]
    report = json.loads(paths["report"].read_text())
    assert report["steps_done"] == 20 and report["heldout_transitions"] == 60
    assert math.isfinite(report["final"]["heldout_next_state_mse"])
    with pytest.raises(ValueError, match="different world-model training run"):
        train_world_model(data, config, steps=30, out_path=tmp_path / "split" / "wm.pt",
                          **{**common, "seed": 4})


def test_convergence_rule():
    assert not convergence([1.0, 0.9, 0.8], patience=3, min_improvement=0.01)    # too few evaluations
    assert not convergence([1.0, 0.9, 0.8, 0.7], patience=3, min_improvement=0.01)
    assert convergence([1.0, 0.5, 0.499, 0.5, 0.498], patience=3, min_improvement=0.01)
    assert not convergence([1.0, 0.5, 0.499, 0.5, 0.48], patience=3, min_improvement=0.01)


def test_cli_trains_from_a_d4rl_layout_file(tiny_random_dataset_path, tmp_path, capsys):
    import argparse

    from adept.commands import world_model as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    out = tmp_path / "wm.pt"
    args = parser.parse_args(["world-model", "--data", str(tiny_random_dataset_path), "--env", "hopper",
                              "--out", str(out), "--steps", "4", "--log-every", "2", "--device", "cpu", "--quiet",
                              "--set", "world_model.hidden_dim=16", "--set", "world_model.depth=1"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps_done"] == 4 and WorldModel.load(out).config.hidden_dim == 16
    bad = parser.parse_args(["world-model", "--data", str(tiny_random_dataset_path), "--env", "hopper",
                             "--out", str(out), "--set", "learner.beta=3"])
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['learner'\] for `adept world-model`; "
                                          r"valid sections are \['world_model', 'world_model_training'\]"):
        bad.func(bad)


def test_world_model_settings_come_from_config_and_set_and_name_a_wrong_key(tmp_path):
    from adept.commands.world_model import WORLD_MODEL_TRAINING_FLAGS, load_world_model_settings
    from adept.world_model_training import WorldModelFitConfig

    path = tmp_path / "wm.yaml"
    path.write_text("world_model: {hidden_dim: 16}\nworld_model_training: {steps: 300, log_every: 50}\n")
    settings = load_world_model_settings(path, ["world_model_training.steps=400", "world_model.depth=1"])
    assert (settings.world_model.hidden_dim, settings.world_model.depth) == (16, 1)
    assert (settings.world_model_training.steps, settings.world_model_training.log_every) == (400, 50)
    assert settings.world_model_training.holdout_fraction == WorldModelFitConfig().holdout_fraction
    with pytest.raises(ConfigError, match=r"^world_model_training: unknown key\(s\) \['step'\]; valid keys are "
                                          r"\[.*'steps'") as err:
        load_world_model_settings(None, ["world_model_training.step=3"])
    assert "\n" not in str(err.value)
    path.write_text("world_model_training: {steps: 0}\n")
    with pytest.raises(ConfigError, match=r"steps must be >= 1, got 0 \(.*wm\.yaml\): fix that entry") as err:
        load_world_model_settings(path, [])
    assert "\n" not in str(err.value)
    assert set(WORLD_MODEL_TRAINING_FLAGS) <= set(WorldModelFitConfig.__dataclass_fields__)


def test_the_held_out_split_travels_with_the_model(tmp_path):
    from adept.world_model_training import world_model_split
    from adept.data.dataset import split_holdout

    data = linear_system(200)
    out = tmp_path / "wm.pt"
    train_world_model(data, WorldModelConfig(**TINY, batch_size=16), steps=2, log_every=2, device="cpu", seed=5,
                      out_path=out, holdout_fraction=0.1, progress=False)
    output_paths(out)["report"].unlink()  # the model file alone carries it
    assert WorldModel.load(out).metadata["holdout"] == {"seed": 5, "holdout_fraction": 0.1, "num_transitions": 200}
    train_rows, heldout_rows = world_model_split(out, data)
    expected = split_holdout(200, 0.1, 5)
    assert (train_rows == expected[0]).all() and (heldout_rows == expected[1]).all()
    with pytest.raises(ValueError, match=r"describes a dataset of 200 transitions, this one has 150: its "
                                         r"train/held-out split is unknown"):
        world_model_split(out, linear_system(150))
    payload = torch.load(out, weights_only=False)
    del payload["metadata"]
    torch.save(payload, out)  # a model saved before models recorded their split, without its report
    with pytest.raises(ValueError, match=r"records no train/held-out split and there is no report .* split is unknown"):
        world_model_split(out, data)
