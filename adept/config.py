"""Hyperparameter dataclasses from YAML files and `--set key=value` overrides, with validation.

Every configurable part of the harness keeps its hyperparameters in one dataclass. This module
turns nested dictionaries (from YAML or the command line) into those dataclasses, rejecting unknown
keys and values of the wrong type with a message that names the key and lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):  # YAML reads "1e6" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    return value


def from_dict(cls: type[T], values: dict | None, where: str = "", base: T | None = None) -> T:
    """Build dataclass `cls` from `values`, starting from `base` (or the defaults).

    Unknown keys raise ConfigError listing the valid ones; values are coerced to the annotated type.
    If the dataclass defines `validate()`, it is called on the result.
    """
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of {cls.__name__} fields "
                          f"(key: value lines), got {values!r}")
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        name = where or cls.__name__
        raise ConfigError(f"{name}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    kwargs = {}
    for key, value in values.items():
        current = getattr(base, key) if base is not None else None
        annotation = hints[key]
        path = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
            kwargs[key] = from_dict(annotation, value, path, base=current)
        else:
            kwargs[key] = _coerce(value, annotation, path)
    result = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    validate = getattr(result, "validate", None)
    if callable(validate):
        validate()
    return result


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) -> plain dict suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_overrides(assignments: list[str] | None) -> dict:
    """`["learner.beta=3", "run.steps=1e5"]` -> nested dict with YAML-parsed values."""
    nested: dict = {}
    for item in assignments or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); "
                              f"quote it, e.g. --set '{dotted}=\"{raw}\"'") from None
        node = nested
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier value for {key!r}")
        node[keys[-1]] = value
    return nested


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        with path.open() as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file is not valid YAML ({path}): {_yaml_problem(err)}; fix the syntax "
                          f"there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file is not a text file ({path}): pass a YAML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`<problem> at line L, column C` of a YAML error, on one line."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds; used by the dataclasses' validate()."""
    if not condition:
        raise ConfigError(message)
