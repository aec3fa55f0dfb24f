"""Importance-weight health: ESS, max-weight share and bias of the IWU weightings as pi sharpens.

Batches of B_m offline actions are drawn from a broad behaviour policy pi_D and weighted towards a
target policy pi, both tanh-Gaussian on a 6-dim action (the setting of Eq. 3 with SAC on MuJoCo).
SAC's target entropy -act_dim implies a per-dimension pre-tanh std of about
exp(-1) / sqrt(2 pi e) = 0.089, so a trained pi is far sharper than pi_D. For each (pi_D, pi) case
and weighting rule this reports, averaged over `--trials` batches: ESS/N, the largest weight's share
of the total, the mean weight, and the bias and RMSE of the weighted estimate of E_pi[f] for
f1(a) = mean_j a_j and f2(a) = mean_j a_j^2, relative to the gap E_pi[f] - E_pi_D[f] (0 = unbiased,
-1 = no better than ignoring pi). The truth is exact (Gauss-Hermite quadrature, the dimensions are
independent). The estimate is (1/N) sum w f for the raw ratio (Eq. 3 literally, unbiased) and
sum w f / sum w for the self-normalized rules (the distribution the weighted loss targets; Adam
makes the loss's overall scale irrelevant).

    python -m experiments.importance_health [--trials 300] [--out results/importance_health]

Runs in well under 2 minutes on one CPU thread. With --out, writes health.csv and health.md.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from adept.importance import ImportanceConfig, importance_weights
from adept.outputs import atomic_write_text
from baselines.common import gaussian_log_prob, tanh_log_det_jacobian

SAC_TARGET_ENTROPY_STD = math.exp(-1.0) / math.sqrt(2 * math.pi * math.e)  # per-dim Gaussian entropy -1

# (name, pi_D (mean, std), pi (mean, std)), pre-tanh, per dimension.
CASES = [
    ("near", (0.0, 1.0), (0.1, 0.8)),
    ("moderate", (0.0, 1.0), (0.25, 0.5)),
    ("intermediate", (0.0, 1.0), (0.5, 0.3)),
    ("sharp (SAC)", (0.0, 1.0), (0.5, 0.09)),
    ("sharp, narrower pi_D", (0.0, 0.4), (0.2, 0.09)),   # e.g. a medium-data pi_D
]

# (name, config, self-normalized estimate)
RULES = [
    ("raw ratio (Eq. 3)", ImportanceConfig(max_weight=None, self_normalize=False), False),
    ("self-normalized, no clip", ImportanceConfig(max_weight=None), True),
    ("SN + clip sqrt(N) (default)", ImportanceConfig(), True),
    ("SN + clip, alpha 0.5", ImportanceConfig(temper_alpha=0.5), True),
    ("SN + clip, alpha 0.25", ImportanceConfig(temper_alpha=0.25), True),
    ("SN + clip, ESS floor 0.1", ImportanceConfig(ess_floor=0.1), True),
]

# f(a) = mean_j g(a_j): the dimensions are i.i.d., so E[f] = E[g(a_1)]
TEST_FUNCTIONS = {"f1": lambda a: a, "f2": lambda a: a**2}


def tanh_gaussian_expectation(mean: float, std: float, g, degree: int = 120) -> float:
    """E[g(tanh(u))], u ~ N(mean, std^2), by Gauss-Hermite quadrature (probabilists' weight exp(-x^2/2))."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
    return float((weights * g(np.tanh(mean + std * nodes))).sum() / math.sqrt(2 * math.pi))


def log_density(u: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """log pi(tanh(u)) of a tanh-Gaussian, as the learners compute it (the Jacobian cancels in the ratio)."""
    return gaussian_log_prob(u, torch.full_like(u, mean), torch.full_like(u, math.log(std))) - tanh_log_det_jacobian(u)


def run_case(behavior: tuple[float, float], target: tuple[float, float], args) -> list[dict]:
    generator = torch.Generator().manual_seed(args.seed)
    truth = {name: tanh_gaussian_expectation(*target, g) for name, g in TEST_FUNCTIONS.items()}
    behavior_value = {name: tanh_gaussian_expectation(*behavior, g) for name, g in TEST_FUNCTIONS.items()}
    records = {name: {k: [] for k in ("ess", "share", "mean_w", "alpha", "f1", "f2")} for name, _, _ in RULES}
    for _ in range(args.trials):
        u = behavior[0] + behavior[1] * torch.randn(args.batch_size, args.act_dim, generator=generator)
        actions = torch.tanh(u)
        log_pi, log_pi_b = log_density(u, *target), log_density(u, *behavior)
        values = {name: g(actions).mean(-1) for name, g in TEST_FUNCTIONS.items()}
        for name, config, normalized in RULES:
            weights, stats = importance_weights(log_pi, log_pi_b, config)
            record = records[name]
            record["ess"].append(stats["is_ess_fraction"].item())
            record["share"].append(stats["is_max_weight_share"].item())
            record["mean_w"].append(stats["is_mean_weight"].item())
            record["alpha"].append(stats["is_alpha"].item())
            for f, value in values.items():
                estimate = (weights * value).sum() / weights.sum() if normalized else (weights * value).mean()
                record[f].append(estimate.item())
    rows = []
    for name, _, _ in RULES:
        record = records[name]
        row = {"rule": name, "ess_fraction": np.mean(record["ess"]), "max_weight_share": np.mean(record["share"]),
               "mean_weight": np.mean(record["mean_w"]), "alpha": np.mean(record["alpha"])}
        for f in TEST_FUNCTIONS:
            gap = truth[f] - behavior_value[f]
            errors = np.asarray(record[f]) - truth[f]
            row[f"{f}_rel_bias"] = errors.mean() / gap
            row[f"{f}_rel_rmse"] = math.sqrt((errors**2).mean()) / abs(gap)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=300, help="batches per case")
    parser.add_argument("--batch-size", type=int, default=1024, help="B_m")
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for health.csv and health.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for case, behavior, target in CASES:
        for row in run_case(behavior, target, args):
            rows.append({"case": case, "pi_D": f"N({behavior[0]:g}, {behavior[1]:g}^2)",
                         "pi": f"N({target[0]:g}, {target[1]:g}^2)", **row})
    frame = pd.DataFrame(rows)
    table = frame.to_markdown(index=False, floatfmt=".3g")
    header = (f"B_m = {args.batch_size}, {args.act_dim}-dim tanh-Gaussian actions (pre-tanh N(mean, std^2) per dim), "
              f"{args.trials} batches per case (seed {args.seed}); SAC target-entropy std = "
              f"{SAC_TARGET_ENTROPY_STD:.3f}\n\n")
    if args.out is not None:
        atomic_write_text(args.out / "health.csv", frame.to_csv(index=False))
        atomic_write_text(args.out / "health.md", header + table + "\n")
    print(header + table)
    return frame


if __name__ == "__main__":
    main()
