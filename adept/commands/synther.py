"""`python -m adept synther`: fit SynthER's diffusion model over transitions on an offline dataset."""
from __future__ import annotations

import argparse
import json

from adept.commands.common import (add_fit_arguments, add_setting_flags, apply_threads, load_data, load_settings,
                                   setting_overrides)


# Shortcuts of the fit's schedule section (the flags of the command before it took settings files).
SYNTHER_TRAINING_FLAGS = {
    "steps": (int, "gradient steps (SynthER: 100,000)"),
    "log_every": (int, "steps between log rows"),
    "checkpoint_every": (int, "steps between resume checkpoints"),
    "check_samples": (int, "samples compared with the data in the report (0: no check)"),
    "sample_steps": (int, "sampler steps of the check (SynthER: 128)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synther", help="fit SynthER's transition diffusion model (resumes if interrupted)",
        description="Fit SynthER's residual-MLP EDM diffusion model over (s, a, r, s', terminal) on D. Settings: "
                    "--config YAML with sections synther (SyntherConfig) and synther_training (SyntherFitConfig: "
                    "steps, log_every, check_samples, ...), --set SECTION.KEY=VALUE. Writes --out (the EMA model, "
                    "which synther-<learner> runs sample from), and next to it .csv (training log), .json (report, "
                    "with a check of samples against the data) and .ckpt (resume state). Re-running the same "
                    "command resumes.")
    add_fit_arguments(parser, out_example="results/synther/hopper.pt", sections=("synther", "synther_training"),
                      set_example="synther.width=256 --set synther_training.steps=50000")
    add_setting_flags(parser, "synther_training", SYNTHER_TRAINING_FLAGS)
    parser.set_defaults(func=run)


def load_synther_settings(config_path, overrides: list[str]):
    """SyntherFitSettings (sections synther, synther_training) from the YAML and --set overrides."""
    from adept.synther_training import SyntherFitSettings

    return load_settings(SyntherFitSettings, config_path, overrides, "synther")


def run(args: argparse.Namespace) -> int:
    from adept.provenance import resolve_device
    from adept.synther_training import fit_synther

    settings = load_synther_settings(args.config, setting_overrides(args, "synther_training"))
    apply_threads(args)
    dataset = load_data(args)
    report = fit_synther(dataset, settings.synther, fit=settings.synther_training, out_path=args.out,
                         device=resolve_device(args.device), seed=args.seed, resume=not args.no_resume,
                         progress=not args.quiet)
    print(json.dumps({"out": str(args.out), "steps_done": report["steps_done"],
                      "final_loss": (report["final"] or {}).get("loss"), "sample_check": report["sample_check"]}))
    return 0
