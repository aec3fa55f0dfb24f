"""`python -m adept world-model`: the initial fit of the guided diffusion world model on an offline dataset."""
from __future__ import annotations

import argparse
import json

from adept.commands.common import (add_fit_arguments, add_setting_flags, apply_threads, load_data, load_settings,
                                   setting_overrides)


# Shortcuts of the fit's schedule section (the flags of the command before it took settings files).
WORLD_MODEL_TRAINING_FLAGS = {
    "steps": (int, "gradient steps (paper: 1e6)"),
    "log_every": (int, "steps between log rows / held-out evaluations"),
    "checkpoint_every": (int, "steps between resume checkpoints"),
    "holdout_fraction": (float, "fraction of transitions held out to judge convergence"),
    "early_stop": (None, "stop once the held-out next-state error stops improving (see the report's rule)"),
    "compile": (("off", "on", "auto"), "compile the Adam step and the sampler's denoiser (baselines/compile.py; "
                                      "auto: where measured faster)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world-model", help="train the diffusion world model on an offline dataset (resumes if interrupted)",
        description="Fit the world model (eps_theta + r_eta) on D with unit importance weights, Algorithm 1's "
                    "initialization. Settings: --config YAML with sections world_model (WorldModelConfig) and "
                    "world_model_training (WorldModelFitConfig: steps, log_every, ...), --set SECTION.KEY=VALUE. "
                    "Writes --out (the model, with its held-out split), and next to it .csv (log), .json (report "
                    "with held-out one-step errors) and .ckpt (resume state). Re-running the same command resumes.")
    add_fit_arguments(parser, out_example="results/wm/hopper.pt", sections=("world_model", "world_model_training"),
                      set_example="world_model.guidance_weight=0.5 --set world_model_training.steps=100000")
    add_setting_flags(parser, "world_model_training", WORLD_MODEL_TRAINING_FLAGS)
    parser.set_defaults(func=run)


def load_world_model_settings(config_path, overrides: list[str]):
    """WorldModelFitSettings (sections world_model, world_model_training) from the YAML and --set overrides."""
    from adept.world_model_training import WorldModelFitSettings

    return load_settings(WorldModelFitSettings, config_path, overrides, "world-model")


def run(args: argparse.Namespace) -> int:
    from adept.provenance import resolve_device
    from adept.world_model_training import train_world_model

    settings = load_world_model_settings(args.config, setting_overrides(args, "world_model_training"))
    apply_threads(args)
    dataset = load_data(args)
    report = train_world_model(dataset, settings.world_model, fit=settings.world_model_training,
                               device=resolve_device(args.device), seed=args.seed, out_path=args.out,
                               resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps({"out": str(args.out), "steps_done": report["steps_done"], "converged": report["converged"],
                      "final": report["final"]}))
    return 0
