"""The offline RL learners: they solve a problem with a known answer, their log-densities match an
independent computation, they checkpoint and resume exactly, and the registry validates its input."""
import json
import math
import re

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from adept.config import ConfigError
from adept.data.dataset import OfflineDataset
from baselines import LEARNERS, DataStats, learner_config, load_learner, make_learner, save_learner
from baselines.common import ACTION_CLAMP_EPS, LOCOMOTION_EPISODE_STEPS, OfflineLearner
from baselines.replay import TensorBuffer

OBS_DIM, ACT_DIM = 3, 2

SMALL = {"hidden_dim": 64, "batch_size": 128, "seed": 0}
# The learners whose update() takes transitions; Diffuser's takes trajectory segments (tests/test_diffuser.py).
TRANSITION_LEARNERS = sorted(name for name, (cls, _) in LEARNERS.items()
                             if cls.segment_sampler_options is OfflineLearner.segment_sampler_options)
# Per learner: overrides that keep the test fast, and the updates it gets on the bandit.
BANDIT_SETUP = {
    "bc": ({}, 1200),
    "iql": ({"lr_decay_steps": 0}, 600),
    "td3bc": ({}, 600),
    "sac": ({"initial_alpha": 0.1}, 900),
    "cql": ({"bc_warmup_steps": 0, "num_sampled_actions": 4}, 300),
    "combo": ({"num_sampled_actions": 4, "actor_lr": 3e-4, "alpha_lr": 3e-4}, 300),  # all rows real (no real_rows)
}


