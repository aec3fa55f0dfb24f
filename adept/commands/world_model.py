"""`python -m adept world-model`: the initial fit of the guided diffusion world model on an offline dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from adept.commands.common import add_compute_arguments, add_data_arguments, apply_threads, load_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world-model", help="train the diffusion world model on an offline dataset (resumes if interrupted)",
        description="Fit the world model (eps_theta + r_eta) on D with unit importance weights, Algorithm 1's "
                    "initialization. Writes --out (the model), and next to it .csv (log), .json (report with "
                    "held-out one-step errors) and .ckpt (resume state). Re-running the same command resumes.")
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="model file to write, e.g. results/wm/hopper.pt")
    parser.add_argument("--config", type=Path, default=None, help="YAML whose `world_model:` section holds "
                        "WorldModelConfig fields")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="world_model.KEY=VALUE",
                        help="override a config value, e.g. --set world_model.guidance_weight=0.5")
    parser.add_argument("--steps", type=int, default=1_000_000, help="gradient steps (paper: 1e6)")
    parser.add_argument("--log-every", type=int, default=1000, help="steps between log rows / held-out evaluations")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--holdout-fraction", type=float, default=0.05,
                        help="fraction of transitions held out to judge convergence")
    parser.add_argument("--early-stop", action="store_true",
                        help="stop once the held-out next-state error stops improving (see the report's rule)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    add_compute_arguments(parser)
    parser.add_argument("--compile", choices=["off", "on", "auto"], default="auto",
                        help="compile the Adam step and the sampler's denoiser (baselines/compile.py; auto: where measured faster)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def load_world_model_config(config_path: Path | None, overrides: list[str]):
    """WorldModelConfig from the YAML's `world_model:` section (other sections are ignored) plus
    `world_model.KEY=VALUE` overrides."""
    from adept.config import ConfigError, from_dict, load_yaml, merge, parse_overrides
    from adept.errors import format_error
    from adept.world_model import WorldModelConfig

    override_values = parse_overrides(overrides)
    other = sorted(set(override_values) - {"world_model"})
    if other:
        raise ConfigError(f"`adept world-model` only takes world_model.KEY=VALUE overrides, got sections {other}")
    from_file = load_yaml(config_path) if config_path else {}
    if config_path:  # the file on its own first, so its errors name it
        try:
            from_dict(WorldModelConfig, from_file.get("world_model") or {}, "world_model")
        except ConfigError as err:
            raise ConfigError(format_error(str(err), config_path, "fix that entry of the file")) from None
    values = merge(from_file, override_values)
    return from_dict(WorldModelConfig, values.get("world_model") or {}, "world_model")


def run(args: argparse.Namespace) -> int:
    from adept.runner import resolve_device
    from adept.world_model_training import train_world_model

    config = load_world_model_config(args.config, args.overrides)
    apply_threads(args)
    dataset = load_data(args)
    report = train_world_model(dataset, config, steps=args.steps, device=resolve_device(args.device),
                               seed=args.seed, out_path=args.out, log_every=args.log_every,
                               checkpoint_every=args.checkpoint_every, holdout_fraction=args.holdout_fraction,
                               early_stop=args.early_stop, resume=not args.no_resume, progress=not args.quiet,
                               compile=args.compile)
    print(json.dumps({"out": str(args.out), "steps_done": report["steps_done"], "converged": report["converged"],
                      "final": report["final"]}))
    return 0
