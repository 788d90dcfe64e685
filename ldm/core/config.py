"""YAML configs, validated against dataclasses.

A config file is YAML; each stage describes its sections as dataclasses. Loading turns the YAML
into those dataclasses and fails early, naming the key, when a key is unknown or a value has the
wrong type. Command-line overrides (`train.max_steps=100`) are applied to the YAML before
validation, so they are checked the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ldm.core.errors import LdmError


def packaged_configs() -> Path:
    """The configs/ folder that ships inside ldm (a checkout's own configs/ in an editable install)."""
    return Path(str(importlib.resources.files("ldm.configs")))


def find_config(path: str | Path) -> Path:
    """A config file: `path` itself, or else the config of that name that ships with ldm
    (`ldm train diffusion/ldm_shapes.yaml` works from any folder, installed or not)."""
    path = Path(path)
    if not path.exists() and not path.is_absolute():
        shipped = packaged_configs() / path
        if shipped.is_file():
            return shipped
        if path.parts and path.parts[0] == "configs" and (packaged_configs() / Path(*path.parts[1:])).is_file():
            return packaged_configs() / Path(*path.parts[1:])
    return path


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with clear errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise LdmError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LdmError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise LdmError(f"config file {path} must hold a mapping of keys to values")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; values are parsed as YAML (so 3 is an int, null is None)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LdmError(f"override '{item}' must look like section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise LdmError(f"override '{item}': '{part}' is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw else None
    return data


def build(cls: type, data: Any, where: str = "config"):
    """Build dataclass `cls` from a mapping, checking every key and value type."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LdmError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LdmError(
            f"unknown config key '{_join(where, key)}'{hint} (valid keys: {', '.join(fields)})"
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise LdmError(f"missing config key '{_join(where, missing[0])}'")
    values = {key: _coerce(hints[key], value, _join(where, key)) for key, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:  # __post_init__ checks raise ValueError
        raise LdmError(f"{where}: {err}") from None


def require_divides(divisor: int, values: list[int], divisor_key: str, values_key: str) -> None:
    """For __post_init__ checks: `divisor` must divide every entry of `values` (e.g. GroupNorm groups)."""
    bad = [value for value in values if value % divisor]
    if bad:
        raise ValueError(f"{divisor_key}={divisor} must divide every entry of {values_key}, not {bad[0]}")


def recheck(cfg) -> None:
    """Validate a config object again: code may have changed it since it was loaded."""
    build(type(cfg), to_dict(cfg), where="config")


def to_dict(obj) -> dict:
    """A dataclass config as plain dicts and lists (for saving next to a run and in checkpoints)."""
    return dataclasses.asdict(obj)


def _join(where: str, key: str) -> str:
    return key if where == "config" else f"{where}.{key}"


def _coerce(hint, value, where: str):
    """Check `value` against the type `hint`, converting only where it is lossless (int -> float, "1e-4" -> 1e-4)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except LdmError as err:
                errors.append(str(err))
        raise LdmError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not a valid value")
    if origin is typing.Literal:
        if value not in args:
            raise LdmError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise LdmError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise LdmError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string; people write it that way, so read it as a number.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise LdmError(f"{where} must be {hint.__name__}, got {value!r}")
        return value
    return value
