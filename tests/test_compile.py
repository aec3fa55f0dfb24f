"""Compiled update steps (baselines/compile.py): every learner's compiled update, the world model's
compiled IWU step and its compiled sampling give the eager results on the same inputs and seeds, and a
compiled run resumes to the uninterrupted result.

torch.compile is slow to compile on a small CPU (10-90 s per step function), so the networks here are
tiny. The comparisons are in float32, the harness's precision: the two paths differ by roundoff only
(fused kernels sum in another order), ~1e-7 relative after a few steps, so TOLERANCE is far below
any real difference (e.g. a skipped optimizer step moves parameters by lr = 3e-4). (float64 would be
tighter, but torch 2.13's compiled Adam leaves 0-dim float64 parameters, the entropy temperatures,
unchanged; float32 is unaffected.)
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from adept.config import ConfigError
from adept.outputs import read_csv
from adept.runner import RunConfig, RunInputs, TrainConfig, run_compile, train
from adept.world_model import WorldModel, WorldModelConfig
from baselines import LEARNERS, load_learner, make_learner
from baselines.common import OfflineLearner
from baselines.compile import AUTO_COMPILE, resolve_compile, should_compile
from baselines.iql import IQL
from baselines.replay import Batch, TensorBuffer

OBS_DIM, ACT_DIM, BATCH = 3, 2, 16
# Learners whose update() takes transitions (Diffuser's takes trajectory segments).
TRANSITION_LEARNERS = sorted(name for name, (cls, _) in LEARNERS.items()
                             if cls.segment_sampler_options is OfflineLearner.segment_sampler_options)
# Overrides that reach every branch of the step within STEPS updates: TD3+BC's actor delay (steps 2, 4),
# CQL's switch from BC warm-up to the Q-based actor loss (after step 2).
OVERRIDES = {"cql": {"bc_warmup_steps": 2, "num_sampled_actions": 3}, "combo": {"num_sampled_actions": 3}}
STEPS = 4
# CUDA (mode="reduce-overhead", CUDA graphs) where there is a GPU: benchmarks/gpu_check.sh runs `-k cuda`.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}


@pytest.fixture(autouse=True)
def no_silent_fallback():
    """A step that hits dynamo's recompile limit fails instead of running eagerly unnoticed."""
    import torch._dynamo.config

    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield


def transitions(n: int = 512, seed: int = 0, device: str = "cpu") -> TensorBuffer:
    g = torch.Generator().manual_seed(seed)
    return TensorBuffer.from_arrays(torch.randn(n, OBS_DIM, generator=g), torch.rand(n, ACT_DIM, generator=g) * 2 - 1,
                                    torch.randn(n, generator=g), torch.randn(n, OBS_DIM, generator=g),
                                    (torch.rand(n, generator=g) < 0.1).float(), device)


def assert_close_states(a: dict, b: dict, path: str = "") -> None:
    assert a.keys() == b.keys(), path
    for key in a:
        where = f"{path}.{key}"
        if isinstance(a[key], dict):
            assert_close_states(a[key], b[key], where)
        elif isinstance(a[key], torch.Tensor) and a[key].is_floating_point():
            torch.testing.assert_close(b[key].float(), a[key].float(), **TOLERANCE, msg=where)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", TRANSITION_LEARNERS)
def test_compiled_update_equals_eager_update(name, device):
    overrides = {"hidden_dim": 8, "batch_size": BATCH, "seed": 0, **OVERRIDES.get(name, {})}
    eager = make_learner(name, OBS_DIM, ACT_DIM, device, overrides={**overrides, "compile": "off"})
    compiled = make_learner(name, OBS_DIM, ACT_DIM, device, overrides={**overrides, "compile": "on"})
    assert not eager.compiled and compiled.compiled
    buffer, generator = transitions(device=device), torch.Generator(device=device).manual_seed(1)
    for _ in range(STEPS):
        batch = buffer.sample(BATCH, generator)
        expected, got = eager.update(batch), compiled.update(batch)
        assert expected.keys() == got.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], **TOLERANCE, msg=key)
    state = compiled.state_dict()
    assert_close_states(eager.state_dict(), state)
    assert torch.equal(eager.generator.get_state(), compiled.generator.get_state())  # same draws, same order

    # A deep copy (ClosedLoop keeps one of the previous policy) updates itself, not the original.
    copied = copy.deepcopy(compiled)
    copied.update(buffer.sample(BATCH, generator))
    assert_close_states(compiled.state_dict(), state)
    assert copied.num_updates == compiled.num_updates + 1


def test_eager_checkpoint_resumes_in_a_compiled_learner_and_back():
    """The optimizers' implementation (fused eager, plain compiled) is the learner's, not the checkpoint's."""
    overrides = {"hidden_dim": 8, "batch_size": BATCH, "seed": 0, "lr_decay_steps": 0}
    buffer, generator = transitions(), torch.Generator().manual_seed(1)
    batches = [buffer.sample(BATCH, generator) for _ in range(4)]
    reference = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", overrides={**overrides, "compile": "off"})
    for batch in batches:
        reference.update(batch)

    first = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", overrides={**overrides, "compile": "off"})
    for batch in batches[:2]:
        first.update(batch)
    second = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", overrides={**overrides, "compile": "on"})
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert not any(group["fused"] for group in second.critic_optimizer.param_groups)
    for batch in batches[2:]:
        second.update(batch)
    assert_close_states(reference.state_dict(), second.state_dict())

    back = make_learner("iql", OBS_DIM, ACT_DIM, "cpu", overrides={**overrides, "compile": "off"})
    back.load_state_dict(copy.deepcopy(second.state_dict()))
    assert all(group["fused"] for group in back.critic_optimizer.param_groups)


