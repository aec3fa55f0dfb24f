"""`python -m adept evaluate`: run a saved learner (or the uniform random policy) in the real env."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from adept.envs import ENV_NAMES, get_env_spec
from adept.evaluation import evaluate, random_policy, torch_policy


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a saved learner or a random policy",
                                   description="Run full episodes (episode i seeded seed + i) and print the mean "
                                               "return, D4RL normalized score and episode lengths.")
    parser.add_argument("--env", required=True, help=f"one of {', '.join(ENV_NAMES)}")
    policy = parser.add_mutually_exclusive_group(required=True)
    policy.add_argument("--random", action="store_true", help="uniform random actions in [-1, 1]")
    policy.add_argument("--policy", type=Path, help="learner checkpoint saved by `adept train`")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=None, help="parallel envs (default: one per episode)")
    parser.add_argument("--device", default="cpu", help="torch device for --policy, e.g. cpu or cuda")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    spec = get_env_spec(args.env)
    if args.random:
        policy = random_policy(spec.act_dim, seed=args.seed)
    else:
        from baselines import load_learner  # imports torch; only needed for saved learners

        learner = load_learner(args.policy, args.device, env=args.env)  # refuses a policy of another env
        policy = torch_policy(lambda obs: learner.act(obs, deterministic=True), args.device)
    start = time.perf_counter()
    result = evaluate(policy, args.env, args.episodes, seed=args.seed, num_envs=args.num_envs)
    elapsed = time.perf_counter() - start
    print(f"{args.env}: {args.episodes} episodes in {elapsed:.1f} s")
    print(f"return: {result.return_mean:.2f} ± {result.return_std:.2f}")
    print(f"normalized score: {result.score_mean:.2f} ± {result.score_std:.2f}")
    print(f"episode length: mean {result.length_mean:.1f}  min {result.lengths.min()}  max {result.lengths.max()}")
