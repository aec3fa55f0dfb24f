"""`python -m adept datasets generate|fetch|validate|inspect`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from adept.data import DATASET_NAMES, SOURCE_NAMES, OfflineDataset, fetch_d4rl, generate, load_dataset, load_file
from adept.data.generated import generated_path
from adept.data.hdf5 import flatten_nested
from adept.envs import ENV_NAMES

ENV_HELP = f"one of {', '.join(ENV_NAMES)}"
DATASET_HELP = f"one of {', '.join(DATASET_NAMES)}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("datasets", help="generate, download, validate and inspect offline datasets")
    actions = parser.add_subparsers(dest="action", required=True, metavar="action")

    gen = actions.add_parser("generate", help="make a D4RL-recipe dataset locally with the gymnasium v4 envs",
                             description="Generate a dataset (source=generated) and print its path.")
    gen.add_argument("--env", required=True, help=ENV_HELP)
    gen.add_argument("--dataset", required=True, help=DATASET_HELP)
    gen.add_argument("--size", type=int, default=None, help="transitions (default: the recipe's, 1M for random)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", type=Path, default=None,
                     help="output file (default: $ADEPT_DATA_DIR or ~/.adept/datasets, generated/{env}-{dataset}-seed{seed}[-n{size}].hdf5)")
    gen.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    gen.set_defaults(func=run_generate)

    fetch = actions.add_parser("fetch", help="download an official D4RL v2 file",
                               description="Download (if missing) and validate a D4RL v2 file; print its path. "
                                           "Sources in order: D4RL's server, the mirrors in $ADEPT_D4RL_MIRRORS "
                                           "(URL templates with {filename}, or folders), the Internet Archive's "
                                           "capture; an interrupted download resumes from its .part file.")
    fetch.add_argument("--env", required=True, help=ENV_HELP)
    fetch.add_argument("--dataset", required=True, help=DATASET_HELP)
    fetch.add_argument("--dir", type=Path, default=None, help="folder (default: $D4RL_DATASET_DIR or ~/.d4rl/datasets)")
    fetch.set_defaults(func=run_fetch)

    validate = actions.add_parser("validate", help="check a D4RL-layout file (keys, lengths, dtypes, dims, checksums)")
    validate.add_argument("path", type=Path)
    validate.add_argument("--env", required=True, help=ENV_HELP)
    validate.set_defaults(func=run_validate)

    inspect = actions.add_parser("inspect", help="summarize a dataset: transitions, episodes, returns, scores, metadata",
                                 description="Summarize a file (PATH) or a dataset by name (--env, --dataset, --source).")
    inspect.add_argument("path", type=Path, nargs="?", default=None)
    inspect.add_argument("--env", default=None, help=f"{ENV_HELP} (default for PATH: from its metadata or name)")
    inspect.add_argument("--dataset", default=None, help=f"{DATASET_HELP} (without PATH)")
    inspect.add_argument("--source", default="d4rl", help=f"one of {', '.join(SOURCE_NAMES)} (without PATH)")
    inspect.add_argument("--seed", type=int, default=0, help="generated source: generator seed")
    inspect.add_argument("--size", type=int, default=None, help="generated source: number of transitions")
    inspect.set_defaults(func=run_inspect)


def run_generate(args: argparse.Namespace) -> None:
    out = args.out or generated_path(args.env, args.dataset, args.seed, args.size)
    if out.exists() and not args.force:
        made = load_dataset(args.env, args.dataset, "generated", path=out).metadata  # validates
        wanted = {"seed": args.seed} if args.size is None else {"seed": args.seed, "size": args.size}
        if any(made.get(key) != value for key, value in wanted.items()):
            raise ValueError(f"{out} exists but was generated with seed {made.get('seed')} and size "
                             f"{made.get('size')}; pass --force to regenerate it")
        print(f"{out} exists and is valid; pass --force to regenerate it", file=sys.stderr)
    else:
        generate(args.env, args.dataset, seed=args.seed, size=args.size, out=out)
    print(out)


def run_fetch(args: argparse.Namespace) -> None:
    path = fetch_d4rl(args.env, args.dataset, data_dir=args.dir)
    load_dataset(args.env, args.dataset, "d4rl", path=path)  # validates
    print(path)


def run_validate(args: argparse.Namespace) -> None:
    data = load_file(args.path, env=args.env)
    print(f"ok: {args.path}: {len(data)} transitions, {data.num_episodes} episodes, "
          f"obs_dim {data.obs_dim}, act_dim {data.act_dim} ({data.env})")


def run_inspect(args: argparse.Namespace) -> None:
    if args.path is not None:
        data = load_file(args.path, env=args.env)
    else:
        if args.env is None or args.dataset is None:
            raise ValueError("inspect needs a PATH, or --env and --dataset (with --source, default d4rl)")
        data = load_dataset(args.env, args.dataset, args.source, size=args.size, seed=args.seed)
    print(format_summary(data))


def format_summary(data: OfflineDataset) -> str:
    s = data.summary()
    lines = [
        f"path: {data.path}",
        f"env: {s['env']}  dataset: {s['dataset']}  source: {s['source']}",
        f"transitions: {s['transitions']}  episodes: {s['episodes']}  terminals: {s['terminals']}  "
        f"timeouts: {s['timeouts']}  unflagged boundaries: {s['unflagged_boundaries']}",
        f"episode length: mean {s['episode_length_mean']:.1f}",
        f"episode return: mean {s['return_mean']:.2f}  min {s['return_min']:.2f}  max {s['return_max']:.2f}",
        f"normalized score: mean {s['score_mean']:.2f}  min {s['score_min']:.2f}  max {s['score_max']:.2f}",
        f"infos: {', '.join(f'{k} {v.shape}' for k, v in data.infos.items()) or '-'}",
        "metadata:",
    ]
    for key, value in flatten_nested(data.metadata).items():
        if key.startswith("sha256/"):
            continue  # verified on load
        shown = f"array {value.shape} {value.dtype}" if isinstance(value, np.ndarray) else value
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)
