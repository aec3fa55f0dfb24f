"""The house rules of docs/architecture.md that code can check: who may import whom, and that a new
learner is one file plus one registry line."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What baselines/ may use of adept/: config and file plumbing, the env registry, and the DDPM
# primitives Diffuser shares with the world model. Never the paper's method (world model, closed
# loop, importance weights, rollouts, diagnostics, fits) nor the runner, workflow or data layers.
BASELINES_MAY_IMPORT = {"adept.config", "adept.outputs", "adept.errors", "adept.envs", "adept.diffusion",
                        "adept.provenance"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_baselines_import_only_shared_plumbing_of_adept():
    offending = {}
    for path in sorted((ROOT / "baselines").glob("*.py")):
        bad = sorted(m for m in imported_modules(path)
                     if (m == "adept" or m.startswith("adept.")) and m not in BASELINES_MAY_IMPORT)
        if bad:
            offending[path.name] = bad
    assert offending == {}, f"baselines/ imports the paper's method or the harness's layers: {offending}"


def test_the_import_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from adept.world_model import WorldModel\n")
    assert "adept.world_model" in imported_modules(source)


def test_reporting_does_not_import_the_trainer():
    for path in sorted((ROOT / "adept" / "reporting").glob("*.py")):
        assert "adept.runner" not in imported_modules(path), path.name


def test_every_registered_learner_is_complete():
    from adept.methods import method_label, parse_method, train_rule_pattern
    from baselines import LEARNERS, learner_config

    for name, (learner_cls, config_cls) in LEARNERS.items():
        assert learner_cls.name == name and isinstance(learner_cls.label, str) and learner_cls.label
        assert type(learner_config(name)) is config_cls
        if re.fullmatch(train_rule_pattern(), name):
            assert parse_method(name).learner == name and method_label(name) == learner_cls.label
            assert re.fullmatch(train_rule_pattern(), f"adept-{name}_K5")


def test_a_new_learner_is_one_file_and_one_registry_line(monkeypatch):
    """Registering a learner class (its file) is all it takes: the method grammar, the workflow's
    train-rule pattern and the labels follow from the registry."""
    import baselines
    from adept.methods import is_train_rule_method, method_label, parse_method
    from baselines.bc import BC, BCConfig

    class Toy(BC):  # stands for baselines/toy.py
        name = "toy"
        label = "Toy"

    monkeypatch.setitem(baselines.LEARNERS, "toy", (Toy, BCConfig))
    assert parse_method("adept-toy").learner == "toy" and parse_method("diff-toy_K5").synthetic == "diff"
    assert is_train_rule_method("toy") and is_train_rule_method("adept-toy_noclip")
    assert [method_label(m) for m in ("toy", "adept-toy", "diff-toy", "synther-toy")] == [
        "Toy", "ADEPT-Toy", "Diff+Toy", "SynthER (Toy)"]
    with pytest.raises(ValueError, match="unknown method 'adept-toyz'"):
        parse_method("adept-toyz")


def test_the_workflow_spells_no_method_names_or_paths_of_its_own():
    """common.smk takes the method grammar from adept.methods and the paths from adept.layout."""
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "train_rule_pattern()" in text
    assert not re.search(r"adept-\|diff-|\(\?:adept", text)
    assert "/final.json\"" not in text and "seed{wildcards.seed}" not in text
