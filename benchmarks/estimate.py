"""What a configured grid costs on this machine, measured before anyone spends GPU-hours on it.

    python -m benchmarks.estimate --configfile config/config.yaml [--device cuda] [--gpus N]
                                  [--runs-per-gpu K] [--cores N] [--seconds 3] [--out estimate.json]

1. The jobs are the workflow's own: a Snakemake dry run with the given config files (in a temporary
   folder; nothing runs) lists every job and its shell command. The command says what the job is
   (`adept train --method M`, `adept world-model --steps N`, ...) and the files the workflow would
   write first (each method's run config, each world model's config) give its steps and sizes, so
   the grid is never spelled out twice.
2. Each kind of job is measured here for about `--seconds` at its configured sizes (on the CPU per
   second of CPU time, what a job costs a core it has to itself), on random data of
   the grid's largest observation/action sizes: learner updates (plain and SynthER methods), whole
   ADEPT / Diff+X epochs (PE batch, learner updates, IWU steps), world-model and behaviour-policy
   fits, and, through their benchmark cases at the published sizes, MOPO/COMBO epochs and the
   dynamics-ensemble fit; plus one evaluation of a training run (eval_episodes halfcheetah episodes,
   1000 steps each). A kind nothing measures is listed as such and left out of the totals.
3. hours = jobs x steps / rate (+ evaluations, + the compile time of compiled steps). Wall time goes
   stage by stage (behaviour policies, world models and other model fits first, then the training
   runs): each stage takes its hours over the parallel slots (GPUs x runs_per_gpu, or CPU cores at
   one thread per job) and at least as long as its longest job. With runs_per_gpu > 1 on CUDA the
   slowdown of runs sharing a GPU is measured too (that many concurrent IQL training processes,
   counted over one common time window; `--sharing-sweep 1 2 4 8` prints it for several K).

Upper bound: the behaviour-policy fits stop early on their held-out NLL, ADEPT's Theorem 4.4
diagnostics at evaluations are not counted, and hopper/walker2d episodes often end before 1000 steps.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL_STAGE = ("behavior_policy", "world_model", "ensemble", "synther")


@dataclass
class Job:
    """One job of the dry run that trains something."""

    rule: str
    kind: str                      # row of the table, e.g. "train adept-sac_K5", "world_model K=10"
    stage: str                     # "models" or "training"
    steps: int
    measure: dict                  # what to measure: {"what": ..., sizes}
    evaluations: int = 0
    eval_episodes: int = 0


@dataclass
class Row:
    kind: str
    stage: str
    jobs: int
    steps: int
    rate: float | None = None      # steps per second of one job
    eval_s: float = 0.0            # seconds of evaluation per job
    warmup_s: float = 0.0          # compile / first-step time per job
    note: str = ""
    measured: dict = field(default_factory=dict)

    @property
    def hours_per_job(self) -> float | None:
        if self.rate is None:
            return None
        return (self.steps / self.rate + self.eval_s + self.warmup_s) / 3600

    @property
    def hours(self) -> float | None:
        per_job = self.hours_per_job
        return None if per_job is None else per_job * self.jobs


# ----------------------------------------------------------------------------------------------
# 1. The job list, from a Snakemake dry run
# ----------------------------------------------------------------------------------------------
def dry_run(configfiles: list[str], extra: list[str] | None = None) -> str:
    """The output of `snakemake -n` for these config files, in a throwaway working directory."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="adept-estimate-") as workdir:
        command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", workdir, "-n",
                   "--configfile", *[str(Path(c).resolve()) for c in configfiles], *(extra or [])]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"estimate: the Snakemake dry run failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout + done.stderr


BLOCK = re.compile(r"^(?:local)?rule (\w+):\n(.*?)(?=\n\n|\Z)", re.S | re.M)
WRITTEN_TEXT = re.compile(r"printf '%s' (.*?) > (\S+)\.tmp &&", re.S)


def parse_dry_run(text: str) -> tuple[list[tuple[str, str]], dict[str, dict]]:
    """([(rule, shell command)], {path: YAML the workflow writes there}) of a dry run's output."""
    commands, files = [], {}
    for match in BLOCK.finditer(text):
        rule, body = match.group(1), match.group(2)
        if "Shell command: " not in body:
            continue
        command = body.split("Shell command: ", 1)[1]
        written = WRITTEN_TEXT.search(command)
        if written:
            files[written.group(2)] = yaml.safe_load(shlex.split(written.group(1))[0]) or {}
        else:
            commands.append((rule, command))
    return commands, files


