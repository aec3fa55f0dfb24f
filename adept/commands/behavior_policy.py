"""`python -m adept behavior-policy`: fit pi_D, the behaviour policy of an offline dataset, for ADEPT's
importance weights pi(a|s) / pi_D(a|s)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from adept.commands.common import add_compute_arguments, add_data_arguments, apply_threads, load_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "behavior-policy", help="fit the behaviour policy pi_D of a dataset (tanh-Gaussian BC)",
        description="Fit pi_D by maximum likelihood (baselines.bc) on all but a held-out fraction of the "
                    "transitions and keep the parameters with the lowest held-out negative log-likelihood "
                    "(never selected on environment return). Writes --out (load it with "
                    "baselines.load_learner) and a JSON report with the NLL curves next to it (.json).")
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="held-out split, initialization and batches")
    parser.add_argument("--out", type=Path, required=True, help="policy file to write, e.g. results/pi_D/hopper.pt")
    parser.add_argument("--steps", type=int, default=100_000, help="maximum gradient steps")
    parser.add_argument("--eval-every", type=int, default=2_000, help="steps between held-out evaluations")
    parser.add_argument("--patience", type=int, default=10,
                        help="stop after this many evaluations without a better held-out NLL (0: never)")
    parser.add_argument("--holdout-fraction", type=float, default=0.05)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a baselines.bc.BCConfig field, e.g. --set hidden_dim=512 --set lr=1e-4")
    add_compute_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adept.config import ConfigError, parse_overrides
    from adept.locks import output_file_lock

    overrides = parse_overrides(args.overrides)
    nested = sorted(key for key, value in overrides.items() if isinstance(value, dict))
    if nested:
        raise ConfigError(f"--set takes BCConfig fields as KEY=VALUE (e.g. lr=1e-4), got sections {nested}")
    apply_threads(args)
    with output_file_lock(args.out, f"pi_D {args.out}",
                     "wait for that fit to finish (or stop it), or choose another --out"):
        return _fit(args, overrides)


def _fit(args: argparse.Namespace, overrides: dict) -> int:
    from adept.outputs import atomic_write_text
    from adept.runner import resolve_device
    from baselines import fit_behavior_policy, save_learner

    dataset = load_data(args)

    def show(record: dict) -> None:
        print(f"step {record['step']:>8}  train NLL {record['train_nll']:8.4f}  held-out NLL "
              f"{record['heldout_nll']:8.4f}  (best {record['best_heldout_nll']:.4f} at step {record['best_step']})",
              flush=True)

    learner, report = fit_behavior_policy(
        dataset.observations, dataset.actions, config=overrides, device=resolve_device(args.device),
        seed=args.seed, max_steps=args.steps, eval_every=args.eval_every, holdout_fraction=args.holdout_fraction,
        patience=args.patience or None, progress=None if args.quiet else show)
    report.update({"env": dataset.env, "dataset": dataset.dataset, "source": dataset.source,
                   "data_path": str(dataset.path) if dataset.path else None})
    save_learner(args.out, learner, trained_on={"env": dataset.env, "dataset": dataset.dataset,
                                                "source": dataset.source})
    report_path = args.out.with_suffix(".json")
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    print(json.dumps({"out": str(args.out), "report": str(report_path), "best_step": report["best_step"],
                      "best_heldout_nll": report["best_heldout_nll"], "steps_trained": report["steps_trained"]}))
    return 0
