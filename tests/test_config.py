"""Config dataclasses from YAML/--set overrides: coercion, unknown keys, validation messages."""
from dataclasses import dataclass, field
from typing import Literal

import pytest

from adept.config import ConfigError, from_dict, merge, parse_overrides, require, to_dict


@dataclass
class Inner:
    rate: float = 0.1
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    steps: int = 10
    flag: bool = False
    name: str | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")


def test_overrides_are_parsed_coerced_and_nested():
    values = parse_overrides(["steps=1e3", "flag=true", "inner.rate=3e-4", "inner.mode=b"])
    cfg = from_dict(Outer, values)
    assert cfg.steps == 1000 and isinstance(cfg.steps, int)
    assert cfg.flag is True
    assert cfg.inner == Inner(rate=3e-4, mode="b")
    assert to_dict(cfg) == {"steps": 1000, "flag": True, "name": None, "inner": {"rate": 3e-4, "mode": "b"}}


def test_base_is_kept_for_unset_fields():
    base = Outer(steps=5, inner=Inner(rate=0.5))
    cfg = from_dict(Outer, {"inner": {"mode": "b"}}, base=base)
    assert cfg.steps == 5 and cfg.inner == Inner(rate=0.5, mode="b")


@pytest.mark.parametrize("values, message", [
    ({"stepz": 3}, "unknown key(s) ['stepz']; valid keys are ['flag', 'inner', 'name', 'steps']"),
    ({"steps": 2.5}, "steps: expected an integer, got 2.5"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"flag": "maybe"}, "flag: expected true/false"),
    ({"inner": {"mode": "c"}}, "inner.mode: 'c' is not one of ['a', 'b']"),
    ({"inner": {"rate": "fast"}}, "inner.rate: expected a number"),
])
def test_bad_values_name_the_key_and_the_valid_range(values, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, values)
    assert message in str(err.value)


def test_malformed_override_is_rejected():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["steps"])


def test_merge_is_recursive():
    assert merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}, "b": 1}
