"""Command-line values with their ranges: argparse `type=` functions that refuse, in the error line,
a value a command cannot use (a negative count, a seed torch cannot take, nan, a size no machine
could allocate), before anything loads. The config files carry the same kind of ranges in their
schema (ldm/core/config.py); these are the command line's."""

from __future__ import annotations

import argparse
import math

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
MAX_SIDE = 8192  # pixels: a latent of this side already fills a large GPU
MAX_STEPS = 1000  # sampler steps: the training schedule's length


def integer(low: int, high: int | None = None):
    """An int in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse


def number(low: float, high: float | None = None, low_open: bool = False):
    """A finite float in [low, high] (or (low, high] with `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high):
            bound = f"above {low:g}" if low_open else f"at least {low:g}"
            allowed = f"{bound} and at most {high:g}" if high is not None else bound
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse


COUNT = integer(1)
SEED = integer(0, MAX_SEED)
SIDE = integer(8, MAX_SIDE)
STEPS = integer(1, MAX_STEPS)
GUIDANCE = number(1.0, 100.0)  # 1: no guidance; below 1 samples as 1 does, so it is refused, not ignored
SECONDS = number(0.0)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad option said in one line (usage is one `-h` away), as every other
    mistake is (ldm/cli/__init__.py)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")

    def _get_values(self, action, arg_strings):
        # argparse drops a "--" given as an option's value (`--n=--`) and hands the option an empty
        # list, unconverted, which no range type sees: said here instead of failing later
        if action.nargs is None and action.option_strings and arg_strings in (["--"], []):
            got = f", got {arg_strings[0]!r}" if arg_strings else ""
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value{got}")
        return super()._get_values(action, arg_strings)
