"""Throughput of the harness's hot loops: learner gradient updates/s, plus the cases other modules
register (world-model steps/s, rollout transitions/s, ...).

    python -m benchmarks.throughput [--learners iql sac ...] [--cases NAME ...] [--device cpu|cuda|auto]
                                    [--batch-size 256] [--steps N] [--threads T] [--out bench.json]

A case is `fn(device, settings) -> dict` where `settings` has `steps`, `warmup`, `batch_size` and
`env_dims`; its dict holds at least one `*_per_s` rate (the first one is the headline of the
table). Learner cases are named after the learners; modules listed in CASE_MODULES add theirs
through their `CASES` dict. Data are random tensors of the env's shapes: speed does not depend on
their values. Numbers on a CPU shared with other jobs drift; `iql_vs_reference` therefore
alternates short rounds of both implementations and reports the median of each.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import json
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal

from adept.envs import get_env_spec
from adept.outputs import atomic_write_text
from adept.provenance import device_name, resolve_device
from baselines import LEARNERS, make_learner
from baselines.common import OfflineLearner, mlp
from baselines.replay import TensorBuffer
from benchmarks.timing import interleaved_rates, ops_per_step, time_steps, warmup_seconds

# each has CASES: {name: fn(device, settings) -> dict}
CASE_MODULES = ["benchmarks.world_model", "benchmarks.adept_epoch", "benchmarks.ground_truth",
                "benchmarks.model_based", "benchmarks.vs_d3rlpy", "benchmarks.diffusion_baselines"]

Case = Callable[[torch.device, SimpleNamespace], dict]
CASES: dict[str, Case] = {}

# Per-learner settings for the steady state: CQL's first 40k updates are behaviour cloning.
LEARNER_OVERRIDES = {"cql": {"bc_warmup_steps": 0}}


def register_case(name: str, fn: Case) -> None:
    if name in CASES:
        raise ValueError(f"benchmark case {name!r} is registered twice")
    CASES[name] = fn


def random_buffer(obs_dim: int, act_dim: int, device: torch.device, size: int = 100_000) -> TensorBuffer:
    generator = torch.Generator().manual_seed(0)
    return TensorBuffer.from_arrays(
        torch.randn(size, obs_dim, generator=generator), torch.rand(size, act_dim, generator=generator) * 2 - 1,
        torch.randn(size, generator=generator), torch.randn(size, obs_dim, generator=generator),
        (torch.rand(size, generator=generator) < 0.01).float(), device)


def learner_case(name: str) -> Case:
    def run(device: torch.device, settings: SimpleNamespace) -> dict:
        spec = get_env_spec(settings.env_dims)
        buffer = random_buffer(spec.obs_dim, spec.act_dim, device)
        overrides = {"seed": 0, "batch_size": settings.batch_size, **LEARNER_OVERRIDES.get(name, {}),
                     "compile": getattr(settings, "compile", "off")}
        learner = make_learner(name, spec.obs_dim, spec.act_dim, device, overrides=overrides)
        generator = torch.Generator(device=device).manual_seed(0)
        step = lambda: learner.update(buffer.sample(settings.batch_size, generator))  # noqa: E731
        warmup = warmup_seconds(step, max(settings.warmup, 2), device)  # TD3+BC's two step kinds compile here
        timing = time_steps(step, settings.steps, device, warmup=0)
        return {"updates_per_s": timing.per_second, "cpu_updates_per_s": timing.per_cpu_second,
                "warmup_s": warmup, "compiled": learner.compiled, "batch_size": settings.batch_size,
                "steps": settings.steps, "overrides": overrides}
    return run



# ----------------------------------------------------------------------------------------------
# A straightforward PyTorch IQL, written the way it typically is (the layout of CORL's iql.py):
# two separate Q-networks, a torch.distributions policy, three backward passes and optimizers,
# a per-parameter target update and per-step .item() logging. Same networks and losses as
# baselines.iql; it exists only as the speed reference for baselines.iql.
# ----------------------------------------------------------------------------------------------
class ReferenceIQL:
    def __init__(self, obs_dim: int, act_dim: int, device: torch.device, hidden_dim: int = 256):
        self.q1 = mlp(obs_dim + act_dim, 1, hidden_dim).to(device)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden_dim).to(device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.value = mlp(obs_dim, 1, hidden_dim).to(device)
        self.actor = mlp(obs_dim, act_dim, hidden_dim).to(device)
        self.log_std = torch.zeros(act_dim, device=device, requires_grad=True)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=3e-4)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=3e-4)
        self.actor_optimizer = torch.optim.Adam([*self.actor.parameters(), self.log_std], lr=3e-4)

    def update(self, obs, actions, rewards, next_obs, dones) -> dict[str, float]:
        obs_actions = torch.cat([obs, actions], dim=1)
        with torch.no_grad():
            target_q = torch.min(self.q1_target(obs_actions), self.q2_target(obs_actions)).squeeze(-1)
            next_v = self.value(next_obs).squeeze(-1)
        v = self.value(obs).squeeze(-1)
        advantage = target_q - v
        value_loss = (torch.abs(0.7 - (advantage < 0).float()) * advantage ** 2).mean()
        self.value_optimizer.zero_grad()
        value_loss.backward()
        self.value_optimizer.step()

        targets = rewards + (1.0 - dones) * 0.99 * next_v
        q_loss = (F.mse_loss(self.q1(obs_actions).squeeze(-1), targets)
                  + F.mse_loss(self.q2(obs_actions).squeeze(-1), targets)) / 2
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()

        weights = torch.exp(3.0 * advantage.detach()).clamp(max=100.0)
        policy = MultivariateNormal(torch.tanh(self.actor(obs)), scale_tril=torch.diag(torch.exp(self.log_std)))
        actor_loss = (weights * -policy.log_prob(actions)).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        with torch.no_grad():
            for target, source in ((self.q1_target, self.q1), (self.q2_target, self.q2)):
                for target_param, param in zip(target.parameters(), source.parameters()):
                    target_param.data.copy_(0.995 * target_param.data + 0.005 * param.data)
        return {"value_loss": value_loss.item(), "q_loss": q_loss.item(), "actor_loss": actor_loss.item()}


def iql_vs_reference(device: torch.device, settings: SimpleNamespace) -> dict:
    spec = get_env_spec(settings.env_dims)
    buffer = random_buffer(spec.obs_dim, spec.act_dim, device)
    generator = torch.Generator(device=device).manual_seed(0)
    ours = make_learner("iql", spec.obs_dim, spec.act_dim, device,
                        overrides={"seed": 0, "batch_size": settings.batch_size})
    reference = ReferenceIQL(spec.obs_dim, spec.act_dim, device)
    steps = {"ours": lambda: ours.update(buffer.sample(settings.batch_size, generator)),
             "reference": lambda: reference.update(*buffer.sample(settings.batch_size, generator))}
    rounds = 10
    rates = interleaved_rates(steps, steps_per_round=max(1, settings.steps // rounds), rounds=rounds,
                              device=device, warmup=settings.warmup)
    return {"updates_per_s": rates["ours"], "reference_updates_per_s": rates["reference"],
            "speedup": rates["ours"] / rates["reference"],
            "ops_per_update": ops_per_step(steps["ours"]), "reference_ops_per_update": ops_per_step(steps["reference"]),
            "batch_size": settings.batch_size, "rounds": rounds, "steps_per_round": max(1, settings.steps // rounds)}


def _register_builtin_cases() -> None:
    for name, (learner_cls, _) in LEARNERS.items():
        if learner_cls.segment_sampler_options is OfflineLearner.segment_sampler_options:
            register_case(name, learner_case(name))  # transition learners; Diffuser's cases: diffusion_baselines
    register_case("iql_vs_reference", iql_vs_reference)
    for module_name in CASE_MODULES:
        for name, fn in importlib.import_module(module_name).CASES.items():
            register_case(name, fn)


_register_builtin_cases()


def peak_memory(device: torch.device) -> dict:
    """Peak memory of the case: allocated device memory on CUDA (reset before each case), the
    process's peak resident set on the CPU (monotone over the run: read it per case in order)."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "peak_memory_kind": "cuda allocated"}
    import resource

    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_memory_kind": "process max RSS"}


