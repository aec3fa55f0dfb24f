"""Faults and bad input as a new user meets them (docs/reliability.md maps each promise to a test here).

- CASES: bad files, configs and command lines. Each ends in exactly one line
  `error: <what> (<file>): <how to fix>` with exit status 2, no traceback, no advice to load with
  weights_only=False, and every file under the case's folder byte-identical afterwards. To cover a
  new fault, add a Case(name, argv, message, setup) row.
- Silent wrong results that used to happen: NaN in checkpoints, two runs in one folder, a completed
  run retrained on rerun (from the CLI, or after Snakemake removed final.json), misspelled stage keys.
- Kills and a full disk: SIGKILL mid-run and mid-world-model fit, and ENOSPC on a small tmpfs, each
  followed by a rerun that ends byte-identical to an uninterrupted run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import adept.runner
from adept.cli import Parser, build_parser, main
from adept.config import from_dict
from adept.data import load_file
from adept.errors import DivergenceError
from adept.locks import OutputLocked, run_folder_lock
from adept.outputs import non_finite_entries, read_csv
from adept.world_model import WorldModel, WorldModelConfig
from adept.world_model_training import train_world_model
from adept.behavior_policy_training import fit_behavior_policy
from baselines import save_learner
from baselines.iql import IQL

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--set", "run.steps=40", "--set", "run.eval_every=20", "--set", "run.eval_episodes=1",
            "--set", "run.log_every=10", "--set", "run.checkpoint_every=20", "--set", "learner.hidden_dim=32"]
TINY_WM = WorldModelConfig(diffusion_steps=2, hidden_dim=16, depth=1, reward_hidden_dim=16, reward_depth=1,
                           time_embedding_dim=8, batch_size=32, is_batch_size=32)
TINY_WM_FLAGS = [f"--set=world_model.{key}={value}" for key, value in
                 dict(diffusion_steps=2, hidden_dim=16, depth=1, reward_hidden_dim=16, reward_depth=1,
                      time_embedding_dim=8, batch_size=32).items()]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                                                 f"{os.environ.get('PATH', '')}"}


def train_argv(data: Path, out: Path, *extra: str, method: str = "iql", env: str = "hopper", seed: int = 0):
    return ["train", "--method", method, "--env", env, "--dataset", "random", "--data", str(data),
            "--source", "generated", "--seed", str(seed), "--out-dir", str(out), "--device", "cpu", "--quiet",
            *TINY_RUN, *extra]


def world_model_argv(data: Path, out: Path, *extra: str):
    return ["world-model", "--data", str(data), "--env", "hopper", "--out", str(out), "--steps", "4",
            "--log-every", "2", "--checkpoint-every", "2", "--device", "cpu", "--quiet", *TINY_WM_FLAGS, *extra]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (a changed, added, removed or half-written file shows)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return int(exit_.code)


def adept_process(*argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adept", *argv, "--threads", "1"], env=SUBPROCESS_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def run_adept(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    process = adept_process(*argv)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def kill_when_exists(process: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    """SIGKILL `process` as soon as `path` exists (a checkpoint: it appears complete, by rename)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the process ended (status {process.returncode}) before {path} appeared: "
                        f"{process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


HOLD_LOCK = ("import sys, time\nfrom adept.locks import run_folder_lock\n"
             "with run_folder_lock(sys.argv[1], 'held by the test', 'wait'):\n"
             "    print('locked', flush=True)\n    time.sleep(120)\n")