def _adept_args(command: str) -> tuple[str, argparse.Namespace] | None:
    """(`adept` subcommand, its options) of a shell command that runs `python -m adept ...`."""
    tokens = shlex.split(command)
    for i in range(len(tokens) - 2):
        if tokens[i:i + 2] == ["-m", "adept"]:
            parser = argparse.ArgumentParser(add_help=False)
            for flag in ("--method", "--env", "--config", "--world-model"):
                parser.add_argument(flag)
            parser.add_argument("--set", action="append", default=[])
            return tokens[i + 2], parser.parse_known_args(tokens[i + 3:])[0]
    return None


def _fit_settings() -> dict[str, tuple[str, str, type]]:
    """`adept` fit command -> (its schedule section, the key of its step count, the section's dataclass)."""
    from adept.behavior_policy_training import BehaviorPolicyFitConfig
    from adept.ensemble_training import EnsembleFitConfig
    from adept.synther_training import SyntherFitConfig
    from adept.world_model_training import WorldModelFitConfig

    return {"world-model": ("world_model_training", "steps", WorldModelFitConfig),
            "behavior-policy": ("behavior_policy", "steps", BehaviorPolicyFitConfig),
            "ensemble": ("ensemble_training", "max_steps", EnsembleFitConfig),
            "synther": ("synther_training", "steps", SyntherFitConfig)}


def jobs_of(commands: list[tuple[str, str]], files: dict[str, dict]) -> tuple[list[Job], dict[str, int]]:
    """The jobs that train something, and the counts of the others (datasets, reports) by rule."""
    from adept.config import merge, parse_overrides
    from adept.methods import parse_method
    from adept.runner import TrainConfig

    fit_settings = _fit_settings()
    jobs: list[Job] = []
    others: dict[str, int] = defaultdict(int)
    for rule, command in commands:
        parsed = _adept_args(command)
        subcommand, args = parsed if parsed else (None, None)
        if subcommand == "train":
            sections = merge(files.get(args.config, {}), parse_overrides(args.set))
            config = TrainConfig.from_dict({k: v for k, v in sections.items() if k in TrainConfig.__dataclass_fields__})
            spec = parse_method(args.method)
            measure = {"what": spec.synthetic or "learner", "learner": spec.learner, "method": spec.base,
                       "learner_overrides": sections.get("learner", {}), "batch_size": config.run.batch_size,
                       "compile": config.run.compile}
            if spec.learner == "diffuser":  # trajectory segments, not transitions: its own benchmark case
                measure = {"what": "case", "case": "diffuser_update",
                           "note": "benchmark case diffuser_update (published sizes; planning at evaluations not counted)"}
            if spec.needs_world_model:
                architecture = files.get(str(Path(args.world_model).parents[2] / "config.yaml"), {}) \
                    if args.world_model else {}
                measure["world_model"] = merge(architecture.get("world_model", {}), sections.get("world_model", {}))
                measure["adept"] = sections.get("adept", {})
                if spec.synthetic == "diff":
                    measure["adept"] = {**measure["adept"], "refit_world_model": False}
            run = config.run
            evaluations = run.steps // run.eval_every + (run.steps % run.eval_every != 0)
            jobs.append(Job(rule, f"train {args.method}", "training", run.steps, measure, evaluations,
                            run.eval_episodes))
        elif subcommand in fit_settings:
            # A fit's settings file (+ --set) as the command reads it: its schedule section and, for
            # the world model and pi_D, the model's own section.
            settings = merge(files.get(args.config, {}), parse_overrides(args.set))
            section, steps_key, fit_config = fit_settings[subcommand]
            schedule = {**asdict(fit_config()), **settings.get(section, {})}
            steps = int(schedule[steps_key])
            if subcommand == "world-model":
                model = settings.get("world_model", {})
                jobs.append(Job(rule, f"world_model K={model.get('diffusion_steps', 10)}", "models", steps,
                                {"what": "world_model", "world_model": model}))
            elif subcommand == "behavior-policy":
                learner = schedule.get("learner") or {}
                jobs.append(Job(rule, "behavior_policy (at most)", "models", steps,
                                {"what": "learner", "learner": "bc", "learner_overrides": learner,
                                 "batch_size": learner.get("batch_size", 256), "compile": "off"}))
            else:
                case = {"ensemble": "ensemble_fit", "synther": "synther_fit"}[subcommand]
                jobs.append(Job(rule, f"{subcommand} fit{' (at most)' if subcommand == 'ensemble' else ''}",
                                "models", steps, {"what": "case", "case": case}))
        else:
            others[rule] += 1
    return jobs, dict(others)


