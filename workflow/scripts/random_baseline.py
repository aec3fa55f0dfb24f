"""Turn the output of `python -m adept evaluate --random` into a run's outputs (the drop-in contract).

    python -m adept evaluate --random --env hopper --episodes 10 --seed 0 \
        | python workflow/scripts/random_baseline.py --env hopper --dataset random --seed 0 --out-dir DIR

A uniform random policy has no training, so eval.csv has one evaluation (step 0), train.csv one
row without metrics, and final.json the measured score: the D4RL normalized score of a random
policy, about 0 by the definition of the score. It is the worked example of
workflow/rules/baselines/README.md.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from adept.envs import get_env_spec
from adept.outputs import CsvLog, atomic_write_text
from adept.runner import versions

# Lines printed by `adept evaluate`: "return: 97.29 ± 27.67", "normalized score: 3.61 ± 0.85",
# "episode length: mean 79.5  min 64  max 95".
PATTERNS = {
    "return": re.compile(r"^return: (?P<mean>\S+) ± (?P<std>\S+)$", re.M),
    "score": re.compile(r"^normalized score: (?P<mean>\S+) ± (?P<std>\S+)$", re.M),
    "length": re.compile(r"^episode length: mean (?P<mean>\S+)", re.M),
}


def parse_evaluation(text: str) -> dict[str, dict[str, float]]:
    parsed = {}
    for name, pattern in PATTERNS.items():
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"`adept evaluate` output has no {name!r} line matching {pattern.pattern!r}:\n{text}")
        parsed[name] = {key: float(value) for key, value in match.groupdict().items()}
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--env", required=True)
    parser.add_argument("--dataset", required=True, help="the grid row the run fills (the policy ignores it)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--episodes", type=int, required=True, help="as passed to `adept evaluate`")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = parse_evaluation(sys.stdin.read())
    row = {"step": 0, "return_mean": result["return"]["mean"], "return_std": result["return"]["std"],
           "score_mean": result["score"]["mean"], "score_std": result["score"]["std"],
           "episode_length_mean": result["length"]["mean"], "wall_time_s": time.perf_counter() - started}
    CsvLog(args.out_dir / "eval.csv").append(row)
    CsvLog(args.out_dir / "train.csv").append({"step": 0})
    final = {
        "method": "random", "env": args.env, "dataset": args.dataset, "seed": args.seed, "source": None,
        "env_id": get_env_spec(args.env).gym_id, "final_score": row["score_mean"], "best_score": row["score_mean"],
        "final_return": row["return_mean"], "steps": 0, "wall_time_s": row["wall_time_s"], "updates_per_s": None,
        "device": "cpu", "config": {"episodes": args.episodes}, "versions": versions(),
    }
    atomic_write_text(args.out_dir / "final.json", json.dumps(final, indent=2) + "\n")  # last: marks completion
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
