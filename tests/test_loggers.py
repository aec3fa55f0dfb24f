"""Experiment trackers (adept.loggers): real training runs mirrored to TensorBoard and W&B (offline).

TensorBoard's own event-file reader checks that every scalar equals its train.csv / eval.csv cell,
also across an interruption and resume. W&B runs offline (no network); its run file is checked
for the same metric keys.
"""
from __future__ import annotations

import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from adept.config import ConfigError
from adept.loggers import open_trackers, wandb_mode
from adept.outputs import read_csv
from adept.runner import RunInputs, TrainConfig, train
from baselines.iql import IQL

TINY_RUN = {"run": {"steps": 60, "eval_every": 20, "eval_episodes": 2, "log_every": 10,
                    "checkpoint_every": 20, "final_eval_window": 2},
            "learner": {"hidden_dim": 32}}


def _config(*loggers: str) -> TrainConfig:
    return TrainConfig.from_dict({**TINY_RUN, "run": {**TINY_RUN["run"], "loggers": ["csv", *loggers]}})


def _inputs(path, out_dir):
    return RunInputs(method="iql", env="hopper", dataset="random", seed=0, out_dir=out_dir, data_path=path,
                     source="generated", device="cpu", progress=False)


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard reads the folder (purged events left out)."""
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def csv_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """The same layout from train.csv and eval.csv: every non-empty cell but `step`."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for stream in ("train", "eval"):
        for row in read_csv(run_dir / f"{stream}.csv"):
            for key, value in row.items():
                if key != "step" and value is not None:
                    expected.setdefault(f"{stream}/{key}", []).append((row["step"], value))
    return expected


def assert_same_scalars(actual, expected):
    assert sorted(actual) == sorted(expected)
    for tag, points in expected.items():
        assert [step for step, _ in actual[tag]] == [step for step, _ in points], tag
        for (_, got), (_, want) in zip(actual[tag], points):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-6), tag  # TensorBoard stores float32


def test_tensorboard_scalars_equal_the_csv_rows(tiny_random_dataset_path, tmp_path):
    out = tmp_path / "run"
    train(_inputs(tiny_random_dataset_path, out), _config("tensorboard"))
    scalars = tensorboard_scalars(out / "tensorboard")
    expected = csv_scalars(out)
    assert {"train/critic_loss", "train/updates_per_s", "eval/score_mean", "eval/return_mean"} <= set(expected)
    assert [step for step, _ in scalars["train/critic_loss"]] == [10, 20, 30, 40, 50, 60]
    assert_same_scalars(scalars, expected)


def test_tensorboard_after_resume_matches_the_csv(tiny_random_dataset_path, tmp_path, monkeypatch):
    """An interrupted run logged steps past its last checkpoint; after the resume TensorBoard shows each
    step once, with the values of the resumed attempt, exactly as the CSV files."""
    original_update = IQL.update
    calls = {"n": 0}

    def update_then_crash(self, batch):
        calls["n"] += 1
        if calls["n"] == 55:  # after the checkpoint at step 40 and the train rows of steps 50
            raise KeyboardInterrupt
        return original_update(self, batch)

    out = tmp_path / "run"
    monkeypatch.setattr(IQL, "update", update_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(_inputs(tiny_random_dataset_path, out), _config("tensorboard"))
    assert [step for step, _ in tensorboard_scalars(out / "tensorboard")["train/critic_loss"]] == [10, 20, 30, 40, 50]
    monkeypatch.setattr(IQL, "update", original_update)
    train(_inputs(tiny_random_dataset_path, out), _config("tensorboard"))
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per attempt
    assert_same_scalars(tensorboard_scalars(out / "tensorboard"), csv_scalars(out))

    # A fresh start (no checkpoint) does not mix in the events of an earlier run in the folder.
    for name in ("final.json", "completed.json", "policy.pt"):
        (out / name).unlink()
    train(_inputs(tiny_random_dataset_path, out), _config("tensorboard"))
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert_same_scalars(tensorboard_scalars(out / "tensorboard"), csv_scalars(out))


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """No W&B credentials anywhere: no environment variables, a home without ~/.netrc."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def test_wandb_mode_is_offline_unless_logged_in(no_wandb_login, monkeypatch):
    assert wandb_mode() == "offline"
    (no_wandb_login / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    (no_wandb_login / ".netrc").chmod(0o600)
    assert wandb_mode() == "online"  # `wandb login` wrote its key
    (no_wandb_login / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"  # the user's explicit choice wins


def test_wandb_offline_run_holds_the_csv_metrics(tiny_random_dataset_path, tmp_path, no_wandb_login):
    out = tmp_path / "run"
    train(_inputs(tiny_random_dataset_path, out), _config("wandb"))
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    for tag in csv_scalars(out):
        assert tag.encode() in data, tag
    assert not list((out / "wandb").glob("run-*"))  # nothing was synced online


@pytest.mark.parametrize("logger, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_tracker_package_names_its_extra(tmp_path, monkeypatch, logger, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(ConfigError, match=rf'{logger}.*not installed.*pip install -e "\.\[{logger}\]"'):
        open_trackers(["csv", logger], tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("loggers, message", [
    (["csv", "mlflow"], r"unknown logger\(s\) \['mlflow'\]; valid loggers are \['csv', 'tensorboard', 'wandb'\]"),
    (["tensorboard"], r"must include 'csv'"),
    (["csv", "csv"], r"lists a logger twice"),
])
def test_bad_loggers_are_rejected_up_front(loggers, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({"run": {"loggers": loggers}})


def test_default_is_csv_only(tiny_random_dataset_path, tmp_path):
    assert TrainConfig().run.loggers == ("csv",)
    config = TrainConfig.from_dict({**TINY_RUN, "run": {**TINY_RUN["run"], "steps": 20}})
    train(_inputs(tiny_random_dataset_path, tmp_path / "run"), config)
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "run" / "wandb").exists()
