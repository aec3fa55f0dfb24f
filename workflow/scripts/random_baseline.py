"""A uniform random policy as a run of the grid: the worked example of workflow/rules/baselines/README.md.

    python workflow/scripts/random_baseline.py --env hopper --dataset random --seed 0 --episodes 10 \
        --eval-seed 0 --out-dir DIR

A random policy has no training, so eval.csv has one evaluation (step 0), train.csv one row
without metrics, and final.json the measured score: the D4RL normalized score of a random policy,
about 0 by the definition of the score. The files are written through adept.run_outputs.RunWriter,
the per-run output contract every drop-in baseline writes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from adept.evaluation import evaluate, random_policy
from adept.envs import get_env_spec
from adept.provenance import versions
from adept.run_outputs import RunWriter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--env", required=True)
    parser.add_argument("--dataset", required=True, help="the grid row the run fills (the policy ignores it)")
    parser.add_argument("--seed", type=int, required=True, help="the grid's seed (names the run)")
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--eval-seed", type=int, required=True, help="episode i is reset with eval_seed + i; "
                                                                     "the policy's actions are drawn from it too")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    outputs = RunWriter(args.out_dir)
    policy = random_policy(get_env_spec(args.env).act_dim, seed=args.eval_seed)
    result = evaluate(policy, args.env, args.episodes, seed=args.eval_seed)
    wall = time.perf_counter() - started
    outputs.evaluation(0, result, wall)
    outputs.train_row({"step": 0})
    final = outputs.finish(method="random", env=args.env, dataset=args.dataset, seed=args.seed, source=None,
                           steps=0, wall_time_s=wall, updates_per_s=None, device="cpu",
                           config={"episodes": args.episodes, "eval_seed": args.eval_seed},
                           versions=versions())
    print(f"random policy, {args.env}: normalized score {final['final_score']:.2f} over {args.episodes} episodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