def bandit(num: int = 4096, seed: int = 0):
    """One-step contextual bandit: reward -||a - f(s)||^2, every transition terminal.

    The behaviour policy is tanh-Gaussian around the optimum, a = tanh(g(s) + 0.5 eps), f = tanh(g),
    so BC's mean recovers f and the RL learners must find f from the rewards."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(OBS_DIM, ACT_DIM, generator=generator)
    optimum = lambda obs: torch.tanh(0.7 * obs @ weights)  # noqa: E731
    obs = torch.randn(num, OBS_DIM, generator=generator)
    actions = torch.tanh(0.7 * obs @ weights + 0.5 * torch.randn(num, ACT_DIM, generator=generator))
    rewards = -(actions - optimum(obs)).square().sum(dim=1)
    next_obs = torch.randn(num, OBS_DIM, generator=generator)
    buffer = TensorBuffer.from_arrays(obs, actions, rewards, next_obs, torch.ones(num), "cpu")
    return buffer, optimum


@pytest.mark.parametrize("name", TRANSITION_LEARNERS)
def test_learner_solves_the_bandit_and_its_loss_decreases(name):
    torch.manual_seed(0)
    buffer, optimum = bandit()
    overrides, steps = BANDIT_SETUP[name]
    learner = make_learner(name, OBS_DIM, ACT_DIM, "cpu", overrides={**SMALL, **overrides})
    test_obs = torch.randn(1000, OBS_DIM, generator=torch.Generator().manual_seed(9))
    error = lambda: (learner.act(test_obs) - optimum(test_obs)).square().sum(dim=1).mean().item()  # noqa: E731
    initial_error = error()
    loss_key = "nll" if name == "bc" else "critic_loss"
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        metrics = learner.update(buffer.sample(128, generator))
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in metrics.values())
        losses.append(metrics[loss_key].item())
    assert initial_error > 0.3
    assert error() < 0.05, f"{name}: act() is {error():.3f} from the optimum (zero action: 1.05)"
    window = max(10, steps // 10)
    assert np.mean(losses[-window:]) < np.mean(losses[:window])
    assert learner.num_updates == steps


def stats_for(obs_dim: int) -> DataStats:
    return DataStats(np.linspace(-1, 1, obs_dim).astype(np.float32), np.linspace(0.5, 2, obs_dim).astype(np.float32))


@pytest.mark.parametrize("name", ["sac", "cql", "bc"])
def test_tanh_gaussian_log_prob_matches_torch_distributions(name):
    learner = make_learner(name, OBS_DIM, ACT_DIM, "cpu", stats=stats_for(OBS_DIM), overrides=SMALL)
    obs = torch.randn(64, OBS_DIM)
    actions = torch.rand(64, ACT_DIM) * 1.8 - 0.9
    mean, log_std = learner.actor(learner.normalizer.observations(obs))
    u = torch.atanh(actions.double())
    reference = (Normal(mean.double(), log_std.exp().double()).log_prob(u) - torch.log1p(-actions.double() ** 2)).sum(-1)
    assert torch.allclose(learner.log_prob(obs, actions).double(), reference, rtol=1e-4, atol=1e-4)

    # At the bounds the density is the one of the clamped action, and finite.
    edge = torch.tensor([[1.0, -1.0], [1.0, 0.0], [-1.0, 0.5]])
    edge_obs = obs[:3]
    clamped = edge.double().clamp(-1 + ACTION_CLAMP_EPS, 1 - ACTION_CLAMP_EPS)
    mean, log_std = learner.actor(learner.normalizer.observations(edge_obs))
    reference = (Normal(mean.double(), log_std.exp().double()).log_prob(torch.atanh(clamped))
                 - torch.log1p(-clamped ** 2)).sum(-1)
    edge_log_prob = learner.log_prob(edge_obs, edge)
    assert torch.isfinite(edge_log_prob).all()
    assert torch.allclose(edge_log_prob.double(), reference, rtol=1e-3, atol=1e-2)


def test_sampled_actions_carry_their_exact_log_density():
    learner = make_learner("sac", OBS_DIM, ACT_DIM, "cpu", overrides=SMALL)
    obs = torch.randn(256, OBS_DIM)
    actions, log_prob = learner.actor.sample(obs, torch.Generator().manual_seed(0))
    assert (actions.abs() < 1).all()
    assert torch.allclose(log_prob, learner.actor.log_prob(obs, actions), atol=1e-3)


def test_gaussian_policies_log_prob():
    iql = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", stats=stats_for(OBS_DIM), overrides=SMALL)
    with torch.no_grad():
        iql.actor.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs, actions = torch.randn(32, OBS_DIM), torch.rand(32, ACT_DIM) * 2 - 1
    actions[0] = torch.tensor([1.0, -1.0])  # a Gaussian density needs no clamping at the bounds
    mean = torch.tanh(iql.actor.net(iql.normalizer.observations(obs)))
    expected = Normal(mean, torch.tensor([-0.5, 0.3]).exp()).log_prob(actions).sum(-1)
    assert torch.allclose(iql.log_prob(obs, actions), expected, atol=1e-5)

    td3bc = make_learner("td3bc", OBS_DIM, ACT_DIM, "cpu", overrides={**SMALL, "exploration_noise": 0.2})
    expected = Normal(td3bc.actor(obs), 0.2).log_prob(actions).sum(-1)
    assert torch.allclose(td3bc.log_prob(obs, actions), expected, atol=1e-4)


@pytest.mark.parametrize("name", TRANSITION_LEARNERS)
def test_act_returns_bounded_actions_for_batches_and_single_observations(name):
    learner = make_learner(name, OBS_DIM, ACT_DIM, "cpu", overrides=SMALL)
    obs = 50 * torch.randn(100, OBS_DIM)
    for deterministic in (True, False):
        actions = learner.act(obs, deterministic=deterministic)
        assert actions.shape == (100, ACT_DIM) and actions.abs().max() <= 1
    assert learner.act(np.zeros(OBS_DIM, np.float32)).shape == (ACT_DIM,)
    first = learner.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    second = learner.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="expected 3"):
        learner.act(torch.zeros(4, OBS_DIM + 1))


def parameters(learner) -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in learner.state_dict().items():
        if isinstance(value, dict) and "state" not in value:  # a module's state dict
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, torch.Tensor):
            flat[key] = value
    return flat


# Overrides that make the resume boundary cross each learner's schedule: TD3+BC's delayed actor,
# CQL's switch from behaviour cloning, IQL's LR decay.
SCHEDULES = {"td3bc": {}, "cql": {"bc_warmup_steps": 5, "num_sampled_actions": 3}, "iql": {"lr_decay_steps": 10}}


@pytest.mark.parametrize("name", TRANSITION_LEARNERS)
def test_resume_from_saved_learner_matches_uninterrupted_training(name, tmp_path):
    buffer, _ = bandit(512)
    overrides = {**SMALL, "hidden_dim": 16, **SCHEDULES.get(name, {})}
    first, second = 7, 6

    uninterrupted = make_learner(name, OBS_DIM, ACT_DIM, "cpu", stats=stats_for(OBS_DIM), overrides=overrides)
    generator = torch.Generator().manual_seed(5)
    for _ in range(first + second):
        uninterrupted.update(buffer.sample(32, generator))

    interrupted = make_learner(name, OBS_DIM, ACT_DIM, "cpu", stats=stats_for(OBS_DIM), overrides=overrides)
    generator = torch.Generator().manual_seed(5)
    for _ in range(first):
        interrupted.update(buffer.sample(32, generator))
    save_learner(tmp_path / "learner.pt", interrupted)
    sampler_state = generator.get_state()
    del interrupted
    resumed = load_learner(tmp_path / "learner.pt", "cpu")
    generator = torch.Generator().manual_seed(0)
    generator.set_state(sampler_state)
    for _ in range(second):
        resumed.update(buffer.sample(32, generator))

    assert resumed.num_updates == first + second
    expected, actual = parameters(uninterrupted), parameters(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{name}: {key} differs after resuming"
    obs = torch.randn(8, OBS_DIM)
    assert torch.equal(uninterrupted.act(obs, deterministic=False), resumed.act(obs, deterministic=False))
    assert [p.name for p in tmp_path.iterdir()] == ["learner.pt"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["iql", "sac"])
def test_training_is_deterministic_given_the_seed_whatever_the_global_rng(name):
    buffer, _ = bandit(512)

    def train(global_seed: int, learner_seed: int):
        torch.manual_seed(global_seed)
        learner = make_learner(name, OBS_DIM, ACT_DIM, "cpu", overrides={**SMALL, "hidden_dim": 16, "seed": learner_seed})
        generator = torch.Generator().manual_seed(0)
        for _ in range(20):
            learner.update(buffer.sample(32, generator))
        return parameters(learner)

    a, b, c = train(1, 0), train(2, 0), train(1, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_without_a_seed_the_learner_follows_the_global_rng():
    def init(global_seed):
        torch.manual_seed(global_seed)
        return parameters(make_learner("bc", OBS_DIM, ACT_DIM, "cpu", overrides={"hidden_dim": 8}))

    a, b, c = init(0), init(0), init(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_registry_rejects_unknown_names_and_bad_overrides():
    with pytest.raises(ValueError, match=re.escape(f"valid learners are {sorted(LEARNERS)}")):
        make_learner("ddpg", OBS_DIM, ACT_DIM, "cpu")
    with pytest.raises(ConfigError, match="unknown key.*expectile"):
        learner_config("iql", {"expectle": 0.9})
    with pytest.raises(ConfigError, match=r"expectile must be in \(0.0, 1.0\), got 1.5"):
        learner_config("iql", {"expectile": 1.5})
    with pytest.raises(ConfigError, match=r"tau must be in \(0.0, 1.0\]"):
        learner_config("sac", {"tau": 0})
    with pytest.raises(ConfigError, match="policy_delay must be >= 1"):
        learner_config("td3bc", {"policy_delay": 0})
    with pytest.raises(ConfigError, match="reward_normalization"):
        learner_config("cql", {"reward_normalization": "standardize"})
    assert learner_config("iql", {"beta": "10"}).beta == 10.0  # command-line strings are coerced


def test_each_learner_exposes_name_and_config():
    for name, (learner_cls, config_cls) in LEARNERS.items():
        learner = make_learner(name, OBS_DIM, ACT_DIM, "cpu", overrides={"hidden_dim": 8})
        assert learner.name == name and isinstance(learner, learner_cls)
        assert isinstance(learner.config, config_cls)


def toy_dataset(returns_per_episode=(10.0, 30.0, 25.0)) -> OfflineDataset:
    """Three episodes of 4 steps (ended by a terminal, a timeout, and the end of the data)."""
    n = 4 * len(returns_per_episode)
    rewards = np.repeat(np.asarray(returns_per_episode, np.float32) / 4, 4)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[3], timeouts[7] = True, True
    states = np.arange((n + 1) * OBS_DIM, dtype=np.float32).reshape(n + 1, OBS_DIM) ** 0.5
    obs, next_obs = states[:-1], states[1:].copy()  # next_observations[t] == observations[t + 1] ...
    next_obs[[3, 7]] += 100.0  # ... except where an episode ends
    return OfflineDataset(observations=obs, actions=np.zeros((n, ACT_DIM), np.float32), rewards=rewards,
                          next_observations=next_obs, terminals=terminals, timeouts=timeouts,
                          env="hopper", dataset="random", source="generated")


def test_data_stats_from_dataset():
    dataset = toy_dataset()
    stats = DataStats.from_dataset(dataset, normalize_obs=True, reward_normalization="return_range")
    np.testing.assert_allclose(stats.obs_mean, dataset.observations.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.obs_std, dataset.observations.std(0) + 1e-3, rtol=1e-6)
    assert stats.reward_scale == pytest.approx(LOCOMOTION_EPISODE_STEPS / (30.0 - 10.0))
    plain = DataStats.from_dataset(dataset, normalize_obs=False, reward_normalization="none")
    assert plain.reward_scale == 1.0 and np.all(plain.obs_mean == 0) and np.all(plain.obs_std == 1)
    with pytest.raises(ValueError, match="same return"):
        DataStats.from_dataset(toy_dataset((5.0, 5.0)), reward_normalization="return_range")
    with pytest.raises(ValueError, match="valid ones are"):
        DataStats.from_dataset(dataset, reward_normalization="minmax")


def test_make_learner_computes_the_statistics_its_config_asks_for():
    dataset = toy_dataset()
    iql = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", dataset=dataset, overrides={"hidden_dim": 8})
    assert iql.stats.reward_scale == pytest.approx(50.0)  # IQL scales rewards by 1000 / return range
    td3bc = make_learner("td3bc", OBS_DIM, ACT_DIM, "cpu", dataset=dataset, overrides={"hidden_dim": 8})
    assert td3bc.stats.reward_scale == 1.0
    np.testing.assert_allclose(td3bc.stats.obs_mean, dataset.observations.mean(0), rtol=1e-6)
    # the learner applies them: normalized rewards reach the TD target
    assert torch.allclose(iql.normalizer.rewards(torch.tensor([2.0])), torch.tensor([100.0]))
    with pytest.raises(ValueError, match="obs_dim is 4"):
        make_learner("bc", 4, ACT_DIM, "cpu", stats=stats_for(OBS_DIM))


def test_load_learner_errors_are_actionable(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_learner(tmp_path / "missing.pt", "cpu")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a learner saved by"):
        load_learner(tmp_path / "other.pt", "cpu")


def test_learner_state_dict_rejects_another_learners_state():
    sac = make_learner("sac", OBS_DIM, ACT_DIM, "cpu", overrides={"hidden_dim": 8})
    bc = make_learner("bc", OBS_DIM, ACT_DIM, "cpu", overrides={"hidden_dim": 8})
    with pytest.raises(ValueError, match="lacks"):
        sac.load_state_dict(bc.state_dict())


def test_iql_actor_learning_rate_follows_a_cosine_to_zero():
    learner = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", overrides={**SMALL, "lr_decay_steps": 100})
    assert learner.actor_lr() == pytest.approx(3e-4)
    learner.num_updates = 50
    assert learner.actor_lr() == pytest.approx(1.5e-4)
    learner.num_updates = 250
    assert learner.actor_lr() == 0.0
    assert math.isclose(make_learner("iql", OBS_DIM, ACT_DIM, "cpu",
                                     overrides={"hidden_dim": 8, "lr_decay_steps": 0}).actor_lr(), 3e-4)


def test_throughput_benchmark_writes_its_table_as_json(tmp_path, capsys):
    from benchmarks.throughput import main

    out = tmp_path / "bench.json"
    assert main(["--learners", "bc", "td3bc", "--device", "cpu", "--steps", "2", "--warmup", "1",
                 "--batch-size", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bc" in printed and "updates/s" in printed
    report = json.loads(out.read_text())
    assert report["batch_size"] == 16 and report["torch"] == torch.__version__
    assert [r["case"] for r in report["results"]] == ["bc", "td3bc"]
    assert all(r["updates_per_s"] > 0 for r in report["results"])
    # torch alone needs well over 50 MB resident; a wrong unit (KB vs MB) would fail this
    assert all(50 < r["peak_memory_mb"] < 20_000 and r["peak_memory_kind"] == "process max RSS"
               for r in report["results"])
