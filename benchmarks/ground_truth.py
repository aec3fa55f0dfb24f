"""Cost of the simulator ground truth (adept.ground_truth) per evaluation: N = 256 held-out states,
H = 10, halfcheetah, paper-size networks (world model hidden 256 / depth 3 / K = 10, SAC hidden 256).

Registered into benchmarks.throughput (CASE_MODULES). The dataset is a small generated halfcheetah
`random` file (the cost does not depend on the data); the networks are untrained (their speed does
not depend on their weights, and halfcheetah never terminates, so every trajectory runs all H steps).
`simulator_s` is the part spent in MuJoCo alone (the same (N x (H + 2)) restores and steps).

    python -m benchmarks.throughput --cases ground_truth_n256_h10 --device cpu --threads 1 --steps 3
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from adept.data import generate, load_dataset
from adept.ground_truth import GroundTruth, simulator_states
from adept.world_model import WorldModel, WorldModelConfig
from baselines import make_learner
from benchmarks.timing import synchronize, time_steps


def ground_truth_case(num_states: int, horizon: int):
    def run(device: torch.device, settings: SimpleNamespace) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            path = generate("halfcheetah", "random", seed=0, size=5000, out=Path(folder) / "hc.hdf5", progress=False)
            dataset = load_dataset("halfcheetah", "random", "generated", path=path)
        world_model = WorldModel.from_dataset(dataset, WorldModelConfig(), device)
        policy = make_learner("sac", dataset.obs_dim, dataset.act_dim, device, overrides={"seed": 0})
        previous = make_learner("sac", dataset.obs_dim, dataset.act_dim, device, overrides={"seed": 1})
        truth = GroundTruth("halfcheetah", simulator_states(dataset), num_states=num_states, horizon=horizon,
                            gamma=0.99, tolerance=0.1)
        generator = torch.Generator(device=device).manual_seed(0)
        evaluations = max(1, getattr(settings, "steps", 3))
        timing = time_steps(lambda: truth.measure(world_model, policy, previous, generator), evaluations, device,
                            warmup=1)

        sim, rows = truth.simulator, np.arange(num_states)
        qpos, qvel, actions = (x[rows] for x in (truth.states.qpos, truth.states.qvel, truth.states.actions))
        synchronize(device)
        start = time.perf_counter()
        sim.observe(qpos, qvel)
        for _ in range(horizon + 1):
            sim.step(qpos, qvel, actions)
        simulator_s = time.perf_counter() - start
        return {"gt_evaluations_per_s": timing.per_second, "seconds_per_evaluation": 1.0 / timing.per_second,
                "simulator_s": simulator_s, "num_states": num_states, "horizon": horizon,
                "timed_evaluations": evaluations}

    return run


CASES = {"ground_truth_n256_h10": ground_truth_case(256, 10)}