def hold_lock(folder: Path) -> subprocess.Popen:
    """A live process holding the run-folder lock of `folder` (returns once it holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], env=SUBPROCESS_ENV,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("wall_time_s", "updates_per_s", "steps_per_s")}
            for row in rows]


# ------------------------------------------------------------------------------------------ artefacts

@pytest.fixture(scope="module")
def artefacts(tiny_random_dataset_path, tmp_path_factory) -> SimpleNamespace:
    """Real harness files: a world model (+ report), pi_D, a completed run, models of other envs."""
    root = tmp_path_factory.mktemp("artefacts")
    dataset = load_file(tiny_random_dataset_path, env="hopper")
    world_model = root / "wm" / "model.pt"
    train_world_model(dataset, TINY_WM, steps=4, device="cpu", seed=0, out_path=world_model, log_every=2,
                      checkpoint_every=4, eval_size=64, progress=False)
    pi_d = root / "pi_D.pt"
    learner, _ = fit_behavior_policy(dataset.observations, dataset.actions, config={"hidden_dim": 16},
                                     max_steps=10, eval_every=5)
    save_learner(pi_d, learner, trained_on={"env": "hopper", "dataset": "random", "source": "generated"})
    run = root / "run"
    assert main(train_argv(tiny_random_dataset_path, run)) == 0
    others = {}
    for env in ("walker2d", "halfcheetah"):  # both have obs_dim 17, act_dim 6
        model = WorldModel(17, 6, TINY_WM)
        model.trained_on = {"env": env, "dataset": "random", "source": "generated"}
        others[env] = root / f"{env}-model.pt"
        model.save(others[env])
    return SimpleNamespace(data=tiny_random_dataset_path, world_model=world_model, pi_d=pi_d, run=run,
                           walker_model=others["walker2d"], cheetah_model=others["halfcheetah"])


@pytest.fixture
def ws(artefacts, tmp_path) -> SimpleNamespace:
    """A case's folder: copies of the artefacts (so the check sees any change to them) and room for outputs."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("data", "pi_d", "walker_model", "cheetah_model"):
        shutil.copy(getattr(artefacts, name), inputs)
    shutil.copytree(artefacts.world_model.parent, inputs / "wm")
    shutil.copytree(artefacts.run, tmp_path / "run")
    space = SimpleNamespace(root=tmp_path, data=inputs / artefacts.data.name, wm=inputs / "wm" / "model.pt",
                            pi_d=inputs / "pi_D.pt", walker_model=inputs / "walker2d-model.pt",
                            cheetah_model=inputs / "halfcheetah-model.pt", run=tmp_path / "run",
                            policy=tmp_path / "run" / "policy.pt", out=tmp_path / "out", bad=tmp_path / "bad.pt",
                            cleanup=[])
    yield space
    for step in space.cleanup:
        step()


# ---------------------------------------------------------------------------------- the fault table

@dataclass
class Case:
    name: str
    argv: Callable[[SimpleNamespace], list[str]]   # the command line after `adept`
    message: str                                    # regex the one-line error must match
    setup: Callable[[SimpleNamespace], None] | None = None
    code: int = 2


