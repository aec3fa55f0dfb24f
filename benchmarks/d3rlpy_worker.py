"""d3rlpy's IQL on a D4RL-layout hdf5 file, timed: the other side of `benchmarks.vs_d3rlpy`.

Runs in d3rlpy's own environment, so it imports nothing from the harness (only numpy, h5py, torch
and d3rlpy):

    /tmp/d3rlpy-venv/bin/python benchmarks/d3rlpy_worker.py --data halfcheetah-random.hdf5 --steps 4000

The settings mirror the harness's IQL (baselines/iql.py): batch 256, two 256-unit hidden layers
(d3rlpy's default encoder), expectile 0.7, beta 3, tau 0.005, states standardized and rewards scaled
by 1000 / (max - min episode return). Training goes through d3rlpy's own loop (`fit`: sample a batch
from its replay buffer, update, record the losses), first `--warmup` steps untimed, then `--steps`
timed. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

PROCESS_START = time.perf_counter()

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="hdf5 file in the D4RL layout")
    parser.add_argument("--steps", type=int, default=4000, help="timed updates")
    parser.add_argument("--warmup", type=int, default=200, help="untimed updates first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import d3rlpy
    from d3rlpy.logging import NoopAdapterFactory
    from d3rlpy.preprocessing import ReturnBasedRewardScaler, StandardObservationScaler

    d3rlpy.seed(args.seed)
    with h5py.File(args.data, "r") as f:
        arrays = {key: f[key][:] for key in ("observations", "actions", "rewards", "terminals", "timeouts")}
    dataset = d3rlpy.dataset.MDPDataset(arrays["observations"], arrays["actions"], arrays["rewards"],
                                        arrays["terminals"], timeouts=arrays["timeouts"])
    iql = d3rlpy.algos.IQLConfig(batch_size=args.batch_size, expectile=0.7, weight_temp=3.0, tau=0.005,
                                 observation_scaler=StandardObservationScaler(),
                                 reward_scaler=ReturnBasedRewardScaler(multiplier=1000.0)).create(device="cpu:0")

    def fit(steps: int) -> None:
        iql.fit(dataset, n_steps=steps, n_steps_per_epoch=steps, logger_adapter=NoopAdapterFactory(),
                show_progress=False, save_interval=2**31)

    setup_s = time.perf_counter() - PROCESS_START
    fit(args.warmup)  # builds the networks and fits the scalers (once)
    wall, cpu = time.perf_counter(), time.process_time()
    fit(args.steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    from roofline import step_roofline  # benchmarks/roofline.py, next to this file (torch only)

    roofline = step_roofline(lambda: iql.update(dataset.sample_transition_batch(args.batch_size)), cpu / args.steps)
    print(json.dumps({"implementation": f"d3rlpy {d3rlpy.__version__}", "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "updates_per_s": args.steps / wall,
                      "cpu_updates_per_s": args.steps / cpu, "timed_updates": args.steps, "setup_s": setup_s,
                      "roofline": roofline,
                      "process_s": time.perf_counter() - PROCESS_START}))


if __name__ == "__main__":
    main()
