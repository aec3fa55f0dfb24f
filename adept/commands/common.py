"""Arguments shared by the commands that train something."""
from __future__ import annotations

import argparse


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
