"""Arguments shared by the commands that train something: the dataset and the compute."""
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
