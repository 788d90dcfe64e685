"""Options that set a field of an app's settings (`ldm.apps.options`), whose defaults the settings
hold, once.

Such an option is declared with `default=argparse.SUPPRESS`: when it is not given it is not in the
parsed arguments at all, and `given(args, names)` leaves it out of the settings, which then take
their own default. Its help says "(default %(default)s)", or names a constant of the settings'
module ("%(DEFAULT_GUIDANCE)s"), and `show_defaults_of` fills these in when help is printed, and
only then: reading the settings imports pydantic, and every command's options are declared
whenever `ldm` starts, so `ldm --help` would wait for it (0.1 s -> 0.6 s, measured on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
from functools import partial


def show_defaults_of(parser: argparse.ArgumentParser, settings: str) -> None:
    """"%(default)s" in the help of `parser`'s options that default to argparse.SUPPRESS is the
    default of the field of the same name in `settings` ("module:Class"), "%(NAME)s" the constant
    NAME of its module. Call it before adding the options: argparse may check their help as they
    are added."""
    parser.formatter_class = partial(SettingsDefaultsFormatter, settings=settings)


def given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The options among `names` that were given (an option left out takes the settings' default)."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


class SettingsDefaultsFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str, settings: str, **kwargs):
        super().__init__(prog, **kwargs)
        self._settings = settings

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = super()._get_help_string(action)
        if action.default is not argparse.SUPPRESS or "%(" not in help_text:
            return help_text
        module_name, class_name = self._settings.split(":")
        module = importlib.import_module(module_name)
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(module, class_name))}
        values = {**vars(module), "default": defaults[action.dest]}  # "%(default)s": the field's

        def fill(match: re.Match) -> str:  # a name the settings lack is argparse's own (%(prog)s)
            return _shown(values[match[1]]) if match[1] in values else match[0]

        return re.sub(r"%\((\w+)\)s", fill, help_text)


def _shown(value) -> str:
    """A default as the help says it: 12 for 12.0, "empty" for ""."""
    if isinstance(value, float):
        return f"{value:g}"
    return "empty" if value == "" else str(value)
