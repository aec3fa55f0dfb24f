"""`python -m adept synther`: fit SynthER's diffusion model over transitions on an offline dataset."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from adept.commands.common import add_compute_arguments, add_data_arguments, apply_threads, load_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synther", help="fit SynthER's transition diffusion model (resumes if interrupted)",
        description="Fit SynthER's residual-MLP EDM diffusion model over (s, a, r, s', terminal) on D. Writes --out "
                    "(the EMA model, which synther-<learner> runs sample from), and next to it .csv (training log), "
                    ".json (report, with a check of samples against the data) and .ckpt (resume state). Re-running "
                    "the same command resumes.")
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="model file to write, e.g. results/synther/hopper.pt")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML whose `synther:` section holds SyntherConfig fields")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="synther.KEY=VALUE",
                        help="override a config value, e.g. --set synther.width=256")
    parser.add_argument("--steps", type=int, default=100_000, help="gradient steps (SynthER: 100,000)")
    parser.add_argument("--log-every", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--check-samples", type=int, default=10_000,
                        help="samples compared with the data in the report (0: no check)")
    parser.add_argument("--sample-steps", type=int, default=128, help="sampler steps of the check (SynthER: 128)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    add_compute_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def load_synther_config(config_path: Path | None, overrides: list[str]):
    """SyntherConfig from the YAML's `synther:` section (other sections are ignored) plus synther.KEY=VALUE."""
    from adept.config import ConfigError, from_dict, load_yaml, merge, parse_overrides
    from adept.synther import SyntherConfig

    override_values = parse_overrides(overrides)
    other = sorted(set(override_values) - {"synther"})
    if other:
        raise ConfigError(f"`adept synther` only takes synther.KEY=VALUE overrides, got sections {other}")
    values = merge(load_yaml(config_path) if config_path else {}, override_values)
    return from_dict(SyntherConfig, values.get("synther") or {}, "synther")


def run(args: argparse.Namespace) -> int:
    from adept.runner import resolve_device
    from adept.synther_training import fit_synther

    config = load_synther_config(args.config, args.overrides)
    apply_threads(args)
    dataset = load_data(args)
    report = fit_synther(dataset, config, out_path=args.out, steps=args.steps, device=resolve_device(args.device),
                         seed=args.seed, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                         check_samples=args.check_samples, sample_steps=args.sample_steps,
                         resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps({"out": str(args.out), "steps_done": report["steps_done"],
                      "final_loss": (report["final"] or {}).get("loss"), "sample_check": report["sample_check"]}))
    return 0
