"""Guidance sweep: held-out one-step error of the world model vs. guidance weight w, cond_drop_prob, clip_denoised.

The paper gives "condition guidance weight 0.1" (Table 2) next to Eq. (2), where w = 0.1 means the
prediction is 90% unconditional: eps = 0.9 eps(x, none) + 0.1 eps(x, y). This experiment measures
what that and other weights do to the one-step prediction PE relies on. For each env, seed and
cond_drop_prob one model is trained (guidance only acts at sampling time), then evaluated with every
w (always in the Eq. 2 convention here; w = 1 is the purely conditional model, w = 0 the
unconditional one) with and without clip_denoised. Reference rows: "copy" predicts s' = s.

    python -m experiments.guidance_sweep --envs hopper halfcheetah --size 50000 --steps 5000 \\
        --seeds 0 1 --out results/guidance_sweep

Writes sweep.csv (one row per env, seed, cond_drop_prob, clip_denoised, w) and sweep.md (means over seeds).
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import pandas as pd
import torch

from adept.data import load_dataset
from adept.outputs import atomic_write_text
from adept.world_model import WorldModel, WorldModelConfig
from adept.data.dataset import split_holdout
from adept.world_model_training import EVAL_SEED_OFFSET, evaluate_one_step, train_world_model
from baselines.replay import Batch

DEFAULT_WEIGHTS = (0.0, 0.1, 0.5, 1.0, 1.1, 1.5, 2.0)


def heldout_batch(dataset, holdout_fraction: float, seed: int, eval_size: int) -> Batch:
    """The same held-out transitions train_world_model evaluates on."""
    _, holdout_idx = split_holdout(len(dataset.observations), holdout_fraction, seed)
    return Batch.from_dataset(dataset, "cpu", indices=holdout_idx[:eval_size])


def sweep(env: str, seed: int, cond_drop_prob: float, args: argparse.Namespace) -> list[dict]:
    dataset = load_dataset(env, "random", source="generated", size=args.size, seed=0, data_dir=args.data_dir)
    config = WorldModelConfig(cond_drop_prob=cond_drop_prob)
    model_path = args.out / "models" / f"{env}-drop{cond_drop_prob}-seed{seed}.pt"
    start = time.perf_counter()
    train_world_model(dataset, config, steps=args.steps, device="cpu", seed=seed, out_path=model_path,
                      log_every=max(1, args.steps // 4), checkpoint_every=max(1, args.steps // 4),
                      holdout_fraction=args.holdout_fraction, eval_size=args.eval_size, progress=True)
    train_s = time.perf_counter() - start
    model = WorldModel.load(model_path)
    heldout = heldout_batch(dataset, args.holdout_fraction, seed, args.eval_size)
    copy_mse = (model.normalize_obs(heldout.observations) - model.normalize_obs(heldout.next_observations)) \
        .square().mean().item()
    base = {"env": env, "seed": seed, "cond_drop_prob": cond_drop_prob, "steps": args.steps, "train_s": train_s,
            "copy_baseline_mse": copy_mse}
    rows = []
    for clip_denoised in (True, False):
        for weight in args.weights:
            model.apply_runtime_overrides({"guidance_convention": "eq2", "guidance_weight": weight,
                                           "clip_denoised": clip_denoised})
            metrics = evaluate_one_step(model, heldout, seed + EVAL_SEED_OFFSET)
            rows.append({**base, "clip_denoised": clip_denoised, "w_eq2": weight,
                         "next_state_mse": metrics["heldout_next_state_mse"].item(),
                         "reward_mse": metrics["heldout_reward_mse"].item()})
            print(f"{env} seed {seed} drop {cond_drop_prob} clip_denoised {clip_denoised} w {weight}: "
                  f"next-state MSE {metrics['heldout_next_state_mse']:.4f}", flush=True)
    return rows


def summarize(frame: pd.DataFrame) -> str:
    """Markdown: mean next-state MSE over seeds, one column per w."""
    out = io.StringIO()
    for (env, clip), part in frame.groupby(["env", "clip_denoised"]):
        table = part.pivot_table(index="cond_drop_prob", columns="w_eq2", values="next_state_mse", aggfunc="mean")
        table.columns = [f"w={w:g}" for w in table.columns]
        seeds = sorted(part.seed.unique().tolist())
        out.write(f"\n{env}, clip_denoised={clip} (held-out next-state MSE, normalized units; mean over seeds "
                  f"{seeds}; copy baseline s'=s: {part.copy_baseline_mse.mean():.4f})\n\n")
        out.write(table.to_markdown(floatfmt=".4f") + "\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah"])
    parser.add_argument("--size", type=int, default=50_000, help="transitions of the generated random dataset")
    parser.add_argument("--steps", type=int, default=5000, help="training steps per model")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cond-drop-probs", nargs="+", type=float, default=[0.1, 0.2])
    parser.add_argument("--weights", nargs="+", type=float, default=list(DEFAULT_WEIGHTS))
    parser.add_argument("--holdout-fraction", type=float, default=0.05)
    parser.add_argument("--eval-size", type=int, default=2048)
    parser.add_argument("--data-dir", type=Path, default=None, help="where generated datasets live")
    parser.add_argument("--out", type=Path, default=Path("results/guidance_sweep"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [row for env in args.envs for seed in args.seeds for drop in args.cond_drop_probs
            for row in sweep(env, seed, drop, args)]
    frame = pd.DataFrame(rows)
    atomic_write_text(args.out / "sweep.csv", frame.to_csv(index=False))
    summary = summarize(frame)
    atomic_write_text(args.out / "sweep.md", summary)
    print(summary)


if __name__ == "__main__":
    main()