# ----------------------------------------------------------------------------------------------
# 2. Rates, measured here
# ----------------------------------------------------------------------------------------------
def timed_rate(step: Callable[[], object], seconds: float, device) -> tuple[float, float]:
    """(steps/s, seconds of the first 3 steps: compilation included) of `step`, timed for ~`seconds`.
    On the CPU the rate is per second of this process's CPU time: what a job costs a core it has to
    itself (the wall-clock rate on a shared machine follows the neighbours' load)."""
    import torch

    from benchmarks.timing import time_steps, warmup_seconds

    warmup = warmup_seconds(step, 3, device)
    probe = time_steps(step, 3, device, warmup=0)
    steps = int(min(max(seconds * probe.per_second, 3), 100_000))
    timing = time_steps(step, steps, device, warmup=0)
    return (timing.per_cpu_second if torch.device(device).type == "cpu" else timing.per_second), warmup


def random_buffer(obs_dim: int, act_dim: int, device, size: int = 100_000):
    from benchmarks.throughput import random_buffer as make

    return make(obs_dim, act_dim, device, size)


def measure(spec: dict, device, dims: tuple[int, int], seconds: float, steps_hint: int) -> dict:
    """{"rate": steps/s, "warmup_s": ..., ...} for one kind of job."""
    import torch

    from adept.config import from_dict
    from adept.runner import RunConfig, run_compile
    from baselines import make_learner

    obs_dim, act_dim = dims
    what = spec["what"]
    compile_mode = run_compile(RunConfig(steps=max(steps_hint, 1), compile=spec.get("compile", "auto")), device) \
        if "compile" in spec else "off"
    if what in ("learner", "synther"):
        overrides = {**spec["learner_overrides"], "seed": 0, "batch_size": spec["batch_size"], "compile": compile_mode}
        overrides.pop("real_rows", None)
        learner = make_learner(spec["learner"], obs_dim, act_dim, device, overrides=overrides)
        buffer = random_buffer(obs_dim, act_dim, device)
        generator = torch.Generator(device=device).manual_seed(0)
        rate, warmup = timed_rate(lambda: learner.update(buffer.sample(spec["batch_size"], generator)), seconds, device)
        return {"rate": rate, "warmup_s": warmup if learner.compiled else 0.0, "compile": compile_mode}
    if what in ("adept", "diff"):
        from adept.closed_loop import ClosedLoopConfig
        from adept.world_model import WorldModelConfig
        from benchmarks.adept_epoch import epoch_rate

        loop = from_dict(ClosedLoopConfig, spec.get("adept", {}), "adept")
        model = from_dict(WorldModelConfig, spec.get("world_model", {}), "world_model")
        probe = epoch_rate(device, spec["learner"], obs_dim=obs_dim, act_dim=act_dim, updates=5,
                           batch_size=spec["batch_size"], learner_overrides=spec["learner_overrides"],
                           world_model=model, loop=loop, compile=compile_mode, warmup=2)
        updates = int(min(max(seconds * probe["learner_updates_per_s"] / 2, 10), 5000))
        result = epoch_rate(device, spec["learner"], obs_dim=obs_dim, act_dim=act_dim, updates=updates,
                            batch_size=spec["batch_size"], learner_overrides=spec["learner_overrides"],
                            world_model=model, loop=loop, compile=compile_mode, warmup=2)
        rate = result["cpu_adept_steps_per_s"] if device.type == "cpu" else result["adept_steps_per_s"]
        return {"rate": rate, "warmup_s": result["warmup_s"] if compile_mode == "on" else 0.0,
                "compile": compile_mode, "pe_batch_s": result["pe_batch_s"],
                "learner_updates_per_s": result["learner_updates_per_s"], "iwu_steps_per_s": result["iwu_steps_per_s"]}
    if what == "world_model":
        from adept.world_model import WorldModel, WorldModelConfig

        config = from_dict(WorldModelConfig, spec["world_model"], "world_model")
        rng = torch.Generator().manual_seed(0)
        obs = torch.randn(4096, obs_dim, generator=rng)
        model = WorldModel.from_arrays(obs.numpy(), (torch.rand(4096, act_dim, generator=rng) * 2 - 1).numpy(),
                                       torch.randn(4096, generator=rng).numpy(), (obs + 0.1).numpy(), config, device)
        model.set_compile(compile_mode)
        buffer = random_buffer(obs_dim, act_dim, device)
        generator = torch.Generator(device=device).manual_seed(0)
        rate, warmup = timed_rate(lambda: model.update(buffer.sample(config.batch_size, generator), generator=generator),
                                  seconds, device)
        return {"rate": rate, "warmup_s": warmup if compile_mode == "on" else 0.0, "compile": compile_mode}
    if what in ("case", "ensemble"):
        from benchmarks.throughput import CASES, headline

        name = spec.get("case") or f"{spec['method']}_epoch"
        if name not in CASES:
            return {"rate": None, "note": f"no benchmark case {name!r}"}
        settings = SimpleNamespace(steps=20, warmup=3, batch_size=spec.get("batch_size", 256), env_dims="halfcheetah",
                                   compile="off")
        result = CASES[name](device, settings)
        steps = max(int(seconds * headline(result)[1]), 20)
        if steps > 20:
            result = CASES[name](device, SimpleNamespace(**{**vars(settings), "steps": min(steps, 5000)}))
        key, rate = headline(result)
        if device.type == "cpu" and result.get(f"cpu_{key}") == result.get(f"cpu_{key}"):  # a CPU-time rate, not NaN
            rate = result.get(f"cpu_{key}", rate)
        return {"rate": rate, "warmup_s": 0.0,
                "note": spec.get("note", f"benchmark case {name} (published sizes)")}
    return {"rate": None, "note": "no benchmark case measures this kind"}


