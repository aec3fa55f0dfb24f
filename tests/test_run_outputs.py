"""adept.run_outputs: the per-run output contract, written by RunWriter and read back by reporting."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adept import layout
from adept.evaluation import EvalResult
from adept.provenance import versions
from adept.reporting import load_runs
from adept.run_outputs import EVAL_COLUMNS, RunWriter, eval_row, read_final, run_dir


def result(scores):
    scores = np.asarray(scores, dtype=np.float64)
    return EvalResult("hopper", returns=scores * 30.0, lengths=np.full(len(scores), 100), scores=scores)


def test_eval_row_has_the_contract_columns():
    row = eval_row(500, result([1.0, 3.0]), 12.5)
    assert tuple(row) == EVAL_COLUMNS
    assert row["score_mean"] == 2.0 and row["score_std"] == 1.0 and row["return_mean"] == 60.0


def test_run_writer_writes_a_run_that_reporting_reads(tmp_path):
    runs = tmp_path / "runs"
    folder = run_dir(runs, "toy", "hopper", "random", 3)
    assert str(folder / "final.json") == layout.run_file(runs, "toy", env="hopper", dataset="random", seed=3)
    outputs = RunWriter(folder)
    for step, scores in ((100, [1.0]), (200, [4.0]), (300, [2.0])):
        outputs.evaluation(step, result(scores), wall_time_s=step / 100, extra_metric=0.5)
        assert not (folder / "final.json").exists()  # not complete before finish()
    outputs.train_row({"step": 300, "loss": 0.1})
    final = outputs.finish(window=2, method="toy", env="hopper", dataset="random", seed=3, source="generated",
                           steps=300, wall_time_s=3.0, updates_per_s=100.0, device="cpu", config={},
                           versions=versions(commit=False))
    assert final["final_score"] == 3.0 and final["best_score"] == 4.0 and final["final_score_window"] == 2
    assert final["env_id"] == "Hopper-v4"
    assert json.loads((folder / "final.json").read_text()) == final
    (run,) = load_runs(runs, ["toy"], [("hopper", "random")], [3])
    assert run.final_score == 3.0

    RunWriter(folder)  # a new run in the folder: the old one is no longer complete
    assert not (folder / "final.json").exists() and not (folder / "eval.csv").exists()


def test_read_final_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "final.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"not valid JSON .*\(.*final.json\): rerun the run"):
        read_final(path)
    path.write_text(json.dumps({"final_score": float("nan")}))
    with pytest.raises(ValueError, match="final_score must be a finite number"):
        read_final(path)
    path.write_text(json.dumps({"final_score": 1.0, "seed": 2}))
    with pytest.raises(ValueError, match="seed=2 but lies in the folder of seed=1"):
        read_final(path, seed=1)
