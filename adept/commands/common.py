"""Arguments shared by the commands that train something: the dataset, the compute, and the settings
of the model fits (--config FILE with sections, --set SECTION.KEY=VALUE) read into their dataclasses."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_data_arguments(parser: argparse.ArgumentParser, dataset_required: bool = False) -> None:
    parser.add_argument("--env", required=True, help="halfcheetah, hopper or walker2d")
    parser.add_argument("--dataset", required=dataset_required, default=None,
                        help="random, medium or medium-replay" + ("" if dataset_required else " (needed without --data)"))
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset hdf5 file in the D4RL layout (default: locate by --source and --dataset)")
    parser.add_argument("--source", default="d4rl", help="d4rl, generated or minari (used without --data)")


def load_data(args: argparse.Namespace):
    """The OfflineDataset named by add_data_arguments' flags."""
    from adept.data import load_dataset, load_file

    if args.data is not None:
        return load_file(args.data, env=args.env)
    if args.dataset is None:
        raise ValueError("pass --data PATH.hdf5 or --dataset (random, medium or medium-replay) with --source")
    return load_dataset(args.env, args.dataset, source=args.source)


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, or OMP_NUM_THREADS as Snakemake sets "
                             "it); 1 is fastest for small networks on a shared machine")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads is None:
        return
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


# ------------------------------------------------------------------------- the model fits' settings

def add_fit_arguments(parser: argparse.ArgumentParser, *, out_example: str, sections: tuple[str, ...],
                      set_example: str, resumable: bool = True) -> None:
    """The arguments every fit command (world-model, ensemble, synther, behavior-policy) takes: the
    dataset, --seed, --out, the settings (--config FILE with the `sections`, --set SECTION.KEY=VALUE),
    resume control, the compute and --quiet."""
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="held-out split, initialization and batches")
    parser.add_argument("--out", type=Path, required=True, help=f"model file to write, e.g. {out_example}")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML with the section(s) {', '.join(sections)} (other sections are refused)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"override a setting, e.g. --set {set_example}")
    if resumable:
        parser.add_argument("--no-resume", "--restart", dest="no_resume", action="store_true",
                            help="ignore an existing checkpoint and start the fit over")
    add_compute_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def add_setting_flags(parser: argparse.ArgumentParser, section: str, flags: dict[str, tuple]) -> None:
    """Shortcut flags of the fit's schedule, `{field: (type, help)}`: --log-every N is the same as
    --set SECTION.log_every=N and wins over --config and --set. A type None makes a switch (true), a
    tuple a choice. Declared here, not read from the dataclass, so that building the parser imports no
    torch; tests check that every shortcut is a field of the section's dataclass."""
    for name, (kind, help_text) in flags.items():
        flag, dest = f"--{name.replace('_', '-')}", f"setting_{name}"
        help_text = f"{help_text} (same as --set {section}.{name}=...)"
        if kind is None:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=help_text)
        elif isinstance(kind, tuple):
            parser.add_argument(flag, dest=dest, choices=list(kind), default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=dest, type=kind, default=None, metavar="N", help=help_text)


def setting_overrides(args: argparse.Namespace, section: str) -> list[str]:
    """The --set assignments, then the add_setting_flags shortcuts given, as SECTION.KEY=VALUE."""
    import json

    shortcuts = [f"{section}.{name.removeprefix('setting_')}={json.dumps(value)}"
                 for name, value in vars(args).items() if name.startswith("setting_") and value is not None]
    return list(args.overrides) + shortcuts


def load_settings(settings: type, config_path: Path | None, overrides: list[str] | None, command: str):
    """The dataclass `settings` (its fields are the sections, as runner.TrainConfig's) from the YAML file and
    --set SECTION.KEY=VALUE overrides. A wrong section, key or value is a one-line ConfigError naming it
    (and the file, when the file holds it) with the valid ones."""
    import dataclasses

    from adept.config import ConfigError, from_dict, load_yaml, merge, parse_overrides
    from adept.errors import format_error

    sections = sorted(f.name for f in dataclasses.fields(settings))

    def build(values: dict):
        unknown = sorted(set(values) - set(sections))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown} for `adept {command}`; valid sections are "
                              f"{sections}")
        return from_dict(settings, values)

    values = load_yaml(config_path) if config_path else {}
    if config_path:  # the file on its own first, so its errors name it
        try:
            build(values)
        except ConfigError as err:
            raise ConfigError(format_error(str(err), config_path, "fix that entry of the file")) from None
    return build(merge(values, parse_overrides(overrides)))
