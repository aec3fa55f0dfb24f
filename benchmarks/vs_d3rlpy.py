"""The harness's IQL against d3rlpy's IQL: same data, same machine, same sizes, alternating runs.

    python -m benchmarks.throughput --cases iql_vs_d3rlpy --device cpu --threads 1 --steps 4000 \
        --d3rlpy-python /tmp/d3rlpy-venv/bin/python [--data halfcheetah-random.hdf5]

d3rlpy is not a dependency of the harness (it pins its own torch and gymnasium); install it in an
environment of its own and pass that environment's python:

    python -m venv /tmp/d3rlpy-venv && /tmp/d3rlpy-venv/bin/pip install d3rlpy==2.8.1 "torch==<the harness's>"

(the second pin makes both sides use the same torch build; the harness may still send its products
to oneDNN instead of MKL, baselines/cpu_gemm.py, d3rlpy uses torch's defaults). Without
`--d3rlpy-python` the case uses the current interpreter if it can import d3rlpy, and is skipped
otherwise.

Each round runs one process per implementation, in alternating order (so both see the same drift of
a shared machine): each loads the D4RL-layout file, builds its IQL (batch 256, 2 x 256 hidden,
states standardized, IQL's reward scaling), runs `--warmup` untimed and `--steps` timed updates of
its own training loop, and reports wall-clock and CPU-time rates. The harness side is the runner's
loop (MixedSampler batch, `learner.update`, running metric sums on the device); the d3rlpy side is
`IQL.fit` (benchmarks/d3rlpy_worker.py). CPU time per update is the steadier figure on a machine
shared with other jobs; the headline is the median wall-clock rate. The data default to the
generated halfcheetah `random` dataset (1M transitions, made on first use, ~1.5 min).

The roofline part measures this CPU's single-thread GEMM rate at the update's shapes (torch's BLAS
and oneDNN; the peak is the faster) and, in each worker, the matrix products one update dispatches,
replayed alone (benchmarks/roofline.py): their FLOPs, the share of the update's CPU time they take,
and so how much faster any implementation of the same arithmetic could be.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

PROCESS_START = time.perf_counter()

WORKER = Path(__file__).with_name("d3rlpy_worker.py")
ROOT = Path(__file__).resolve().parent.parent


def default_data() -> Path:
    """The generated halfcheetah `random` dataset at its default path (made here if missing)."""
    from adept.data.generated import generate, generated_path

    path = generated_path("halfcheetah", "random", seed=0)
    if not path.is_file():
        print(f"iql_vs_d3rlpy: generating {path} (1M transitions, once)", file=sys.stderr, flush=True)
        generate("halfcheetah", "random", seed=0, out=path, progress=False)
    return path


def find_d3rlpy_python(given: str | None) -> str | None:
    if given:
        if not Path(given).exists():
            raise ValueError(f"--d3rlpy-python {given} does not exist; point it at the python of the environment "
                             f"d3rlpy is installed in (see `python -m benchmarks.vs_d3rlpy --help`)")
        return given
    return sys.executable if importlib.util.find_spec("d3rlpy") is not None else None


def _run_json(command: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(command[:3])} ...):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def iql_vs_d3rlpy(device, settings: SimpleNamespace) -> dict:
    if device.type != "cpu":
        return {"skipped": "the d3rlpy comparison runs on the CPU only (pass --device cpu)"}
    d3rlpy_python = find_d3rlpy_python(getattr(settings, "d3rlpy_python", None))
    if d3rlpy_python is None:
        return {"skipped": "d3rlpy is not importable here; pass --d3rlpy-python PATH (see benchmarks/vs_d3rlpy.py)"}
    data = Path(getattr(settings, "data", None) or default_data())
    threads = getattr(settings, "threads", None) or 1
    rounds = getattr(settings, "rounds", 3)
    common = ["--data", str(data), "--steps", str(settings.steps), "--warmup", str(max(settings.warmup, 50)),
              "--batch-size", str(settings.batch_size), "--threads", str(threads)]
    commands = {
        "harness": [sys.executable, "-m", "benchmarks.vs_d3rlpy", "--worker", *common,
                    "--compile", getattr(settings, "compile", "off")],
        "d3rlpy": [d3rlpy_python, str(WORKER), *common],
    }
    results: dict[str, list[dict]] = {name: [] for name in commands}
    for r in range(rounds):
        order = list(commands) if r % 2 == 0 else list(reversed(commands))
        for name in order:
            results[name].append(_run_json(commands[name], threads))
            print(f"  round {r + 1}/{rounds} {name}: {results[name][-1]['updates_per_s']:.1f} updates/s "
                  f"(cpu {results[name][-1].get('cpu_updates_per_s', float('nan')):.1f})", file=sys.stderr, flush=True)
    rates = {name: [x["updates_per_s"] for x in runs] for name, runs in results.items()}  # wall clock
    ratios = [h / d for h, d in zip(rates["harness"], rates["d3rlpy"])]
    out = {"updates_per_s": statistics.median(rates["harness"]),
           "d3rlpy_updates_per_s": statistics.median(rates["d3rlpy"]),
           "speedup": statistics.median(ratios), "paired_speedups": ratios,
           "harness_rates": rates["harness"], "d3rlpy_rates": rates["d3rlpy"],
           "d3rlpy": results["d3rlpy"][0]["implementation"], "data": str(data), "rounds": rounds,
           "timed_updates": settings.steps, "threads": threads}
    if all("cpu_updates_per_s" in x for runs in results.values() for x in runs):
        cpu = {name: [x["cpu_updates_per_s"] for x in runs] for name, runs in results.items()}
        out["cpu_speedup"] = statistics.median([h / d for h, d in zip(cpu["harness"], cpu["d3rlpy"])])
        out["harness_cpu_rates"], out["d3rlpy_cpu_rates"] = cpu["harness"], cpu["d3rlpy"]
    out["process_s"] = {name: statistics.median(x["process_s"] for x in runs) for name, runs in results.items()}
    out["roofline"] = roofline(results, threads)
    return out


# ----------------------------------------------------------------------------------------------
# Roofline: how close to this CPU's GEMM rate each implementation gets
# ----------------------------------------------------------------------------------------------
def gemm_rate(threads: int = 1, seconds: float = 1.0) -> dict:
    """Single-precision GEMM rate (FLOP/s) of this CPU at the shapes of an update: (256 x 256) @ (256 x 256)
    (hidden layers), the same for two stacked critics (bmm), at 512 rows (V on s and s'), all with torch's
    BLAS, and the first through oneDNN; the peak is the best of them."""
    import torch

    torch.set_num_threads(threads)
    shapes = {"mm_256x256x256": ((256, 256), (256, 256)), "mm_512x256x256": ((512, 256), (256, 256)),
              "bmm_2x256x256x256": ((2, 256, 256), (2, 256, 256))}
    products = {name: (torch.randn(a), torch.randn(b)) for name, (a, b) in shapes.items()}
    runs = {name: (lambda a=a, b=b: a @ b, 2 * a.numel() * b.shape[-1]) for name, (a, b) in products.items()}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        x, w = products["mm_256x256x256"]  # the same product through oneDNN (baselines/cpu_gemm.py)
        runs["onednn_256x256x256"] = (lambda: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""),
                                      2 * x.numel() * w.shape[0])
    rates = {}
    for name, (product, flops) in runs.items():
        for _ in range(10):
            product()
        best = 0.0
        for _ in range(5):  # best of five windows (CPU time): the machine's rate, not the neighbours' load
            reps, start = 0, time.process_time()
            while time.process_time() - start < seconds / 5:
                product()
                reps += 1
            best = max(best, flops * reps / (time.process_time() - start))
        rates[name] = best
    return rates


def roofline(results: dict[str, list[dict]], threads: int) -> dict:
    """Per implementation: FLOPs and GEMM floor of one update, the share of its CPU time the GEMMs take,
    and the fraction of this CPU's peak GEMM rate it reaches; plus the largest speedup over d3rlpy any
    implementation of the harness's arithmetic could reach (d3rlpy's update time / the harness's floor)."""
    gemm = gemm_rate(threads)
    peak = max(gemm.values())
    out: dict = {"gemm_flops_per_s": gemm, "peak_gemm_flops_per_s": peak}
    cpu_s = {}
    for name, runs in results.items():
        roof = runs[0].get("roofline")
        if not roof:
            continue
        cpu_s[name] = statistics.median(1.0 / x["cpu_updates_per_s"] for x in runs)
        out[name] = {"flops_per_update": roof["gemm_flops"], "gemm_floor_s": roof["gemm_floor_s"],
                     "update_cpu_s": cpu_s[name], "gemm_share": roof["gemm_floor_s"] / cpu_s[name],
                     "fraction_of_gemm_peak": roof["gemm_flops"] / cpu_s[name] / peak,
                     "gemm_bound_updates_per_s": peak / roof["gemm_flops"]}
    if "harness" in out and "d3rlpy" in out:
        out["max_speedup_at_gemm_floor"] = cpu_s["d3rlpy"] / out["harness"]["gemm_floor_s"]
        out["max_speedup_at_gemm_peak"] = cpu_s["d3rlpy"] * peak / out["harness"]["flops_per_update"]
    return out


# ----------------------------------------------------------------------------------------------
# The harness side (run as `python -m benchmarks.vs_d3rlpy --worker ...`)
# ----------------------------------------------------------------------------------------------
def harness_worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from adept.data import load_file
    from adept.runner import _host_metrics
    from baselines import make_learner
    from benchmarks.roofline import step_roofline
    from baselines.replay import MixedSampler, TensorBuffer

    dataset = load_file(args.data)
    learner = make_learner("iql", dataset.observations.shape[1], dataset.actions.shape[1], "cpu", dataset=dataset,
                           overrides={"seed": 0, "batch_size": args.batch_size,
                                      "lr_decay_steps": args.warmup + args.steps, "compile": args.compile})
    real = TensorBuffer.from_dataset(dataset, "cpu")
    sampler = MixedSampler(real, None, args.batch_size, generator=torch.Generator().manual_seed(0))
    setup_s = time.perf_counter() - PROCESS_START

    def train(steps: int) -> None:  # the runner's loop without evaluation and checkpoints
        sums: dict = {}
        counts: dict = {}
        for step in range(steps):
            metrics = learner.update(sampler.sample())
            for name, value in metrics.items():
                sums[name] = sums[name] + value.detach() if name in sums else value.detach().clone()
                counts[name] = counts.get(name, 0) + 1
            if (step + 1) % 1000 == 0:
                _host_metrics(sums, counts)
                sums, counts = {}, {}

    compile_start = time.perf_counter()
    train(args.warmup)
    warmup_s = time.perf_counter() - compile_start
    wall, cpu = time.perf_counter(), time.process_time()
    train(args.steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    roof = step_roofline(lambda: learner.update(sampler.sample()), cpu / args.steps)
    return {"implementation": "harness", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "updates_per_s": args.steps / wall, "cpu_updates_per_s": args.steps / cpu, "timed_updates": args.steps,
            "warmup_s": warmup_s, "setup_s": setup_s, "roofline": roof, "compile": args.compile,
            "process_s": time.perf_counter() - PROCESS_START}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vs_d3rlpy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help="run the harness side once and print JSON")
    parser.add_argument("--data", default=None)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", default="off", choices=["off", "on", "auto"])
    args = parser.parse_args(argv)
    if not args.worker:
        parser.error("run the comparison with `python -m benchmarks.throughput --cases iql_vs_d3rlpy ...`; "
                     "--worker runs one side only")
    print(json.dumps(harness_worker(args)))
    return 0


CASES = {"iql_vs_d3rlpy": iql_vs_d3rlpy}

if __name__ == "__main__":
    raise SystemExit(main())
