"""`python -m adept ensemble`: fit the probabilistic dynamics ensemble of MOPO and COMBO on an offline dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from adept.commands.common import add_compute_arguments, add_data_arguments, apply_threads, load_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble", help="fit the dynamics ensemble of MOPO / COMBO (resumes if interrupted)",
        description="Fit E probabilistic MLPs over (s' - s, r) on D until their held-out MSE stops improving, "
                    "then pick the elites. Writes --out (the ensemble), and next to it .csv (one row per "
                    "evaluation), .json (report) and .ckpt (resume state). Re-running the same command resumes.")
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="ensemble file to write, e.g. results/ens/hopper.pt")
    parser.add_argument("--config", type=Path, default=None, help="YAML whose `ensemble:` section holds "
                        "EnsembleConfig fields")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="ensemble.KEY=VALUE",
                        help="override a config value, e.g. --set ensemble.num_members=5")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="gradient steps at most")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="steps between held-out evaluations (default: one pass over the training rows)")
    parser.add_argument("--patience", type=int, default=5,
                        help="stop after this many evaluations without a member improving (MBPO: 5)")
    parser.add_argument("--min-improvement", type=float, default=0.01,
                        help="relative held-out improvement that counts (MBPO: 0.01)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--max-holdout", type=int, default=1000, help="held-out transitions at most")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    add_compute_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def load_ensemble_config(config_path: Path | None, overrides: list[str]):
    """EnsembleConfig from the YAML's `ensemble:` section (other sections are ignored) plus
    `ensemble.KEY=VALUE` overrides."""
    from adept.config import ConfigError, from_dict, load_yaml, merge, parse_overrides
    from adept.ensemble import EnsembleConfig

    override_values = parse_overrides(overrides)
    other = sorted(set(override_values) - {"ensemble"})
    if other:
        raise ConfigError(f"`adept ensemble` only takes ensemble.KEY=VALUE overrides, got sections {other}")
    values = merge(load_yaml(config_path) if config_path else {}, override_values)
    return from_dict(EnsembleConfig, values.get("ensemble") or {}, "ensemble")


def run(args: argparse.Namespace) -> int:
    from adept.ensemble_training import fit_ensemble
    from adept.runner import resolve_device

    config = load_ensemble_config(args.config, args.overrides)
    apply_threads(args)
    dataset = load_data(args)
    report = fit_ensemble(dataset, config, device=resolve_device(args.device), seed=args.seed, out_path=args.out,
                          max_steps=args.max_steps, eval_every=args.eval_every, patience=args.patience,
                          min_improvement=args.min_improvement, holdout_fraction=args.holdout_fraction,
                          max_holdout=args.max_holdout, checkpoint_every=args.checkpoint_every,
                          resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps({"out": str(args.out), "steps_done": report["steps_done"], "converged": report["converged"],
                      "elites": report["elites"], "elite_heldout_mse_mean": report["elite_heldout_mse_mean"]}))
    return 0
