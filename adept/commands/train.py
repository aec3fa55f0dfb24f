"""`python -m adept train`: one training run of a method on one (env, dataset, seed)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from adept.commands.common import add_compute_arguments, add_data_arguments, apply_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train one method on one dataset and seed (resumes if interrupted)",
        description="Train a method (iql, sac, bc, td3bc, cql, adept-<learner>, diff-<learner>, mopo, combo, "
                    "synther-<learner>, diffuser) and "
                    "write eval.csv, train.csv and final.json to --out-dir. Re-running the same command after an "
                    "interruption resumes from the checkpoint in --out-dir; re-running a completed run does "
                    "nothing (--restart trains it again). One process per --out-dir: a second one fails at once.")
    parser.add_argument("--method", required=True, help="e.g. iql, adept-sac, diff-iql, adept-sac_K5, mopo")
    add_data_arguments(parser, dataset_required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--world-model", type=Path, default=None, help="world model from `adept world-model`")
    parser.add_argument("--behavior-policy", type=Path, default=None,
                        help="pi_D from `adept behavior-policy` (ADEPT methods)")
    parser.add_argument("--ensemble", type=Path, default=None,
                        help="dynamics ensemble from `adept ensemble` (mopo, combo)")
    parser.add_argument("--synther", type=Path, default=None,
                        help="SynthER transition model from `adept synther` (synther-<learner>)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML with sections run, learner, world_model, adept, model_rollouts, upsampling")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set run.steps=10000 --set learner.beta=3")
    parser.add_argument("--restart", action="store_true",
                        help="discard what --out-dir holds (a completed run or a checkpoint) and train from step 0")
    add_compute_arguments(parser)
    parser.add_argument("--compile", choices=["off", "on", "auto"], default=None,
                        help="compile the update steps (same as --set run.compile=...; default: the config's, auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def overrides(args: argparse.Namespace) -> list[str]:
    """The --set assignments, with --compile as run.compile."""
    return args.overrides + ([f"run.compile='{args.compile}'"] if args.compile else [])


def run(args: argparse.Namespace) -> int:
    from adept.runner import RunInputs, load_train_config, train

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    apply_threads(args)
    config = load_train_config(args.config, overrides(args))
    inputs = RunInputs(method=args.method, env=args.env, dataset=args.dataset, seed=args.seed,
                       out_dir=args.out_dir, data_path=args.data, source=args.source,
                       world_model_path=args.world_model, behavior_policy_path=args.behavior_policy,
                       ensemble_path=args.ensemble, synther_path=args.synther,
                       device=args.device, progress=not args.quiet, restart=args.restart)
    final = train(inputs, config)
    print(json.dumps({k: final[k] for k in ("method", "env", "dataset", "seed", "final_score",
                                            "best_score", "wall_time_s")}))
    return 0