def evaluation_seconds(episodes: int, device, hidden_dim: int = 256) -> float:
    """Wall time of one evaluation: `episodes` halfcheetah episodes (always 1000 steps) with a learner's policy."""
    from adept.evaluation import evaluate, torch_policy
    from adept.envs import get_env_spec
    from baselines import make_learner

    spec = get_env_spec("halfcheetah")
    learner = make_learner("iql", spec.obs_dim, spec.act_dim, device, overrides={"seed": 0, "hidden_dim": hidden_dim})
    policy = torch_policy(lambda obs: learner.act(obs), device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter  # as timed_rate
    start = clock()
    evaluate(policy, "halfcheetah", episodes, seed=0)
    return clock() - start


def sharing_efficiency(device, runs: int, seconds: float, startup_s: float = 45.0) -> float:
    """Aggregate throughput of `runs` concurrent IQL training loops on one device over `runs` x one alone.

    Each loop is its own process (as Snakemake runs jobs); all of them wait for the same start time
    (after `startup_s` for imports, data and warm-up) and count updates over the same `seconds`."""
    def rates(count: int) -> list[float]:
        start_at = time.time() + startup_s
        command = [sys.executable, "-m", "benchmarks.estimate", "--sharing-worker", "--device", str(device),
                   "--seconds", str(seconds), "--start-at", str(start_at)]
        processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                     for _ in range(count)]
        outputs = [process.communicate()[0] for process in processes]
        return [float(out.strip().splitlines()[-1]) for out, process in zip(outputs, processes)
                if process.returncode == 0 and out.strip()]

    alone = rates(1)
    shared = rates(runs)
    if not alone or len(shared) != runs:
        raise RuntimeError(f"sharing measurement failed: {len(shared)} of {runs} concurrent runs reported")
    return sum(shared) / (runs * alone[0])