def world_model(seed: int = 0, device: str = "cpu") -> WorldModel:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(256, OBS_DIM))
    config = WorldModelConfig(hidden_dim=8, depth=2, reward_hidden_dim=8, time_embedding_dim=4, diffusion_steps=4)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WorldModel.from_arrays(obs, rng.uniform(-1, 1, (256, ACT_DIM)), rng.normal(size=256),
                                       obs + 0.1 * rng.normal(size=obs.shape), config, device)
    return model


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_iwu_step_and_sampling_equal_eager(device):
    eager, compiled = world_model(device=device), world_model(device=device)
    compiled.set_compile("on")
    eager.set_compile("off")
    buffer = transitions(device=device)
    gen = lambda seed: torch.Generator(device=device).manual_seed(seed)  # noqa: E731
    g_eager, g_compiled = gen(3), gen(3)
    for _ in range(3):  # importance-weighted (IWU) and unweighted (initial fit) steps
        batch = buffer.sample(64, gen(4))
        for weights in (torch.rand(64, device=device, generator=gen(5)) * 2, None):
            expected, got = eager.update(batch, weights, g_eager), compiled.update(batch, weights, g_compiled)
            for key in expected:
                torch.testing.assert_close(got[key], expected[key], **TOLERANCE, msg=key)
    assert_close_states(eager.state_dict(), compiled.state_dict())
    assert_close_states(eager.optimizer.state_dict(), compiled.optimizer.state_dict())

    obs, act = buffer.observations[:32], buffer.actions[:32]
    for guidance in (None, 1.0):  # guided (doubled batch) and purely conditional sampling
        expected = eager.step(obs, act, gen(6)) if guidance is None else \
            eager.sample_next(obs, act, guidance_weight=guidance, generator=gen(6))
        got = compiled.step(obs, act, gen(6)) if guidance is None else \
            compiled.sample_next(obs, act, guidance_weight=guidance, generator=gen(6))
        for e, c in zip(expected if isinstance(expected, tuple) else (expected,),
                        got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(c, e, **TOLERANCE)


def test_compiled_run_resumes_to_the_uninterrupted_result(tiny_random_dataset_path, tmp_path, monkeypatch):
    config = TrainConfig.from_dict({"run": {"steps": 30, "eval_every": 15, "eval_episodes": 1, "log_every": 10,
                                            "checkpoint_every": 10, "final_eval_window": 1, "compile": "on"},
                                    "learner": {"hidden_dim": 16}})

    def inputs(out_dir):
        return RunInputs(method="iql", env="hopper", dataset="random", seed=0, out_dir=out_dir,
                         data_path=tiny_random_dataset_path, source="generated", device="cpu", progress=False)

    full = train(inputs(tmp_path / "full"), config)
    assert full["learner_config"]["compile"] == "on"

    original_update, calls = IQL.update, {"n": 0}

    def update_then_crash(self, batch):
        assert self.compiled
        calls["n"] += 1
        if calls["n"] == 25:  # after the checkpoint at step 20
            raise KeyboardInterrupt
        return original_update(self, batch)

    monkeypatch.setattr(IQL, "update", update_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(inputs(tmp_path / "resumed"), config)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(IQL, "update", original_update)
    train(inputs(tmp_path / "resumed"), config)

    assert_close_states(load_learner(tmp_path / "full" / "policy.pt", "cpu").state_dict(),
                        load_learner(tmp_path / "resumed" / "policy.pt", "cpu").state_dict())
    drop = {"wall_time_s", "updates_per_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_csv(tmp_path / "full" / "train.csv")] == \
           [{k: v for k, v in r.items() if k not in drop} for r in read_csv(tmp_path / "resumed" / "train.csv")]


# ------------------------------------------------------------------------------ the switch itself
def test_compile_modes_resolve_per_device_and_run_length(monkeypatch):
    assert resolve_compile("on", "cpu") and not resolve_compile("off", "cuda")
    assert resolve_compile(True, "cpu") and not resolve_compile(False, "cpu")  # YAML's on/off
    assert resolve_compile("auto", "cpu") == (AUTO_COMPILE["cpu"] is not None)
    monkeypatch.setitem(AUTO_COMPILE, "cpu", 50_000)
    assert resolve_compile("auto", "cpu", steps=1_000_000) and not resolve_compile("auto", "cpu", steps=3_000)
    assert should_compile("auto", "cpu")  # a learner on its own: length unknown
    assert run_compile(RunConfig(steps=3_000), torch.device("cpu")) == "off"
    assert run_compile(RunConfig(steps=1_000_000), torch.device("cpu")) == "on"
    with pytest.raises(ValueError, match="compile must be one of"):
        resolve_compile("fast", "cpu")
    with pytest.raises(ConfigError, match="run.compile.*not one of"):
        TrainConfig.from_dict({"run": {"compile": "fast"}})
    with pytest.raises(ConfigError, match="compile"):
        make_learner("iql", OBS_DIM, ACT_DIM, "cpu", overrides={"compile": "fast"})


def test_train_command_compile_flag_sets_run_compile(tmp_path):
    from adept.cli import build_parser
    from adept.commands.train import overrides
    from adept.runner import load_train_config

    for flag in ("on", "off", "auto"):
        args = build_parser().parse_args(["train", "--method", "iql", "--env", "hopper", "--dataset", "random",
                                          "--out-dir", str(tmp_path), "--compile", flag])
        assert load_train_config(None, overrides(args)).run.compile == flag
    assert load_train_config(None, []).run.compile == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--method", "iql", "--env", "hopper", "--dataset", "random",
                                   "--out-dir", str(tmp_path), "--compile", "fast"])
