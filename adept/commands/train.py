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
        description="Train a method (iql, sac, bc, td3bc, cql, adept-<learner>, diff-<learner>) and write "
                    "eval.csv, train.csv and final.json to --out-dir. Re-running the same command after an "
                    "interruption resumes from the checkpoint in --out-dir.")
    parser.add_argument("--method", required=True, help="e.g. iql, adept-sac, diff-iql, adept-sac_K5")
    add_data_arguments(parser, dataset_required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--world-model", type=Path, default=None, help="world model from `adept world-model`")
    parser.add_argument("--behavior-policy", type=Path, default=None,
                        help="pi_D from `adept behavior-policy` (ADEPT methods)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML with sections run, learner, world_model, adept")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set run.steps=10000 --set learner.beta=3")
    add_compute_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adept.runner import RunInputs, load_train_config, train

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    apply_threads(args)
    config = load_train_config(args.config, args.overrides)
    inputs = RunInputs(method=args.method, env=args.env, dataset=args.dataset, seed=args.seed,
                       out_dir=args.out_dir, data_path=args.data, source=args.source,
                       world_model_path=args.world_model, behavior_policy_path=args.behavior_policy,
                       device=args.device, progress=not args.quiet)
    final = train(inputs, config)
    print(json.dumps({k: final[k] for k in ("method", "env", "dataset", "seed", "final_score",
                                            "best_score", "wall_time_s")}))
    return 0