def sharing_worker(device, seconds: float, start_at: float) -> float:
    """IQL updates/s (batch 256, hidden 256) over [start_at, start_at + seconds], warmed up before."""
    import torch

    from baselines import make_learner
    from benchmarks.timing import synchronize

    buffer = random_buffer(17, 6, device)
    learner = make_learner("iql", 17, 6, device, overrides={"seed": 0})
    generator = torch.Generator(device=device).manual_seed(0)
    while time.time() < start_at - 1.0:  # warm up until shortly before the common window
        learner.update(buffer.sample(256, generator))
    synchronize(device)
    while time.time() < start_at:
        time.sleep(0.001)
    window_start = time.time()  # start_at, or later if the set-up outlasted the start-up allowance
    updates, end = 0, window_start + seconds
    while updates == 0 or time.time() < end:
        for _ in range(10):
            learner.update(buffer.sample(256, generator))
        updates += 10
        synchronize(device)
    return updates / (time.time() - window_start)


# ----------------------------------------------------------------------------------------------
# 3. The table
# ----------------------------------------------------------------------------------------------
def build_rows(jobs: list[Job], device, seconds: float, dims: tuple[int, int], progress: bool = True) -> list[Row]:
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job.kind].append(job)
    eval_cache: dict[int, float] = {}
    rows = []
    cache: dict[str, dict] = {}
    for kind, members in groups.items():
        first = members[0]
        key = json.dumps(first.measure, sort_keys=True, default=str)
        if key not in cache:
            if progress:
                print(f"  measuring {kind} ...", file=sys.stderr, flush=True)
            try:
                cache[key] = measure(first.measure, device, dims, seconds, first.steps)
            except Exception as err:  # a kind that cannot be built here is reported, not fatal
                cache[key] = {"rate": None, "note": f"could not measure: {type(err).__name__}: {err}"[:160]}
        result = cache[key]
        eval_s = 0.0
        if first.evaluations:
            if first.eval_episodes not in eval_cache:
                eval_cache[first.eval_episodes] = evaluation_seconds(first.eval_episodes, device)
            eval_s = first.evaluations * eval_cache[first.eval_episodes]
        rows.append(Row(kind, first.stage, len(members), max(j.steps for j in members), result.get("rate"), eval_s,
                        result.get("warmup_s", 0.0), result.get("note", ""),
                        {k: v for k, v in result.items() if k not in ("rate", "note", "warmup_s")}))
    return rows


def wall_hours(rows: list[Row], slots: float) -> dict:
    stages = {}
    for stage in ("models", "training"):
        measured = [r for r in rows if r.stage == stage and r.hours is not None]
        total = sum(r.hours for r in measured)
        longest = max((r.hours_per_job for r in measured), default=0.0)
        stages[stage] = {"hours": total, "wall_hours": max(total / slots, longest) if measured else 0.0}
    return stages


