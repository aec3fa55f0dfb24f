"""The speed machinery that needs no compiler: the stacked twin critics and the oneDNN CPU products
compute what the plain layers do, the runner's fused metric sums, several runs per GPU in the GPU
lock, the d3rlpy comparison's harness side and the cost estimate of a configured grid."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from adept.runner import _host_metrics, accumulate_metrics
from baselines import cpu_gemm
from baselines.common import CriticEnsemble, mlp

ROOT = Path(__file__).resolve().parents[1]
GPU_LOCK = ROOT / "workflow" / "scripts" / "gpu_lock.py"


@pytest.fixture(params=["onednn", "blas"])
def cpu_products(request, monkeypatch):
    """Both ways the CPU multiplies matrices (baselines/cpu_gemm.py), whatever this machine's CPU."""
    monkeypatch.setattr(cpu_gemm, "onednn_enabled", lambda: request.param == "onednn")
    return request.param


def grads(tensors):
    return [t.grad.clone() for t in tensors]


def test_critic_ensemble_equals_two_separate_mlps_with_the_same_weights(cpu_products):
    torch.manual_seed(0)
    obs_dim, act_dim, hidden, depth = 5, 3, 64, 2
    ensemble = CriticEnsemble(obs_dim, act_dim, hidden, depth, num_critics=2)
    separate = [nn.Sequential(nn.Linear(obs_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                              nn.Linear(hidden, 1)) for _ in range(2)]
    with torch.no_grad():  # EnsembleLinear stores (in, out) per member, nn.Linear (out, in)
        for i, net in enumerate(separate):
            for layer, linear in zip(ensemble.layers, [m for m in net if isinstance(m, nn.Linear)]):
                linear.weight.copy_(layer.weight[i].T)
                linear.bias.copy_(layer.bias[i, 0])
    obs, actions = torch.randn(256, obs_dim), torch.rand(256, act_dim) * 2 - 1
    q = ensemble(obs, actions)
    expected = torch.stack([net(torch.cat([obs, actions], -1)).squeeze(-1) for net in separate])
    assert q.shape == (2, 256)
    torch.testing.assert_close(q, expected, rtol=1e-5, atol=1e-6)

    weights = torch.randn(2, 256)
    (q * weights).sum().backward()
    (expected * weights).sum().backward()
    for i, net in enumerate(separate):
        for layer, linear in zip(ensemble.layers, [m for m in net if isinstance(m, nn.Linear)]):
            torch.testing.assert_close(layer.weight.grad[i], linear.weight.grad.T, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(layer.bias.grad[i, 0], linear.bias.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("out_features", [1, 64])
def test_onednn_products_equal_torch_linear_forward_and_backward(monkeypatch, out_features):
    monkeypatch.setattr(cpu_gemm, "onednn_enabled", lambda: True)
    torch.manual_seed(0)
    x = torch.randn(128, 40, requires_grad=True)
    layer = cpu_gemm.Linear(40, out_features)
    reference = nn.Linear(40, out_features)
    reference.load_state_dict(layer.state_dict())  # same parameters and state dict as nn.Linear
    y, y_ref = layer(x), reference(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    x_grad = torch.autograd.grad(y, [x, layer.weight, layer.bias], g)
    x_grad_ref = torch.autograd.grad(y_ref, [x, reference.weight, reference.bias], g)
    for got, expected in zip(x_grad, x_grad_ref):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    for shared in (True, False):  # the critics' layer: a shared input (first layer) or one per member
        inputs = (torch.randn(128, 40) if shared else torch.randn(2, 128, 40)).requires_grad_()
        weight = torch.randn(2, 40, out_features, requires_grad=True)
        bias = torch.randn(2, 1, out_features, requires_grad=True)
        out = cpu_gemm.ensemble_linear(inputs, weight, bias)
        expected = torch.matmul(inputs, weight) + bias if shared else torch.baddbmm(bias, inputs, weight)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(out)
        for got, want in zip(torch.autograd.grad(out, [inputs, weight, bias], g),
                             torch.autograd.grad(expected, [inputs, weight, bias], g)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_cpu_gemm_choice_comes_from_the_environment_and_bad_values_are_refused(monkeypatch):
    for value, expected in (("blas", False), ("onednn", torch.backends.mkldnn.is_available())):
        monkeypatch.setenv("ADEPT_CPU_GEMM", value)
        cpu_gemm.onednn_enabled.cache_clear()
        assert cpu_gemm.onednn_enabled() == expected
    monkeypatch.setenv("ADEPT_CPU_GEMM", "fast")
    cpu_gemm.onednn_enabled.cache_clear()
    with pytest.raises(ValueError, match="ADEPT_CPU_GEMM must be one of"):
        cpu_gemm.onednn_enabled()
    monkeypatch.delenv("ADEPT_CPU_GEMM")
    cpu_gemm.onednn_enabled.cache_clear()
    assert cpu_gemm.onednn_enabled() == (cpu_gemm._cpu_vendor() == "AuthenticAMD" and torch.backends.mkldnn.is_available())
    # mlp() keeps nn.Linear's parameter names, so checkpoints of either kind load into the other
    assert set(mlp(4, 2, 8, 2).state_dict()) == {f"{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


def test_metric_sums_match_a_plain_loop_and_keep_their_own_counts():
    steps = [{"loss": torch.tensor(1.0), "flag": torch.tensor(True)},
             {"loss": torch.tensor(2.0), "iw/ess": torch.tensor(0.5, dtype=torch.float64)},
             {"loss": torch.tensor(4.0), "flag": torch.tensor(False), "iw/ess": torch.tensor(0.25)}]
    sums, counts = {}, {}
    for metrics in steps:
        accumulate_metrics(sums, counts, metrics)
    assert counts == {"loss": 3, "flag": 2, "iw/ess": 2}
    assert all(value.dtype == torch.float32 for value in sums.values())
    assert _host_metrics(sums, counts) == pytest.approx({"loss": 7 / 3, "flag": 0.5, "iw/ess": 0.375})
    assert float(steps[0]["loss"]) == 1.0  # the step's own tensors are not modified


# --------------------------------------------------------------------------- several runs per GPU
def fake_gpus(folder: Path, count: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(count)))
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    return env


def locked(tmp_path: Path, env: dict, name: str, hold_s: float, runs_per_gpu: int) -> subprocess.Popen:
    command = f"echo $CUDA_VISIBLE_DEVICES > {tmp_path / name}; sleep {hold_s}"
    return subprocess.Popen([sys.executable, str(GPU_LOCK), "--gpus", "1", "--runs-per-gpu", str(runs_per_gpu),
                             "--lock-dir", str(tmp_path / "locks"), "--", "sh", "-c", command],
                            env=env, stderr=subprocess.PIPE, text=True)


def test_gpu_lock_hands_out_at_most_runs_per_gpu_slots_per_gpu(tmp_path):
    env = fake_gpus(tmp_path / "bin", count=2)
    holders = [locked(tmp_path, env, f"job{i}", hold_s=4, runs_per_gpu=2) for i in range(4)]
    deadline = time.monotonic() + 20
    while not all((tmp_path / f"job{i}").exists() for i in range(4)) and time.monotonic() < deadline:
        time.sleep(0.2)
    got = sorted((tmp_path / f"job{i}").read_text().strip() for i in range(4))
    assert got == ["0", "0", "1", "1"]  # all four run at once, two on each GPU
    waiting = locked(tmp_path, env, "job4", hold_s=0, runs_per_gpu=2)
    time.sleep(1.5)
    assert not (tmp_path / "job4").exists()  # a fifth job waits for a free slot
    for process in (*holders, waiting):
        assert process.wait(timeout=30) == 0
    assert (tmp_path / "job4").read_text().strip() in {"0", "1"}
    assert "2 run(s) per GPU" in waiting.stderr.read()


def test_gpu_lock_spreads_jobs_over_gpus_before_sharing_and_rejects_zero_slots(tmp_path):
    env = fake_gpus(tmp_path / "bin", count=2)
    first = locked(tmp_path, env, "a", hold_s=3, runs_per_gpu=3)
    time.sleep(1.0)
    second = locked(tmp_path, env, "b", hold_s=0, runs_per_gpu=3)
    assert second.wait(timeout=30) == 0 and first.wait(timeout=30) == 0
    assert {(tmp_path / n).read_text().strip() for n in "ab"} == {"0", "1"}  # not both on GPU 0
    bad = subprocess.run([sys.executable, str(GPU_LOCK), "--gpus", "1", "--runs-per-gpu", "0", "--", "true"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "--runs-per-gpu must be >= 1" in bad.stderr


def test_workflow_passes_runs_per_gpu_to_the_lock():
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "--runs-per-gpu {config['runs_per_gpu']}" in common
    schema = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert "runs_per_gpu:" in schema


# --------------------------------------------------------------------------- the d3rlpy comparison
def test_d3rlpy_comparison_harness_side_reports_rates_and_its_gemm_floor(tiny_random_dataset_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.vs_d3rlpy", "--worker", "--data",
                           str(tiny_random_dataset_path), "--steps", "20", "--warmup", "5", "--batch-size", "32"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["implementation"] == "harness" and result["updates_per_s"] > 0 and result["cpu_updates_per_s"] > 0
    roof = result["roofline"]
    # IQL's matrix products: V on s (forward, backward), V on (s, s'), two target and two online critics
    # (forward, backward), the actor (forward, backward); all of them take time, so 0 < share < 1
    assert roof["gemm_calls"] >= 25 and roof["gemm_flops"] > 0 and 0 < roof["gemm_share"] < 1


def test_d3rlpy_comparison_is_skipped_without_d3rlpy_and_names_a_wrong_python(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import benchmarks.vs_d3rlpy as vs

    settings = SimpleNamespace(steps=10, warmup=2, batch_size=16, d3rlpy_python=None)
    monkeypatch.setattr(vs.importlib.util, "find_spec", lambda name: None)
    assert "d3rlpy is not importable" in vs.iql_vs_d3rlpy(torch.device("cpu"), settings)["skipped"]
    settings.d3rlpy_python = str(tmp_path / "missing" / "python")
    with pytest.raises(ValueError, match="--d3rlpy-python .* does not exist"):
        vs.iql_vs_d3rlpy(torch.device("cpu"), settings)


# --------------------------------------------------------------------------- the cost estimate
DRY_RUN = """
[Tue Dec  1 22:28:09 2026]
rule method_config:
    output: results/configs/adept-sac.yaml
    jobid: 1
Shell command: (printf '%s' 'run:
  steps: 5000
  eval_every: 1000
  eval_episodes: 2
learner:
  hidden_dim: 32
world_model:
  is_batch_size: 64
adept:
  rollouts_per_epoch: 20
' > results/configs/adept-sac.yaml.tmp && mv results/configs/adept-sac.yaml.tmp results/configs/adept-sac.yaml) > logs/c.log 2>&1

[Tue Dec  1 22:28:09 2026]
rule world_model_config:
    output: results/world_models/wm-1/config.yaml
Shell command: (printf '%s' 'world_model:
  diffusion_steps: 5
  hidden_dim: 32
world_model_training:
  steps: 300
  log_every: 50
' > results/world_models/wm-1/config.yaml.tmp && mv results/world_models/wm-1/config.yaml.tmp results/world_models/wm-1/config.yaml) > logs/w.log 2>&1

[Tue Dec  1 22:28:09 2026]
rule train:
    jobid: 3
Shell command: python /x/gpu_lock.py --gpus 1 --runs-per-gpu 2 -- python -m adept train --method adept-sac --env hopper --dataset random --seed 0 --data d.hdf5 --source d4rl --config results/configs/adept-sac.yaml --world-model results/world_models/wm-1/hopper-random/seed0/model.pt --out-dir r --device auto > l.log 2>&1

[Tue Dec  1 22:28:09 2026]
rule world_model:
    jobid: 4
Shell command: python /x/gpu_lock.py --gpus 1 --runs-per-gpu 2 -- python -m adept world-model --data d.hdf5 --env hopper --dataset random --seed 0 --config results/world_models/wm-1/config.yaml --out m.pt --device auto > l.log 2>&1

[Tue Dec  1 22:28:09 2026]
rule table1:
    jobid: 5
Shell command: python -m adept.reporting table1 > l.log 2>&1
"""


def test_estimate_reads_jobs_steps_and_sizes_from_the_dry_run():
    from benchmarks.estimate import Row, jobs_of, parse_dry_run, wall_hours

    commands, files = parse_dry_run(DRY_RUN)
    assert files["results/configs/adept-sac.yaml"]["run"]["steps"] == 5000
    jobs, others = jobs_of(commands, files)
    assert others == {"table1": 1}
    train, world_model = sorted(jobs, key=lambda j: j.rule)
    assert (train.kind, train.stage, train.steps, train.evaluations, train.eval_episodes) == \
        ("train adept-sac", "training", 5000, 5, 2)
    assert train.measure["world_model"] == {"diffusion_steps": 5, "hidden_dim": 32, "is_batch_size": 64}
    assert train.measure["learner_overrides"] == {"hidden_dim": 32} and train.measure["what"] == "adept"
    assert (world_model.kind, world_model.steps) == ("world_model K=5", 300)

    rows = [Row("a", "models", jobs=4, steps=3600, rate=1.0), Row("b", "training", jobs=2, steps=7200, rate=2.0),
            Row("c", "training", jobs=9, steps=10, rate=None)]
    stages = wall_hours(rows, slots=2)
    assert stages["models"] == {"hours": 4.0, "wall_hours": 2.0}
    assert stages["training"] == {"hours": 2.0, "wall_hours": 1.0}  # the longest job (1 h) bounds it too


def test_estimate_of_the_test_config_prints_a_table_and_the_wall_time(tmp_path, monkeypatch, capsys):
    """A real dry run of config/test.yaml; the rates come from one fast stand-in so the test stays short."""
    import benchmarks.estimate as estimate

    measured = []

    def fake_measure(spec, device, dims, seconds, steps_hint):
        measured.append(spec["what"])
        return {"rate": 10.0, "warmup_s": 0.0} if spec["what"] != "unmeasured" else {"rate": None, "note": "none"}

    monkeypatch.setattr(estimate, "measure", fake_measure)
    monkeypatch.setattr(estimate, "evaluation_seconds", lambda episodes, device, hidden_dim=256: 0.5)
    out = tmp_path / "estimate.json"
    assert estimate.main(["--configfile", str(ROOT / "config" / "test.yaml"), "--device", "cpu", "--cores", "2",
                          "--seconds", "0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "job kind" in printed and "train adept-iql" in printed and "wall time on 2 CPU core(s)" in printed
    report = json.loads(out.read_text())
    kinds = {row["kind"]: row for row in report["rows"]}
    assert {"adept", "learner", "world_model"} <= set(measured)
    assert kinds["train iql"]["rate"] == 10.0 and kinds["train iql"]["jobs"] >= 1
    assert report["total_hours"] == pytest.approx(sum(r["hours"] for r in report["rows"] if r["hours"] is not None))
    assert report["wall_hours"] > 0


def test_estimate_measures_real_rates_of_a_learner_and_a_world_model():
    from benchmarks.estimate import measure

    learner = measure({"what": "learner", "learner": "iql", "learner_overrides": {"hidden_dim": 16}, "batch_size": 32,
                       "compile": "off"}, torch.device("cpu"), (11, 3), 0.2, 1000)
    model = measure({"what": "world_model", "world_model": {"hidden_dim": 16, "depth": 1, "batch_size": 32}},
                    torch.device("cpu"), (11, 3), 0.2, 1000)
    assert learner["rate"] > 10 and model["rate"] > 10
    assert learner["compile"] == model["compile"] == "off"


def test_sharing_worker_counts_updates_in_the_common_window():
    from benchmarks.estimate import sharing_worker

    start = time.time() + 2.0
    rate = sharing_worker(torch.device("cpu"), seconds=1.0, start_at=start)
    assert time.time() >= start + 1.0  # it waited for the window and ran through it
    assert 1 < rate < 10_000
