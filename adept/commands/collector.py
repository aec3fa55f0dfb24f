"""`python -m adept collector`: the online SAC agent that collects the generated medium / medium-replay datasets.

    collector train     train until the stochastic policy reaches the target return (resumable)
    collector evaluate  measure a saved snapshot's return with sampled actions
    collector collect   write a medium-style dataset from any saved snapshot
    collector ship      copy a finished run's snapshot into adept/collector_snapshots/ + manifest.json

Not the behaviour policy pi_D of the importance weights: that is `python -m adept behavior-policy`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collector", help="train / evaluate the online SAC collector of the medium and medium-replay datasets",
        description="The collector: online SAC that collects the generated medium / medium-replay data "
                    "(D4RL's medium recipe). `train` writes policy.pt (the snapshot's actor), replay.hdf5 "
                    "(the medium-replay data), eval.csv and summary.json.")
    commands = parser.add_subparsers(dest="collector_command", required=True, metavar="subcommand")

    train = commands.add_parser("train", help="train until the evaluated return reaches the target (resumes if interrupted)")
    train.add_argument("--env", required=True, help="halfcheetah, hopper or walker2d")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--target-return", type=float, default=None,
                       help="stop once the stochastic policy's mean return reaches this "
                            "(default: D4RL's medium level: halfcheetah 4770, hopper 1422, walker2d 2852)")
    train.add_argument("--max-steps", type=int, default=None, help="env-step budget (default 1,000,000)")
    train.add_argument("--out-dir", type=Path, default=None,
                       help="default: $ADEPT_COLLECTOR_DIR/<env>/seed<seed> (the folder medium-replay reads)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a CollectorConfig value, e.g. --set eval_every=10000 --set sac.actor_lr=1e-4")
    _add_runtime_options(train)
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("evaluate", help="mean return of a saved snapshot with sampled actions")
    evaluate.add_argument("--policy", type=Path, required=True, help="policy.pt from `collector train`")
    evaluate.add_argument("--episodes", type=int, default=50)
    evaluate.add_argument("--seed", type=int, default=0)
    _add_runtime_options(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    collect = commands.add_parser("collect", help="write a medium-style dataset (sampled actions) from a saved snapshot")
    collect.add_argument("--policy", type=Path, required=True, help="policy.pt from `collector train`")
    collect.add_argument("--size", type=int, default=None, help="transitions (default 1,000,000)")
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--out", type=Path, required=True, help="hdf5 file to write (D4RL layout)")
    _add_runtime_options(collect)
    collect.set_defaults(func=run_collect)

    ship = commands.add_parser("ship", help="copy a finished run's policy.pt into the package's collector_snapshots/")
    ship.add_argument("--run-dir", type=Path, required=True, help="the --out-dir of a finished `collector train`")
    ship.add_argument("--dest-dir", type=Path, default=None, help="default: adept/collector_snapshots")
    ship.set_defaults(func=run_ship)


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (online SAC steps one env: cpu is fine)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 1 on a shared machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _setup(args: argparse.Namespace) -> None:
    import torch

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def run_train(args: argparse.Namespace) -> int:
    from adept.config import parse_overrides
    from adept.collector import collector_run_dir, make_config, train_collector

    _setup(args)
    overrides = parse_overrides(args.overrides)
    if args.target_return is not None:
        overrides["target_return"] = args.target_return
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    config = make_config(overrides)
    out_dir = args.out_dir if args.out_dir is not None else collector_run_dir(args.env, args.seed)
    command = "python -m adept collector " + shlex.join(sys.argv[sys.argv.index("train"):]) \
        if "train" in sys.argv else ""
    summary = train_collector(args.env, out_dir, config, seed=args.seed, device=args.device,
                              progress=not args.quiet, command=command)
    print(json.dumps({k: summary[k] for k in ("env", "seed", "train_steps", "reached_target", "target_return",
                                              "measured_return_mean", "wall_time_s", "policy_sha256")}))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from adept.collector import evaluate_stochastic, load_collector_snapshot

    _setup(args)
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    snapshot = load_collector_snapshot(args.policy, args.device)
    result = evaluate_stochastic(snapshot.learner, snapshot.env, args.episodes, args.seed, snapshot.learner.device)
    print(json.dumps({"policy": str(args.policy), "sha256": snapshot.sha256, "env": snapshot.env,
                      "episodes": args.episodes, "seed": args.seed, **result}))
    return 0


def run_collect(args: argparse.Namespace) -> int:
    from adept.data.policy_datasets import write_policy_dataset

    _setup(args)
    path, snapshot = write_policy_dataset(args.policy, args.out, size=args.size, seed=args.seed,
                                          progress=not args.quiet)
    print(json.dumps({"out": str(path), "env": snapshot.env, "policy_sha256": snapshot.sha256}))
    return 0


def run_ship(args: argparse.Namespace) -> int:
    from adept.collector import SHIPPED_SNAPSHOT_DIR, ship_collector_snapshot

    entry = ship_collector_snapshot(args.run_dir, args.dest_dir or SHIPPED_SNAPSHOT_DIR)
    print(json.dumps({k: entry[k] for k in ("file", "sha256", "bytes", "train_steps", "reached_target",
                                            "measured_return_mean")}))
    return 0
