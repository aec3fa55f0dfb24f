"""`python -m adept behavior-policy`: fit pi_D, the behaviour policy of an offline dataset, for ADEPT's
importance weights pi(a|s) / pi_D(a|s)."""
from __future__ import annotations

import argparse
import json

from adept.commands.common import (add_fit_arguments, add_setting_flags, apply_threads, load_data, load_settings,
                                   setting_overrides)


# Shortcuts of the fit's schedule section (the flags of the command before it took settings files).
BEHAVIOR_POLICY_FLAGS = {
    "steps": (int, "maximum gradient steps"),
    "eval_every": (int, "steps between held-out evaluations"),
    "patience": (int, "stop after this many evaluations without a better held-out NLL (0: never)"),
    "holdout_fraction": (float, "fraction of transitions held out"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "behavior-policy", help="fit the behaviour policy pi_D of a dataset (tanh-Gaussian BC)",
        description="Fit pi_D by maximum likelihood (baselines.bc) on all but a held-out fraction of the "
                    "transitions and keep the parameters with the lowest held-out negative log-likelihood "
                    "(never selected on environment return). Settings: --config YAML with the section "
                    "behavior_policy (BehaviorPolicyFitConfig: steps, eval_every, patience, holdout_fraction, "
                    "learner: BCConfig fields), --set SECTION.KEY=VALUE. Writes --out (load it with "
                    "baselines.load_learner) and a JSON report with the NLL curves next to it (.json).")
    add_fit_arguments(parser, out_example="results/pi_D/hopper.pt", sections=("behavior_policy",),
                      set_example="behavior_policy.learner.hidden_dim=512 --set behavior_policy.steps=50000",
                      resumable=False)
    add_setting_flags(parser, "behavior_policy", BEHAVIOR_POLICY_FLAGS)
    parser.set_defaults(func=run)


def load_behavior_policy_settings(config_path, overrides: list[str]):
    """BehaviorPolicyFitSettings (section behavior_policy) from the YAML and --set overrides."""
    from adept.behavior_policy_training import BehaviorPolicyFitSettings

    return load_settings(BehaviorPolicyFitSettings, config_path, overrides, "behavior-policy")


def run(args: argparse.Namespace) -> int:
    from adept.locks import output_file_lock

    settings = load_behavior_policy_settings(args.config, setting_overrides(args, "behavior_policy"))
    apply_threads(args)
    with output_file_lock(args.out, f"pi_D {args.out}",
                          "wait for that fit to finish (or stop it), or choose another --out"):
        return _fit(args, settings.behavior_policy)


def _fit(args: argparse.Namespace, fit) -> int:
    from adept.behavior_policy_training import fit_behavior_policy
    from adept.outputs import atomic_write_text
    from adept.provenance import resolve_device
    from baselines import save_learner

    dataset = load_data(args)

    def show(record: dict) -> None:
        print(f"step {record['step']:>8}  train NLL {record['train_nll']:8.4f}  held-out NLL "
              f"{record['heldout_nll']:8.4f}  (best {record['best_heldout_nll']:.4f} at step {record['best_step']})",
              flush=True)

    learner, report = fit_behavior_policy(
        dataset.observations, dataset.actions, config=fit.learner, device=resolve_device(args.device),
        seed=args.seed, max_steps=fit.steps, eval_every=fit.eval_every, holdout_fraction=fit.holdout_fraction,
        patience=fit.patience or None, progress=None if args.quiet else show)
    report.update({"env": dataset.env, "dataset": dataset.dataset, "source": dataset.source,
                   "data_path": str(dataset.path) if dataset.path else None})
    save_learner(args.out, learner, trained_on={"env": dataset.env, "dataset": dataset.dataset,
                                                "source": dataset.source})
    report_path = args.out.with_suffix(".json")
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    print(json.dumps({"out": str(args.out), "report": str(report_path), "best_step": report["best_step"],
                      "best_heldout_nll": report["best_heldout_nll"], "steps_trained": report["steps_trained"]}))
    return 0
