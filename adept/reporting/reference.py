"""What the paper reports (Tables 1 and 4) and how the harness's names map onto the paper's.

The CSVs in `reference/` are transcriptions of the paper's tables (copied from the project's shared
paper folder). Scores are D4RL normalized scores on the 0-100 scale.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import Iterable

# Row order of the paper's tables: the three datasets, each with halfcheetah, walker2d, hopper.
PAPER_ENV_ORDER = ("halfcheetah", "walker2d", "hopper")
PAPER_DATASET_ORDER = ("random", "medium", "medium-replay")

# Table 1 columns in the paper's order, and the harness methods that reproduce them.
TABLE1_COLUMNS = ("SAC", "TD3+BC", "CQL", "IQL", "MOPO", "COMBO", "SynthER", "Diffuser", "ADEPT-IQL", "ADEPT-SAC")
TABLE1_COLUMN_OF_METHOD = {
    "sac": "SAC", "td3bc": "TD3+BC", "cql": "CQL", "iql": "IQL", "adept-iql": "ADEPT-IQL", "adept-sac": "ADEPT-SAC",
    "mopo": "MOPO", "combo": "COMBO", "diffuser": "Diffuser",
    # SynthER's offline results are TD3+BC and IQL on the upsampled data; the paper's column matches IQL's.
    "synther-iql": "SynthER", "synther-td3bc": "SynthER",
}
# Table 4 columns (ablations of ADEPT-SAC); the workflow config names which run reproduces which.
TABLE4_COLUMNS = ("baseline", "K=5", "K=20", "B_m=256", "B_m=2048", "no_clipping")

Task = tuple[str, str]  # (env, dataset)


@dataclass(frozen=True)
class ReportedScore:
    mean: float
    std: float | None = None  # the paper gives a std only for its own (ADEPT) columns


def paper_task_order(envs: Iterable[str], datasets: Iterable[str]) -> list[Task]:
    """All (env, dataset) pairs in the paper's row order; names the paper lacks go last, as given."""
    def rank(name: str, order: tuple[str, ...]) -> int:
        return order.index(name) if name in order else len(order)

    env_list, dataset_list = list(dict.fromkeys(envs)), list(dict.fromkeys(datasets))
    ordered_datasets = sorted(dataset_list, key=lambda d: (rank(d, PAPER_DATASET_ORDER), dataset_list.index(d)))
    ordered_envs = sorted(env_list, key=lambda e: (rank(e, PAPER_ENV_ORDER), env_list.index(e)))
    return [(env, dataset) for dataset in ordered_datasets for env in ordered_envs]


def _load(filename: str) -> dict[str, dict[Task, ReportedScore]]:
    """column -> (env, dataset) -> ReportedScore; a `<column>_std` column attaches to `<column>`."""
    text = resources.files(__package__).joinpath("reference", filename).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    value_columns = [c for c in rows[0] if c not in ("env", "dataset") and not c.endswith("_std")]
    table: dict[str, dict[Task, ReportedScore]] = {c: {} for c in value_columns}
    for row in rows:
        task = (row["env"], row["dataset"])
        for column in value_columns:
            std = row.get(f"{column}_std")
            table[column][task] = ReportedScore(float(row[column]), float(std) if std else None)
    return table


def table1_reported() -> dict[str, dict[Task, ReportedScore]]:
    """The paper's Table 1 per row (its printed Average row is not used: it swaps MOPO and COMBO)."""
    return _load("table1_reported.csv")


def table4_reported() -> dict[str, dict[Task, ReportedScore]]:
    return _load("table4_reported.csv")
