"""`python -m adept <command>` (also the `adept` console script).

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int | None` as the parser default. Adding a command is one line in that tuple.
Failures caused by the input or the machine (bad names, missing or corrupt files, bad configuration,
a full disk, an unwritable or busy output, divergence) print one line
`error: <what> (<file>): <how to fix>` and exit with status 2 (130 when interrupted), without a
traceback; `--debug` (or ADEPT_DEBUG=1) shows it. Anything else is a bug and keeps its traceback.
Options must be spelled out: no parser accepts abbreviations (`--step` is not `--steps`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from adept.config import ConfigError
from adept.errors import UserError, describe_os_error, format_error

COMMAND_MODULES = (
    "adept.commands.datasets",
    "adept.commands.evaluate",
    "adept.commands.train",
    "adept.commands.world_model",
    "adept.commands.ensemble",
    "adept.commands.synther",
    "adept.commands.behavior_policy",
    "adept.commands.collector",
)


class Parser(argparse.ArgumentParser):
    """The harness's parsers: full option names only, `--debug` everywhere, one-line usage errors.

    Subparsers inherit the class (argparse's add_subparsers uses type(self)), so every command gets it.
    """

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False  # a typo like --step must fail, not match --steps
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error (also ADEPT_DEBUG=1)")
        self.set_defaults(parser_=self)  # the innermost command's parser, to report unknown arguments

    def error(self, message: str):
        self.exit(2, f"error: {format_error(message, self.prog, f'see `{self.prog} --help`')}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="adept", description="ADEPT reproduction harness: datasets, training, evaluation, reports.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


# What a command's failure caused by its input or the machine raises (UserError and ConfigError are
# ValueErrors; DivergenceError is a UserError; OSError covers permissions, full disks, missing files).
REPORTED_ERRORS = (UserError, ConfigError, ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # reported by the command's own parser, whose --help lists what it takes
        args.parser_.error(f"unrecognized arguments: {' '.join(unknown)}")
    debug = getattr(args, "debug", False) or os.environ.get("ADEPT_DEBUG", "0") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted: rerun the same command to resume (training resumes from its last "
              "checkpoint)", file=sys.stderr)
        return 130
    except REPORTED_ERRORS as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, UserError):
        return describe_os_error(err)
    return " ".join(str(err).split())