def headline(result: dict) -> tuple[str, float]:
    """The first `*_per_s` entry of a case's result."""
    for key, value in result.items():
        if key.endswith("_per_s"):
            return key, value
    raise ValueError(f"benchmark result has no '*_per_s' rate: {sorted(result)}")


# Cases whose steps `--compile` compiles (learner updates, world-model updates and sampling, ADEPT epochs).
COMPILABLE = {*LEARNERS, "world_model_update_b256", "world_model_iwu_b1024", "rollout_n1000_h10",
              "adept_epoch_iql", "adept_epoch_sac"}


def describe(result: dict) -> str:
    """One table row: headline rate, CPU-time rate, compile/warm-up time, peak memory, comparisons."""
    key, value = headline(result)
    unit = key.removesuffix("_per_s")
    text = f"{value:>12.1f}  {unit}/s"
    cpu = result.get(f"cpu_{key}")
    if cpu is not None and cpu == cpu:  # not NaN
        text += f" (cpu time: {cpu:.1f})"
    if result.get("compile") == "on" and "warmup_s" in result:
        text += f"  first steps {result['warmup_s']:.1f} s (compile)"
    text += f"  peak {result['peak_memory_mb']:.0f} MB ({result['peak_memory_kind']})"
    if "reference_ops_per_update" in result:
        text += (f"  ({result['speedup']:.2f}x the reference; {result['ops_per_update']:.0f} vs "
                 f"{result['reference_ops_per_update']:.0f} ops/update)")
    if "d3rlpy_updates_per_s" in result:
        text += (f"  ({result['speedup']:.2f}x {result['d3rlpy']} at {result['d3rlpy_updates_per_s']:.1f}/s; "
                 f"cpu-time ratio {result.get('cpu_speedup', float('nan')):.2f}; paired "
                 f"{', '.join(f'{r:.2f}' for r in result['paired_speedups'])})")
        roof = result.get("roofline")
        if roof:
            parts = [f"{name} {roof[name]['flops_per_update'] / 1e6:.0f} MFLOP/update, GEMMs "
                     f"{100 * roof[name]['gemm_share']:.0f}% of its CPU time, "
                     f"{100 * roof[name]['fraction_of_gemm_peak']:.0f}% of peak"
                     for name in ("harness", "d3rlpy") if name in roof]
            text += (f"\n{'':<36} roofline: GEMM peak {roof['peak_gemm_flops_per_s'] / 1e9:.1f} GFLOP/s; "
                     + "; ".join(parts))
            if "max_speedup_at_gemm_floor" in roof:
                text += (f"\n{'':<36} the harness's arithmetic at its GEMM floor would be "
                         f"{roof['max_speedup_at_gemm_floor']:.2f}x d3rlpy (at the peak GEMM rate "
                         f"{roof['max_speedup_at_gemm_peak']:.2f}x)")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--learners", nargs="+", choices=sorted(n for n in LEARNERS if n in CASES), default=None,
                        help="learner cases to run")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None, help="other cases to run")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before timing")
    parser.add_argument("--env-dims", default="halfcheetah", help="env whose obs/action sizes are used")
    parser.add_argument("--scale", choices=("paper", "quick"), default="paper",
                        help="sizes of the cases that have both (SynthER, Diffuser): published or config/quick.yaml's")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off",
                        help="compile the steps of the cases that have them (baselines/compile.py); both: "
                             "each such case eager, then compiled")
    parser.add_argument("--d3rlpy-python", default=None,
                        help="python of an environment with d3rlpy, for iql_vs_d3rlpy (benchmarks/vs_d3rlpy.py)")
    parser.add_argument("--data", default=None, help="D4RL-layout file for iql_vs_d3rlpy (default: generated "
                                                     "halfcheetah random, made on first use)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds of iql_vs_d3rlpy")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--batch-size, --steps and --threads must be >= 1 and --warmup >= 0")
    get_env_spec(args.env_dims)  # unknown env -> ValueError listing the valid ones
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    names = (args.learners or []) + (args.cases or []) or list(CASES)
    settings = SimpleNamespace(steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                               env_dims=args.env_dims, threads=args.threads, d3rlpy_python=args.d3rlpy_python,
                               data=args.data, rounds=args.rounds, scale=args.scale)
    header = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "steps": args.steps, "env_dims": args.env_dims,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(f"device: {header['device']}  torch {header['torch']}  batch {args.batch_size}  steps {args.steps}")
    print(f"{'case':<36} {'rate':>12}  unit")
    results = []
    for name in names:
        modes = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[args.compile] if name in COMPILABLE else ["off"]
        for mode in modes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            settings.compile = mode
            label = f"{name} [compiled]" if mode == "on" else name
            result = {"case": name, "compile": mode, **CASES[name](device, settings)}
            if "skipped" in result:
                print(f"{label:<36} {'skipped':>12}  {result['skipped']}", flush=True)
                results.append(result)
                continue
            result.update(peak_memory(device))
            print(f"{label:<36} {describe(result)}", flush=True)
            results.append(result)
    if args.out:
        atomic_write_text(args.out, json.dumps({**header, "results": results}, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
