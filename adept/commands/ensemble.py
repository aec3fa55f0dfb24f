"""`python -m adept ensemble`: fit the probabilistic dynamics ensemble of MOPO and COMBO on an offline dataset."""
from __future__ import annotations

import argparse
import json

from adept.commands.common import (add_fit_arguments, add_setting_flags, apply_threads, load_data, load_settings,
                                   setting_overrides)


# Shortcuts of the fit's schedule section (the flags of the command before it took settings files).
ENSEMBLE_TRAINING_FLAGS = {
    "max_steps": (int, "gradient steps at most"),
    "eval_every": (int, "steps between held-out evaluations (default: one pass over the training rows)"),
    "patience": (int, "stop after this many evaluations without a member improving (MBPO: 5)"),
    "min_improvement": (float, "relative held-out improvement that counts (MBPO: 0.01)"),
    "holdout_fraction": (float, "fraction of transitions held out"),
    "max_holdout": (int, "held-out transitions at most"),
    "checkpoint_every": (int, "steps between resume checkpoints"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble", help="fit the dynamics ensemble of MOPO / COMBO (resumes if interrupted)",
        description="Fit E probabilistic MLPs over (s' - s, r) on D until their held-out MSE stops improving, "
                    "then pick the elites. Settings: --config YAML with sections ensemble (EnsembleConfig) and "
                    "ensemble_training (EnsembleFitConfig: max_steps, patience, ...), --set SECTION.KEY=VALUE. "
                    "Writes --out (the ensemble), and next to it .csv (one row per evaluation), .json (report) "
                    "and .ckpt (resume state). Re-running the same command resumes.")
    add_fit_arguments(parser, out_example="results/ens/hopper.pt", sections=("ensemble", "ensemble_training"),
                      set_example="ensemble.num_members=5 --set ensemble_training.max_steps=100000")
    add_setting_flags(parser, "ensemble_training", ENSEMBLE_TRAINING_FLAGS)
    parser.set_defaults(func=run)


def load_ensemble_settings(config_path, overrides: list[str]):
    """EnsembleFitSettings (sections ensemble, ensemble_training) from the YAML and --set overrides."""
    from adept.ensemble_training import EnsembleFitSettings

    return load_settings(EnsembleFitSettings, config_path, overrides, "ensemble")


def run(args: argparse.Namespace) -> int:
    from adept.ensemble_training import fit_ensemble
    from adept.provenance import resolve_device

    settings = load_ensemble_settings(args.config, setting_overrides(args, "ensemble_training"))
    apply_threads(args)
    dataset = load_data(args)
    report = fit_ensemble(dataset, settings.ensemble, fit=settings.ensemble_training,
                          device=resolve_device(args.device), seed=args.seed, out_path=args.out,
                          resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps({"out": str(args.out), "steps_done": report["steps_done"], "converged": report["converged"],
                      "elites": report["elites"], "elite_heldout_mse_mean": report["elite_heldout_mse_mean"]}))
    return 0