def write(name: str, content: str | bytes) -> Callable[[SimpleNamespace], None]:
    def setup(ws):
        path = ws.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def truncated_copy(source: str, name: str) -> Callable[[SimpleNamespace], None]:
    def setup(ws):
        data = getattr(ws, source).read_bytes()
        (ws.root / name).write_bytes(data[: len(data) // 2])
    return setup


def python_objects(ws):
    torch.save({"format": "adept-world-model/1", "model": argparse.Namespace(a=1)}, ws.bad)


def locked(folder: str) -> Callable[[SimpleNamespace], None]:
    def setup(ws):
        holder = hold_lock(getattr(ws, folder))
        ws.cleanup.append(lambda: (holder.kill(), holder.wait()))
    return setup


def read_only_out(ws):
    ws.out.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ws.out)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({result.stderr.strip()}); needs root")
    ws.cleanup.append(lambda: subprocess.run(["umount", "-l", str(ws.out)], check=True))


def partial_run_with_corrupt_checkpoint(ws):
    ws.out.mkdir()
    shutil.copy(ws.run / "eval.csv", ws.out / "eval.csv")
    (ws.out / "checkpoint.pt").write_text("not a checkpoint")


def diff_iql(ws, model, *extra):
    return train_argv(ws.data, ws.out, "--world-model", str(model), *extra, method="diff-iql")


def adept_iql(ws, policy, env="hopper", model=None):
    return train_argv(ws.data, ws.out, "--world-model", str(model or ws.wm), "--behavior-policy", str(policy),
                      method="adept-iql", env=env)


CASES = [
    # ---- files: world model, pi_D, policy, checkpoints, datasets
    Case("world-model-not-a-torch-file", lambda ws: diff_iql(ws, ws.bad),
         r"not a world model saved by WorldModel\.save: not a PyTorch file \(.*bad\.pt\): pass a model written by",
         write("bad.pt", "this is not a model\n")),
    Case("world-model-truncated", lambda ws: diff_iql(ws, ws.bad), r"truncated or corrupt \(.*bad\.pt\)",
         truncated_copy("wm", "bad.pt")),
    Case("world-model-empty", lambda ws: diff_iql(ws, ws.bad), r"the file is empty \(0 bytes\) \(.*bad\.pt\)",
         write("bad.pt", b"")),
    Case("world-model-holds-python-objects", lambda ws: diff_iql(ws, ws.bad),
         r"holds Python objects that no harness file holds \(.*bad\.pt\)", python_objects),
    Case("world-model-is-a-policy", lambda ws: diff_iql(ws, ws.policy),
         r"not a world model .*its format tag is 'adept-learner/1'.* \(.*run/policy\.pt\)"),
    Case("world-model-of-other-dimensions", lambda ws: diff_iql(ws, ws.walker_model),
         r"world model was trained on walker2d, not on this run's env hopper \(.*walker2d-model\.pt\)"),
    Case("world-model-of-other-env-same-dimensions",
         lambda ws: train_argv(ws.data, ws.out, "--world-model", str(ws.cheetah_model), method="diff-iql",
                               env="walker2d"),
         r"world model was trained on halfcheetah, not on this run's env walker2d \(.*halfcheetah-model\.pt\)"),
    Case("pi-d-not-a-torch-file", lambda ws: adept_iql(ws, ws.data),
         r"not a learner saved by baselines\.save_learner: not a PyTorch file \(.*\.hdf5\)"),
    Case("pi-d-of-another-env", lambda ws: adept_iql(ws, ws.pi_d, env="walker2d", model=ws.walker_model),
         r"behaviour policy pi_D was trained on hopper, not on this run's env walker2d \(.*pi_D\.pt\): pass a pi_D "
         r"fitted on walker2d"),
    Case("policy-of-another-env", lambda ws: ["evaluate", "--env", "walker2d", "--policy", str(ws.policy)],
         r"learner was trained on hopper, not on this run's env walker2d \(.*policy\.pt\)"),
    Case("policy-truncated", lambda ws: ["evaluate", "--env", "hopper", "--policy", str(ws.bad)],
         r"not a readable learner saved by baselines\.save_learner: the file is truncated or corrupt",
         truncated_copy("policy", "bad.pt")),
    Case("checkpoint-corrupt", lambda ws: train_argv(ws.data, ws.out),
         r"not a training checkpoint written by `adept train`: not a PyTorch file \(.*checkpoint\.pt\): delete it",
         partial_run_with_corrupt_checkpoint),
    Case("world-model-checkpoint-corrupt", lambda ws: world_model_argv(ws.data, ws.root / "fit" / "model.pt"),
         r"not a world-model training checkpoint: not a PyTorch file \(.*model\.ckpt\)",
         write("fit/model.ckpt", "garbage")),
    Case("dataset-corrupt", lambda ws: train_argv(ws.bad, ws.out), r"not a readable HDF5 file",
         write("bad.pt", "not hdf5")),
    Case("dataset-of-another-env", lambda ws: train_argv(ws.data, ws.out, env="walker2d"),
         r"observations has shape \(5000, 11\), expected \(5000, 17\)"),
    # ---- configs
    Case("config-malformed-yaml", lambda ws: train_argv(ws.data, ws.out, "--config", str(ws.root / "c.yaml")),
         r"config file is not valid YAML \(.*c\.yaml\): .* at line 2, column 1", write("c.yaml", "run: [1\n")),
    Case("config-section-of-wrong-type", lambda ws: train_argv(ws.data, ws.out, "--config", str(ws.root / "c.yaml")),
         r"run: expected a mapping of RunConfig fields .*got 5 \(.*c\.yaml\)", write("c.yaml", "run: 5\n")),
    Case("config-not-a-mapping", lambda ws: train_argv(ws.data, ws.out, "--config", str(ws.root / "c.yaml")),
         r"must contain a mapping at the top level", write("c.yaml", "- 1\n- 2\n")),
    Case("config-unknown-section", lambda ws: train_argv(ws.data, ws.out, "--config", str(ws.root / "c.yaml")),
         r"unknown config section\(s\) \['runn'\]", write("c.yaml", "runn: {steps: 3}\n")),
    Case("config-misspelled-key", lambda ws: train_argv(ws.data, ws.out, "--config", str(ws.root / "c.yaml")),
         r"run: unknown key\(s\) \['stepz'\]; valid keys are \[.*'steps'.*\] \(.*c\.yaml\)",
         write("c.yaml", "run: {stepz: 3}\n")),
    Case("override-malformed-yaml", lambda ws: train_argv(ws.data, ws.out, "--set", "run.steps=[1"),
         r"override 'run.steps=\[1': the value is not valid YAML"),
    Case("world-model-config-of-wrong-type",
         lambda ws: world_model_argv(ws.data, ws.out / "model.pt", "--config", str(ws.root / "c.yaml")),
         r"world_model: expected a mapping of WorldModelConfig fields .*\(.*c\.yaml\)",
         write("c.yaml", "world_model: [1, 2]\n")),
    # ---- command lines
    Case("abbreviated-option-world-model", lambda ws: world_model_argv(ws.data, ws.out / "model.pt", "--step", "9"),
         r"unrecognized arguments: --step 9 \(adept world-model\): see `adept world-model --help`"),
    Case("abbreviated-option-train", lambda ws: train_argv(ws.data, ws.out, "--se", "1"),
         r"unrecognized arguments: --se 1 \(adept train\)"),
    Case("unknown-method", lambda ws: train_argv(ws.data, ws.out, method="ppo"), r"unknown method 'ppo'"),
    Case("threads-invalid", lambda ws: train_argv(ws.data, ws.out, "--threads", "0"), r"--threads must be >= 1"),
    # ---- output folders
    Case("out-dir-is-a-file", lambda ws: train_argv(ws.data, ws.data), r"a file is in the way \(.*\.hdf5"),
    Case("out-dir-under-a-file", lambda ws: train_argv(ws.data, ws.data / "run"),
         r"a parent of the path is a file, not a folder \(.*\.hdf5/run"),
    Case("out-dir-read-only", lambda ws: train_argv(ws.data, ws.out / "run"),
         r"read-only file system \(.*out/run.*\): choose an output folder on a writable file system", read_only_out),
    Case("completed-run-with-another-config", lambda ws: train_argv(ws.data, ws.run, "--set", "run.steps=60"),
         r"completed run with another config \(run\.steps: 40 -> 60\) \(.*run/final\.json\): pass --restart"),
    Case("run-folder-in-use", lambda ws: train_argv(ws.data, ws.run, "--restart"),
         r"run folder .*run is in use by pid \d+ on host .* \(.*run/\.lock\): wait for that run", locked("run")),
    # ---- training itself
    Case("training-diverges", lambda ws: train_argv(ws.data, ws.out, "--set", "learner.critic_lr=1e10"),
         r"training diverged: non-finite values at step 10: .*critic_loss=nan.* \(.*out\): no checkpoint exists "
         r"yet \(the first is written at step 20\), so nothing was kept"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_gives_one_line_error_and_changes_nothing(case, ws, capsys):
    if case.setup is not None:
        case.setup(ws)
    before = snapshot(ws.root)
    capsys.readouterr()
    code = run_main(case.argv(ws))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == case.code, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(case.message, errors[0]), errors[0]
    assert "weights_only" not in err
    assert snapshot(ws.root) == before  # nothing written, changed, removed or left half-written


def test_debug_shows_the_traceback(ws, monkeypatch):
    argv = train_argv(ws.data, ws.out, "--config", str(ws.root / "missing.yaml"))
    assert run_main(argv) == 2
    with pytest.raises(FileNotFoundError):
        main([*argv, "--debug"])
    monkeypatch.setenv("ADEPT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(argv)


def test_no_parser_accepts_abbreviations():
    parsers, seen = [build_parser()], 0
    while parsers:
        parser = parsers.pop()
        assert isinstance(parser, Parser) and parser.allow_abbrev is False, parser.prog
        seen += 1
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    assert seen >= 12  # adept, its commands and their subcommands
    for script in ("workflow/scripts/gpu_lock.py", "workflow/scripts/random_baseline.py",
                   "benchmarks/throughput.py", "experiments/guidance_sweep.py", "adept/reporting/__main__.py"):
        assert "allow_abbrev=False" in (ROOT / script).read_text(), script


# ---------------------------------------------------------------------------------- NaN never saved

def poison_after(calls: int, monkeypatch):
    """IQL.update that, from update `calls` on, turns the actor's parameters into NaN (a divergence)."""
    original, count = IQL.update, {"n": 0}

    def update(self, batch):
        count["n"] += 1
        if count["n"] >= calls:
            with torch.no_grad():
                next(self.actor.parameters()).fill_(float("nan"))
        return original(self, batch)

    monkeypatch.setattr(IQL, "update", update)


def test_checkpoint_is_never_written_with_non_finite_values(tiny_random_dataset_path, tmp_path, monkeypatch):
    """checkpoint_every (10) < log_every (50): the finiteness check used to come only with the log row,
    so checkpoints at steps 20, 30, 40 held NaN and the "last good" one diverged again on resume."""
    poison_after(15, monkeypatch)
    config = adept.runner.TrainConfig.from_dict(
        {"run": {"steps": 60, "eval_every": 60, "eval_episodes": 1, "log_every": 50, "checkpoint_every": 10},
         "learner": {"hidden_dim": 32}})
    inputs = adept.runner.RunInputs(method="iql", env="hopper", dataset="random", seed=0, out_dir=tmp_path,
                                    data_path=tiny_random_dataset_path, source="generated", device="cpu",
                                    progress=False)
    with pytest.raises(DivergenceError) as error:
        adept.runner.train(inputs, config)
    message = str(error.value)
    assert "non-finite values at step 20" in message and "actor" in message
    assert "the last good checkpoint (step 10) was kept" in message and "checkpoint.pt" in message
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 10 and non_finite_entries(checkpoint) == []


def test_world_model_checkpoint_is_never_written_with_non_finite_values(tiny_random_dataset_path, tmp_path,
                                                                        monkeypatch):
    dataset = load_file(tiny_random_dataset_path, env="hopper")
    original, count = WorldModel.update, {"n": 0}

    def update(self, batch, *args, **kwargs):
        count["n"] += 1
        if count["n"] >= 5:
            with torch.no_grad():
                next(self.denoiser.parameters()).fill_(float("nan"))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(WorldModel, "update", update)
    out = tmp_path / "model.pt"
    with pytest.raises(DivergenceError, match=r"non-finite values at step 6 in model\.denoiser.*the last good "
                                              r"checkpoint \(step 4\) was kept"):
        train_world_model(dataset, TINY_WM, steps=20, device="cpu", seed=0, out_path=out, log_every=10,
                          checkpoint_every=2, eval_size=64, progress=False)
    checkpoint = torch.load(out.with_suffix(".ckpt"), weights_only=True)
    assert checkpoint["state"]["step"] == 4 and non_finite_entries(checkpoint) == []
    assert not out.exists()


# ---------------------------------------------------------------------------------- completed runs

def test_rerunning_a_completed_run_does_nothing(ws, caplog, monkeypatch):
    before = snapshot(ws.run)
    monkeypatch.setattr(adept.runner, "_train", lambda *a: pytest.fail("a completed run was trained again"))
    with caplog.at_level("WARNING", logger="adept.runner"):
        assert run_main(train_argv(ws.data, ws.run)) == 0
    assert snapshot(ws.run) == before
    assert "is complete" in caplog.text and "--restart trains again" in caplog.text


def test_restart_trains_a_completed_run_again(ws):
    final_before = json.loads((ws.run / "final.json").read_text())
    eval_mtime = (ws.run / "eval.csv").stat().st_mtime_ns
    assert run_main(train_argv(ws.data, ws.run, "--restart")) == 0
    final = json.loads((ws.run / "final.json").read_text())
    assert (ws.run / "eval.csv").stat().st_mtime_ns != eval_mtime  # trained again, to the same result
    assert final["final_score"] == final_before["final_score"] and final["policy_sha256"] == final_before["policy_sha256"]


def test_finished_run_whose_final_json_snakemake_removed_is_restored_without_training(ws, monkeypatch):
    """Snakemake removes the outputs of a job it marks incomplete (e.g. SIGINT while the job finished);
    the rerun restores final.json from completed.json in seconds instead of training from scratch."""
    final_text = (ws.run / "final.json").read_text()
    (ws.run / "final.json").unlink()
    before = snapshot(ws.run)
    monkeypatch.setattr(adept.runner, "_train", lambda *a: pytest.fail("a finished run was trained again"))
    start = time.perf_counter()
    assert run_main(train_argv(ws.data, ws.run)) == 0
    assert time.perf_counter() - start < 10
    assert (ws.run / "final.json").read_text() == final_text
    assert snapshot(ws.run) == {**before, "final.json": hashlib.sha256(final_text.encode()).hexdigest()}


def test_removed_final_json_with_changed_inputs_trains_again(ws, tmp_path):
    """A rerun Snakemake asks for because an input changed must not be answered from the old record."""
    from adept.data import generate

    (ws.run / "final.json").unlink()
    other = generate("hopper", "random", seed=1, size=5000, out=tmp_path / "other.hdf5", progress=False)
    shutil.copy(other, ws.data)
    old = json.loads((ws.run / "completed.json").read_text())
    assert run_main(train_argv(ws.data, ws.run)) == 0
    new = json.loads((ws.run / "final.json").read_text())
    assert new["inputs_sha256"]["data"] != old["inputs_sha256"]["data"]
    assert (ws.run / "completed.json").read_text() == (ws.run / "final.json").read_text()


# ------------------------------------------------------------------------------------- run folder locks

def test_two_runs_in_one_folder_second_fails_at_once_naming_the_first(tiny_random_dataset_path, tmp_path, capsys):
    """Two seeds launched on one --out-dir used to both exit 0, every file the second seed's."""
    out = tmp_path / "run"
    longer = ("--set", "run.steps=800", "--set", "run.eval_every=400")
    first = adept_process(*train_argv(tiny_random_dataset_path, out, *longer, seed=0))
    deadline = time.monotonic() + 120
    while not (out / ".lock").is_file() or not (out / ".lock").read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.01)
    capsys.readouterr()
    start = time.perf_counter()
    assert run_main(train_argv(tiny_random_dataset_path, out, *longer, seed=1)) == 2
    assert time.perf_counter() - start < 5 and first.poll() is None  # at once, while the first still runs
    error = capsys.readouterr().err
    assert re.fullmatch(rf"error: run folder .*run is in use by pid {first.pid} on host \S+ since .* running "
                        rf"`.*adept train .*--seed 0 .*` \(.*run/\.lock\): wait for that run to finish \(or stop "
                        rf"it\), or choose another --out-dir\n", error), error
    assert first.wait(timeout=300) == 0, first.stderr.read()
    final = json.loads((out / "final.json").read_text())
    assert final["seed"] == 0 and final["steps"] == 800
    assert not (out / ".lock").exists()  # released (and removed) on exit


def test_stale_lock_of_a_killed_process_does_not_block(tmp_path):
    holder = hold_lock(tmp_path)
    with pytest.raises(OutputLocked, match=rf"in use by pid {holder.pid}"):
        with run_folder_lock(tmp_path, "folder", "wait"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".lock").is_file()  # the dead holder's file is still there, and holds no lock
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # its interrupted write
    with run_folder_lock(tmp_path, "folder", "wait"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        assert not (tmp_path / ".checkpoint.pt.abc123.tmp").exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- kills, full disk

def test_kill_9_mid_run_resumes_byte_identical(tiny_random_dataset_path, tmp_path):
    argv = lambda out: train_argv(tiny_random_dataset_path, out, "--set", "run.steps=400",  # noqa: E731
                                  "--set", "run.checkpoint_every=40", "--set", "run.eval_every=200")
    assert run_main(argv(tmp_path / "reference")) == 0  # in this process: the same code, one thread
    out = tmp_path / "killed"
    kill_when_exists(adept_process(*argv(out)), out / "checkpoint.pt")
    assert not (out / "final.json").exists() and (out / ".lock").exists()
    resumed = run_adept(*argv(out))
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "policy.pt").read_bytes() == (tmp_path / "reference" / "policy.pt").read_bytes()
    for name in ("eval.csv", "train.csv"):
        assert without_timing(read_csv(out / name)) == without_timing(read_csv(tmp_path / "reference" / name))
    assert not any(p.name.endswith(".tmp") or p.name == ".lock" for p in out.iterdir())


def test_kill_9_mid_world_model_fit_resumes_byte_identical(tiny_random_dataset_path, tmp_path):
    argv = lambda out: [*world_model_argv(tiny_random_dataset_path, out),  # noqa: E731
                        "--steps", "600", "--log-every", "60", "--checkpoint-every", "20"]
    assert run_main(argv(tmp_path / "reference" / "model.pt")) == 0
    out = tmp_path / "killed" / "model.pt"
    kill_when_exists(adept_process(*argv(out)), out.with_suffix(".ckpt"))
    assert not out.exists()
    resumed = run_adept(*argv(out))
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == (tmp_path / "reference" / "model.pt").read_bytes()
    assert without_timing(read_csv(out.with_suffix(".csv"))) == \
        without_timing(read_csv(tmp_path / "reference" / "model.csv"))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs to fill up (needs root; skipped with the reason otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({result.stderr.strip() or 'mount failed'}); needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(path: Path) -> None:
    """Write `path` until the file system has no block left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def test_full_disk_keeps_the_last_checkpoint_and_resumes_after_space_is_freed(ws, small_disk, monkeypatch, capsys):
    out = small_disk / "run"
    filler = small_disk / "filler"
    real_save, saves = adept.runner.atomic_torch_save, []

    def save_then_fill_disk(obj, path):  # the disk fills up right after the first checkpoint
        real_save(obj, path)
        saves.append(path)
        fill(filler)

    monkeypatch.setattr(adept.runner, "atomic_torch_save", save_then_fill_disk)
    capsys.readouterr()
    assert run_main(train_argv(ws.data, out)) == 2
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(r"error: disk full while writing (train|eval)\.csv \(.*disk/run\): free space on that file "
                        r"system and rerun the same command: the previous (train|eval)\.csv is intact \(a training run "
                        r"resumes from its last checkpoint\)", error), error
    assert len(saves) == 1 and torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 20
    assert [r["step"] for r in read_csv(out / "train.csv")] == [10, 20]  # intact, not half-written
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())

    filler.unlink()
    monkeypatch.setattr(adept.runner, "atomic_torch_save", real_save)
    assert run_main(train_argv(ws.data, out)) == 0
    assert (out / "policy.pt").read_bytes() == (ws.run / "policy.pt").read_bytes()  # as if never interrupted
    assert without_timing(read_csv(out / "eval.csv")) == without_timing(read_csv(ws.run / "eval.csv"))


# ------------------------------------------------------------------------------------------- workflow

def snakemake_dry_run(tmp_path: Path, overlay: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "overlay.yaml"
    path.write_text(json.dumps(overlay))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                           "-n", "--configfile", str(path)], capture_output=True, text=True, env=SUBPROCESS_ENV,
                          timeout=300)


@pytest.mark.parametrize("overlay, message", [
    ({"world_model_training": {"step": 100}}, r"'step' was unexpected(.|\n)*'steps'"),
    ({"table1": {"methods": ["iql"]}, "figure3": {"methods": []}, "table4": {"variants": []},
      "learners": {"cql": {"alphaa": 1.0}}},  # no configured method uses cql: checked all the same
     r"config section learners\.cql is invalid: learner \(cql\): unknown key\(s\) \['alphaa'\]; valid keys are \[.*'cql_alpha'"),
], ids=["world_model_training", "unused-learner-section"])
def test_misspelled_stage_key_fails_the_dry_run(tmp_path, overlay, message):
    result = snakemake_dry_run(tmp_path, overlay)
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_stage_options_in_the_schema_are_the_fits_settings():
    """The workflow writes the fit sections into the fits' settings files (--config): the schema (which
    rejects other keys) and the settings dataclasses must agree on them, and a misspelling is caught by both."""
    import yaml

    from adept.behavior_policy_training import BehaviorPolicyFitConfig
    from adept.ensemble_training import EnsembleFitConfig
    from adept.synther_training import SyntherFitConfig
    from adept.world_model_training import WorldModelFitConfig

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
    run_flags = {"no_resume"}  # how the rule runs the fit (--no-resume), not a setting
    for section, settings in (("world_model_training", WorldModelFitConfig), ("behavior_policy", BehaviorPolicyFitConfig),
                              ("ensemble_training", EnsembleFitConfig), ("synther_training", SyntherFitConfig)):
        keys = set(schema[section]["properties"]) - run_flags
        assert schema[section]["additionalProperties"] is False
        assert keys == set(settings.__dataclass_fields__), section
        with pytest.raises(ValueError, match=rf"{section}: unknown key\(s\) \['step'\]; valid keys are "
                                             rf"{re.escape(str(sorted(keys)))}"):
            from_dict(settings, {"step": 1}, section)
