"""YAML configs, validated by pydantic against each stage's dataclasses.

A config file is YAML; each stage describes its sections as pydantic dataclasses
(`@dataclass(config=SECTION)`), each key with its type and default, and checks that span keys in
`__post_init__`. Loading turns the YAML into those dataclasses and fails early, in one line that
names the key, when a key is unknown (with the closest valid key suggested), missing, or of the
wrong type. Command-line overrides (`train.max_steps=100`) are applied to the YAML first, so they are
checked the same way.

Why pydantic: it validates every type the configs use (Literal choices, unions such as `int | str`,
nested sections, lists of lists) and reads "2e-3", which YAML 1.1 leaves a string, as the float it
means; what is written here is only the reading of files and overrides and the wording of its errors
for a config's reader. (OmegaConf would add `${...}` interpolation, but validates neither Literal
nor union types; LightningCLI/jsonargparse would change the `section.key=value` override syntax.)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from ldm.core.errors import LdmError

# The pydantic config of every config section: `@dataclass(config=SECTION)` (pydantic.dataclasses).
# An unknown key is an error, not silently dropped; nan and inf are refused wherever a float is read.
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)

# The ranges fields carry in their types, so an impossible value is refused on loading, naming the
# key, the value and what is allowed (pydantic's PositiveInt etc. are the same constraints; these
# names say what a config reader needs to know).
Count = Annotated[int, Field(ge=1)]  # steps, channels, layers, batch sizes
NonNegativeInt = Annotated[int, Field(ge=0)]  # warmup steps, workers, seeds
Positive = Annotated[float, Field(gt=0)]  # learning rates, budgets, clipping norms
NonNegative = Annotated[float, Field(ge=0)]  # loss weights, weight decay, offsets
Fraction = Annotated[float, Field(ge=0, lt=1)]  # a share in [0, 1): dropout, decay, validation split
MAX_SIDE = 8192  # pixels: beyond any model ldm trains, and a bound that keeps size arithmetic finite
Side = Annotated[int, Field(ge=8, le=MAX_SIDE)]  # an image side in pixels
Area = Annotated[int, Field(ge=64, le=MAX_SIDE * MAX_SIDE)]  # pixels of an image
# Windows of 75 tokens a prompt may take (ldm.components.prompt_tokens): 1 is CLIP's own 77-token
# context; 8 windows are 600 tokens, beyond what sd-scripts (225) or prompts in practice use.
MAX_PROMPT_CHUNKS = 8
PromptChunks = Annotated[int, Field(ge=1, le=MAX_PROMPT_CHUNKS)]


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
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise LdmError(f"config file {path} must hold a mapping of keys to values")
    return data


def load_yaml(path: str | Path, what: str = "config file"):
    """What a YAML file holds; a missing or malformed file is an LdmError that calls it `what`."""
    path = Path(path)
    if not path.is_file():
        raise LdmError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LdmError(f"{what} {path} is not valid YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The parser's complaint in one line: where (line, column) and what it saw."""
    mark = getattr(err, "problem_mark", None)
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({' '.join(context.split())})" if context else "")


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
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as err:
            raise LdmError(f"override {item!r}: {key}'s value is not valid YAML: {_yaml_problem(err)}") from None
    return data


def build(cls: type, data: Any, where: str = "config"):
    """Build the config dataclass `cls` from a mapping; any problem is one LdmError line naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LdmError(f"{where} must be a mapping, got {type(data).__name__}")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        message = _explain(err.errors()[0], cls)
        raise LdmError(message if where == "config" else f"{where}: {message}") from None


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


# pydantic's error types -> what the value should have been, in the words of a config file
EXPECTED = {"int_parsing": "int", "int_type": "int", "int_from_float": "int", "float_parsing": "float",
            "float_type": "float", "bool_parsing": "bool", "bool_type": "bool", "string_type": "str",
            "list_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping"}


RANGES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def _explain(error: dict, cls: type) -> str:
    """One pydantic error as one line that names the config key."""
    keys, section = _key_path(cls, error["loc"])
    key, kind = ".".join(keys), error["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        fields = [f.name for f in dataclasses.fields(section) if f.init]
        close = difflib.get_close_matches(str(keys[-1]), fields, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown config key '{key}'{hint} (valid keys: {', '.join(fields)})"
    if kind in ("missing", "missing_argument"):
        return f"missing config key '{key}'"
    if kind in ("value_error", "assertion_error"):  # a __post_init__ check; its message names the key
        return error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        return f"{key} must be {error['msg'].removeprefix('Input should be ')}, got {error['input']!r}"
    if kind in EXPECTED:
        return f"{key} must be {EXPECTED[kind]}, got {error['input']!r}"
    if kind in RANGES:  # "greater than 0", "less than 1", "a finite number"
        return f"{key} must be {error['msg'].removeprefix('Input should be ')}, got {error['input']!r}"
    return f"{key}: {error['msg']}"


def _key_path(cls: type, loc: tuple) -> tuple[list[str], type]:
    """The config keys in a pydantic error location (dropping the tags it adds for union members and
    list items' types) and the dataclass that holds the last key."""
    keys, section, current = [], cls, cls
    for part in loc:
        if isinstance(part, int) and keys:  # an item of a list
            keys[-1] = f"{keys[-1]}[{part}]"
            current = _inner(typing.get_args(current)[0]) if typing.get_args(current) else current
            continue
        fields = {f.name: f for f in dataclasses.fields(current)} if dataclasses.is_dataclass(current) else {}
        if part not in fields:
            if dataclasses.is_dataclass(current):  # an unknown key: named, and held by `current`
                keys.append(str(part))
                section = current
            break
        keys.append(part)
        section, current = current, _inner(typing.get_type_hints(current)[part])
    return keys, section


def _inner(hint):
    """The dataclass (or list type) inside an Optional or union hint, else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return next((m for m in members if dataclasses.is_dataclass(m)), members[0])
    return hint
