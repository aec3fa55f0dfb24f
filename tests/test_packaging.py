"""The install paths agree: environment.yml's pip list is pyproject's dependencies + dev/slurm extras."""
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_pip_list_matches_pyproject():
    project = _pyproject()
    expected = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"]) \
        | set(project["optional-dependencies"]["slurm"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip_section if not p.startswith("-e")}
    assert listed == expected
    assert "-e ." in pip_section
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11"


def test_readme_commands_match_ci():
    """The README's test command is what .ci/run executes."""
    readme = (ROOT / "README.md").read_text().splitlines()
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(line for line in readme[:12] if "pytest" in line)
    for part in ('pip install torch==2.13.0 -e ".[dev]"', "python -m pytest -q"):
        assert part in test_line
        assert part in ci
