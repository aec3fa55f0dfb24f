import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from adept.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_validate_inspect_round_trip(tmp_path, capsys):
    out_file = tmp_path / "hopper.hdf5"
    code, out, _ = run_cli(capsys, "datasets", "generate", "--env", "hopper", "--dataset", "random",
                           "--size", "300", "--seed", "4", "--out", str(out_file))
    assert code == 0 and out.strip() == str(out_file) and out_file.is_file()

    code, out, err = run_cli(capsys, "datasets", "generate", "--env", "hopper", "--dataset", "random",
                             "--size", "300", "--seed", "4", "--out", str(out_file))
    assert code == 0 and "exists and is valid" in err and out.strip() == str(out_file)

    code, _, err = run_cli(capsys, "datasets", "generate", "--env", "hopper", "--dataset", "random",
                           "--size", "300", "--seed", "5", "--out", str(out_file))
    assert code == 2 and "was generated with seed 4 and size 300; pass --force" in err

    code, out, _ = run_cli(capsys, "datasets", "validate", str(out_file), "--env", "hopper")
    assert code == 0 and out.startswith(f"ok: {out_file}: 300 transitions")

    code, out, _ = run_cli(capsys, "datasets", "inspect", str(out_file))
    assert code == 0
    assert "env: hopper  dataset: random  source: generated" in out
    assert "transitions: 300" in out and "normalized score: mean" in out
    assert "  env_id: Hopper-v4" in out and "  policy/type: uniform" in out and "sha256" not in out


def test_validate_rejects_a_file_of_another_env(tiny_random_dataset_path, capsys):
    code, out, err = run_cli(capsys, "datasets", "validate", str(tiny_random_dataset_path), "--env", "walker2d")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "observations has shape (5000, 11), expected (5000, 17)" in err


def test_inspect_d4rl_file_shows_its_metadata(d4rl_layout_file, capsys):
    code, out, _ = run_cli(capsys, "datasets", "inspect", str(d4rl_layout_file(env="walker2d", filename="walker2d_medium-v2.hdf5")))
    assert code == 0 and "env: walker2d  dataset: medium  source: d4rl" in out
    assert "  algorithm: SAC" in out and "  policy/fc0/weight: array (256, 17) float32" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["datasets", "generate", "--env", "ant", "--dataset", "random"], "error: unknown env 'ant'; valid envs are ['halfcheetah', 'hopper', 'walker2d']"),
        (["datasets", "generate", "--env", "hopper", "--dataset", "expert"], "error: unknown dataset 'expert'; valid datasets are ['random', 'medium', 'medium-replay']"),
        (["datasets", "inspect", "--env", "hopper", "--dataset", "random", "--source", "hf"], "error: unknown source 'hf'; valid sources are ['d4rl', 'generated', 'minari']"),
        (["evaluate", "--env", "cheetah", "--random"], "error: unknown env 'cheetah'; valid envs are"),
        (["datasets", "inspect"], "error: inspect needs a PATH, or --env and --dataset"),
    ],
)
def test_bad_names_give_one_line_errors(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith(message) and "Traceback" not in err and err.count("\n") == 1


def test_fetch_without_network_names_url_and_alternative(tmp_path, capsys, monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    code, _, err = run_cli(capsys, "datasets", "fetch", "--env", "hopper", "--dataset", "medium", "--dir", str(tmp_path))
    assert code == 2
    assert "gym_mujoco_v2/hopper_medium-v2.hdf5" in err and str(tmp_path) in err
    assert "python -m adept datasets generate --env hopper --dataset medium" in err


def test_evaluate_random(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "--env", "hopper", "--random", "--episodes", "3", "--seed", "1")
    assert code == 0
    assert "hopper: 3 episodes" in out and "return: " in out and "normalized score: " in out and "episode length: mean" in out


def test_module_entry_point_exits_2_without_traceback():
    result = subprocess.run([sys.executable, "-m", "adept", "evaluate", "--env", "ant", "--random"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown env 'ant'")
    assert "Traceback" not in result.stderr
