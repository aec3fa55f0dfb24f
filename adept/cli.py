"""`python -m adept <command>` (also the `adept` console script).

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int | None` as the parser default. Adding a command is one line in that tuple.
Expected failures (bad names, missing files, bad configuration) print `error: <message>` and exit
with status 2, without a traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from adept.config import ConfigError

COMMAND_MODULES = (
    "adept.commands.datasets",
    "adept.commands.evaluate",
    "adept.commands.train",
    "adept.commands.world_model",
    "adept.commands.behavior_policy",
    "adept.commands.behavior_agent",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adept", description="ADEPT reproduction harness: datasets, training, evaluation, reports.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
