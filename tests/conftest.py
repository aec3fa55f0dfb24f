"""Shared fixtures: a tiny generated dataset and a writer for files in the exact D4RL v2 layout."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np
import pytest

from adept.data import generate
from adept.envs import get_env_spec

TINY_RANDOM_SIZE = 5_000


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Tiny networks train fastest on one thread (measured 2-30x faster than two on a shared 2-core
    machine, docs/notes/learners.md), and one thread keeps timings of CI runs stable."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def checkpoint_loads_as_on_cuda(monkeypatch) -> list:
    """torch.load of a run's `checkpoint.pt` as on a CUDA run, on a machine without one: unless the
    caller maps it to "cpu" explicitly, every tensor lands off the CPU ("meta" stands in for "cuda"),
    where torch.Generator.set_state, torch.set_rng_state and torch.cuda.set_rng_state refuse RNG
    states. Yields the map_location of each checkpoint load."""
    import torch

    real_load = torch.load
    asked: list = []

    def load(f, *args, map_location=None, **kwargs):
        if not isinstance(f, (str, Path)) or Path(f).name != "checkpoint.pt":
            return real_load(f, *args, map_location=map_location, **kwargs)
        asked.append(map_location)
        on_cpu = isinstance(map_location, str) and map_location == "cpu"
        return real_load(f, *args, map_location="cpu" if on_cpu else "meta", **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return asked


@pytest.fixture(scope="session")
def tiny_config_run(tmp_path_factory):
    """config/test.yaml end to end with Snakemake's local executor on 2 cores, once per session:
    (working directory, CompletedProcess). tests/test_workflow.py checks what it wrote;
    tests/test_slurm.py compares a run on SLURM with it."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    workdir = tmp_path_factory.mktemp("tiny_config_run")
    # Rules call `python`: make it this interpreter even when the virtualenv is not activated.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-d", str(workdir),
                             "--cores", "2", "--configfile", str(root / "config" / "test.yaml")],
                            capture_output=True, text=True, env=env, timeout=1800)
    return workdir, result


@pytest.fixture(scope="session")
def tiny_random_dataset_path(tmp_path_factory) -> Path:
    """A generated hopper `random` dataset of 5,000 transitions (seed 0), about 200 episodes."""
    out = tmp_path_factory.mktemp("generated") / f"hopper-random-seed0-n{TINY_RANDOM_SIZE}.hdf5"
    return generate("hopper", "random", seed=0, size=TINY_RANDOM_SIZE, out=out, progress=False)


def synthetic_d4rl_arrays(env: str, episode_lengths: Iterable[int] = (40, 25, 35), seed: int = 0,
                          terminal_episodes: Iterable[int] = (1,), max_episode_steps: int = 40) -> dict[str, np.ndarray]:
    """Random but consistent D4RL arrays: next_observations[t] == observations[t + 1] inside an episode.

    Episode i ends with a terminal if i is in `terminal_episodes`, with a timeout if it reaches
    `max_episode_steps`, and unflagged otherwise (a collection cut, as the last episode of a D4RL file).
    """
    spec = get_env_spec(env)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (
        "observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
        "infos/qpos", "infos/qvel", "infos/action_log_probs")}
    nq = spec.obs_dim // 2 + 1  # hopper 6/6, halfcheetah and walker2d 9/9: obs = qpos[1:] + qvel
    for i, length in enumerate(episode_lengths):
        states = rng.normal(size=(length + 1, spec.obs_dim)).astype(np.float32)
        terminals = np.zeros(length, bool)
        timeouts = np.zeros(length, bool)
        if i in set(terminal_episodes):
            terminals[-1] = True
        elif length == max_episode_steps:
            timeouts[-1] = True
        parts["observations"].append(states[:-1])
        parts["next_observations"].append(states[1:])
        parts["actions"].append(rng.uniform(-1, 1, (length, spec.act_dim)).astype(np.float32))
        parts["rewards"].append(rng.normal(size=length).astype(np.float32))
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        parts["infos/qpos"].append(rng.normal(size=(length, nq)).astype(np.float32))
        parts["infos/qvel"].append(rng.normal(size=(length, spec.obs_dim - nq + 1)).astype(np.float32))
        parts["infos/action_log_probs"].append(rng.normal(size=length).astype(np.float32))
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


@pytest.fixture(scope="session")
def d4rl_layout_file(tmp_path_factory) -> Callable[..., Path]:
    """Factory writing a file in the exact D4RL v2 layout, independently of adept's own writer.

    make(arrays=None, *, env="hopper", filename=None, overrides=None, drop=(), policy_metadata=True) -> Path
    - arrays: dict keyed as in the file ("observations", ..., "infos/qpos"); default synthetic_d4rl_arrays(env).
    - overrides / drop: replace or remove keys (to build broken files).
    - policy_metadata: add the metadata/* keys of D4RL's medium files (algorithm, iteration, policy weights).
    Datasets are gzip-compressed and strings stored as np.bytes_, as D4RL's collect_data.py writes them.
    """
    folder = tmp_path_factory.mktemp("d4rl")
    counter = iter(range(1_000_000))

    def make(arrays: Mapping[str, np.ndarray] | None = None, *, env: str = "hopper", filename: str | None = None,
             overrides: Mapping[str, np.ndarray] | None = None, drop: Iterable[str] = (),
             policy_metadata: bool = True) -> Path:
        spec = get_env_spec(env)
        data = dict(synthetic_d4rl_arrays(env) if arrays is None else arrays)
        data.update(overrides or {})
        for key in drop:
            data.pop(key)
        path = folder / str(next(counter)) / (filename or f"{env}_medium-v2.hdf5")
        path.parent.mkdir()
        with h5py.File(path, "w") as f:
            for key, value in data.items():
                f.create_dataset(key, data=value, compression="gzip")
            if policy_metadata:
                f["metadata/algorithm"] = np.bytes_("SAC")
                f["metadata/iteration"] = np.array([1000], dtype=np.int32)[0]
                f["metadata/policy/nonlinearity"] = np.bytes_("relu")
                f["metadata/policy/output_distribution"] = np.bytes_("tanh_gaussian")
                rng = np.random.default_rng(0)
                shapes = {"fc0": (256, spec.obs_dim), "fc1": (256, 256), "last_fc": (spec.act_dim, 256),
                          "last_fc_log_std": (spec.act_dim, 256)}
                for layer, shape in shapes.items():
                    f[f"metadata/policy/{layer}/weight"] = rng.normal(size=shape).astype(np.float32)
                    f[f"metadata/policy/{layer}/bias"] = np.zeros(shape[0], np.float32)
        return path

    return make