def format_table(rows: list[Row], unit: str) -> str:
    lines = [f"{'job kind':<34} {'jobs':>5} {'steps/job':>10} {'rate (steps/s)':>15} {'h/job':>8} {unit:>10}"]
    for row in sorted(rows, key=lambda r: (r.stage != "models", r.kind)):
        if row.rate is None:
            lines.append(f"{row.kind:<34} {row.jobs:>5} {row.steps:>10} {'-':>15} {'-':>8} {'-':>10}  {row.note}")
            continue
        extra = f"  (+{row.eval_s / 60:.0f} min evaluation)" if row.eval_s else ""
        if row.warmup_s:
            extra += f"  (+{row.warmup_s:.0f} s compile)"
        if row.note:
            extra += f"  {row.note}"
        lines.append(f"{row.kind:<34} {row.jobs:>5} {row.steps:>10} {row.rate:>15.1f} {row.hours_per_job:>8.2f} "
                     f"{row.hours:>10.1f}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimate", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--configfile", nargs="+", default=[str(ROOT / "config" / "config.yaml")],
                        help="config files, merged in order over config/config.yaml as Snakemake does")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N: where the rates are measured")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs the grid runs on (with --device cuda)")
    parser.add_argument("--runs-per-gpu", type=int, default=None,
                        help="jobs sharing one GPU (default: the config's runs_per_gpu)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="CPU cores (with --device cpu)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per job kind")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while measuring (1 per job)")
    parser.add_argument("--sharing-sweep", type=int, nargs="+", default=None, metavar="K",
                        help="only measure how K concurrent runs share the device (aggregate learner updates/s "
                             "for each K) and exit: the evidence for runs_per_gpu")
    parser.add_argument("--sharing-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="also write the estimate as JSON here")
    args = parser.parse_args(argv)
    if args.gpus < 1 or args.cores < 1 or args.seconds <= 0 or (args.runs_per_gpu is not None and args.runs_per_gpu < 1):
        parser.error("--gpus, --cores and --runs-per-gpu must be >= 1 and --seconds > 0")
    for path in args.configfile:
        if not Path(path).is_file():
            parser.error(f"config file {path} does not exist")

    import torch

    from adept.provenance import device_name, resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.sharing_worker:
        print(sharing_worker(device, args.seconds, args.start_at or time.time()))
        return 0
    if args.sharing_sweep:
        print(f"runs sharing {device_name(device)}: efficiency = aggregate IQL updates/s / (K x one run alone)")
        for runs in args.sharing_sweep:
            efficiency = sharing_efficiency(device, runs, args.seconds) if runs > 1 else 1.0
            print(f"  K = {runs}: efficiency {efficiency:.2f}, aggregate {runs * efficiency:.2f}x one run", flush=True)
        return 0
    print(f"dry run of {' '.join(args.configfile)} ...", file=sys.stderr, flush=True)
    commands, files = parse_dry_run(dry_run(args.configfile))
    jobs, others = jobs_of(commands, files)
    from adept.config import merge
    from adept.envs import get_env_spec

    config: dict = {}
    for path in [ROOT / "config" / "config.yaml", *args.configfile]:  # as the Snakefile merges them
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    runs_per_gpu = args.runs_per_gpu or int(config.get("runs_per_gpu", 1))
    specs = [get_env_spec(env) for env in config.get("envs", ["halfcheetah"])]
    dims = (max(s.obs_dim for s in specs), max(s.act_dim for s in specs))
    rows = build_rows(jobs, device, args.seconds, dims)

    if device.type == "cuda":
        efficiency = sharing_efficiency(device, runs_per_gpu, args.seconds) if runs_per_gpu > 1 else 1.0
        slots, where = args.gpus * runs_per_gpu * efficiency, f"{args.gpus} GPU(s) x {runs_per_gpu} run(s) per GPU"
        unit = "GPU-h" if runs_per_gpu == 1 else "run-h"
    else:
        efficiency, slots, where, unit = 1.0, float(args.cores), f"{args.cores} CPU core(s), one thread per job", "core-h"
    stages = wall_hours(rows, slots)
    total = sum(r.hours for r in rows if r.hours is not None)
    unmeasured = [r for r in rows if r.rate is None]

    print(f"\nmeasured on {device_name(device)}, torch {torch.__version__}, ~{args.seconds:g} s per kind")
    print(format_table(rows, unit))
    print(f"\ntotal {total:.1f} {unit} of measured jobs ({sum(r.jobs for r in rows if r.rate is not None)} jobs)")
    if unmeasured:
        print(f"not in the totals: {sum(r.jobs for r in unmeasured)} jobs of kinds nothing measures "
              f"({', '.join(r.kind for r in unmeasured)})")
    if others:
        print(f"not estimated: {sum(others.values())} data and report jobs ({', '.join(f'{k} {v}' for k, v in sorted(others.items()))})")
    sharing = f", runs sharing a GPU at {100 * efficiency:.0f}% of their speed alone" if efficiency != 1.0 else ""
    wall = sum(s["wall_hours"] for s in stages.values())
    print(f"wall time on {where}{sharing}: {wall:.1f} h "
          f"(models {stages['models']['wall_hours']:.1f} h, then training {stages['training']['wall_hours']:.1f} h)")
    if args.out:
        from adept.outputs import atomic_write_text

        atomic_write_text(args.out, json.dumps({
            "device": device_name(device), "torch": torch.__version__, "configfiles": args.configfile,
            "gpus": args.gpus, "runs_per_gpu": runs_per_gpu, "cores": args.cores, "sharing_efficiency": efficiency,
            "rows": [{**asdict(r), "hours_per_job": r.hours_per_job, "hours": r.hours} for r in rows],
            "total_hours": total, "stages": stages, "wall_hours": wall, "other_jobs": others,
            "not_measured": [r.kind for r in unmeasured]}, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    if math.isnan(total):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
