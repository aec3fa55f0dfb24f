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
from adept.runner import device_name, resolve_device
from baselines import LEARNERS, make_learner
from baselines.common import mlp
from baselines.replay import TensorBuffer
from benchmarks.timing import interleaved_rates, ops_per_step, time_steps

CASE_MODULES = ["benchmarks.world_model", "benchmarks.adept_epoch"]  # each has CASES: {name: fn(device, settings) -> dict}

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
        overrides = {"seed": 0, "batch_size": settings.batch_size, **LEARNER_OVERRIDES.get(name, {})}
        learner = make_learner(name, spec.obs_dim, spec.act_dim, device, overrides=overrides)
        generator = torch.Generator(device=device).manual_seed(0)
        timing = time_steps(lambda: learner.update(buffer.sample(settings.batch_size, generator)),
                            settings.steps, device, settings.warmup)
        return {"updates_per_s": timing.per_second, "batch_size": settings.batch_size, "steps": settings.steps,
                "overrides": overrides}
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
    for name in LEARNERS:
        register_case(name, learner_case(name))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", nargs="+", choices=sorted(LEARNERS), default=None,
                        help="learner cases to run")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None, help="other cases to run")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before timing")
    parser.add_argument("--env-dims", default="halfcheetah", help="env whose obs/action sizes are used")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")
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
                               env_dims=args.env_dims)
    header = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "steps": args.steps, "env_dims": args.env_dims,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(f"device: {header['device']}  torch {header['torch']}  batch {args.batch_size}  steps {args.steps}")
    print(f"{'case':<28} {'rate':>12}  unit")
    results = []
    for name in names:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = {"case": name, **CASES[name](device, settings), **peak_memory(device)}
        key, value = headline(result)
        extra = (f"  ({result['speedup']:.2f}x the reference; {result['ops_per_update']:.0f} vs "
                 f"{result['reference_ops_per_update']:.0f} ops/update)") if "speedup" in result else ""
        print(f"{name:<28} {value:>12.1f}  {key.removesuffix('_per_s')}/s  "
              f"peak {result['peak_memory_mb']:.0f} MB ({result['peak_memory_kind']}){extra}", flush=True)
        results.append(result)
    if args.out:
        atomic_write_text(args.out, json.dumps({**header, "results": results}, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
