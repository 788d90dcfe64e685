"""The apps' settings (`ldm generate`, `ldm animate`) as pydantic dataclasses, validated the way the
stage configs are (ldm/core/config.py: each field's type carries its range, an unknown field is
refused), each mistake said in one LdmError line that names the command-line option:

    WalkSettings(pipeline="p", out="o", frames=1)   ->  --frames must be at least 2, got 1

The field `even_passes` is the option `--even-passes`, so the line names what the user typed. The
entries of a file the user wrote (a --timeline) name their key instead, after where they are:

    timeline walk.yaml, entry 2: unknown key 'promt' (the keys are time, prompt, seed, ...)

A model checks each value on its own when it is made; what depends on several values, or on files,
is checked by the app before any model loads (e.g. `ldm.apps.animate.resolve`). The fields hold
the defaults: the command line leaves an option it was not given unset (ldm/cli/settings_help.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from ldm.core.config import EXPECTED, SECTION
from ldm.core.errors import LdmError


def _path_as_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


# A path, given as text or as a pathlib.Path, kept as text (the form settings.json saves).
PathText = Annotated[str, BeforeValidator(_path_as_text)]


@dataclass(config=SECTION)
class Settings:
    """The base of an app's settings: making one validates it; a mistake is one LdmError line."""

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler):
        try:
            return handler(data)
        except ValidationError as err:
            raise LdmError(explain(err.errors()[0], cls)) from None


def read_entry(cls: type, data: Any, where: str):
    """`data`, a mapping read from the user's file, as the dataclass `cls`; a mistake is one
    LdmError line naming the key after `where` ("timeline walk.yaml, entry 2")."""
    if not isinstance(data, dict):
        raise LdmError(f"{where} must be a mapping of keys to values, got {data!r}")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        raise LdmError(explain(err.errors()[0], cls, where)) from None


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def explain(error: dict, cls: type, where: str | None = None) -> str:
    """One pydantic error as one line: the option it concerns (the key, after `where`), what it
    must be, and what it got."""
    first, *rest = error["loc"] or ("",)
    name = (str(first) if where else option_name(str(first))) + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)
    said, kind, got = f"{where}: " if where else "", error["type"], error.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = [f.name if where else option_name(f.name) for f in dataclasses.fields(cls)]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{said}unknown {'key' if where else 'setting'} '{name}'{hint} (valid: {', '.join(known)})"
    if kind in ("missing", "missing_argument"):
        return f"{where} has no {name}" if where else f"{name} is missing"
    if kind in ("value_error", "assertion_error"):  # a __post_init__ check: its message says it all
        return said + error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        return f"{said}{name} must be {error['msg'].removeprefix('Input should be ')}, got {got!r}"
    if kind in EXPECTED:
        return f"{said}{name} must be {EXPECTED[kind]}, got {got!r}"
    if kind in RANGE_WORDS:
        return f"{said}{name} must be {RANGE_WORDS[kind](error.get('ctx', {}))}, got {got!r}"
    return f"{said}{name}: {error['msg']}"


# pydantic's range errors in the words of ldm/cli/ranges.py, from the bound in the error's ctx
RANGE_WORDS = {
    "greater_than": lambda ctx: "positive" if ctx["gt"] == 0 else f"above {ctx['gt']:g}",
    "greater_than_equal": lambda ctx: f"at least {ctx['ge']:g}",
    "less_than": lambda ctx: f"below {ctx['lt']:g}",
    "less_than_equal": lambda ctx: f"at most {ctx['le']:g}",
    "finite_number": lambda ctx: "a finite number",
}
