"""What every benchmark shares: its options, torch's threads, the machine banner, timing, results as JSON.

`python -m benchmarks NAME [options]` (benchmarks/__main__.py) builds NAME's parser here (the common
options, then the module's own `add_arguments`), sets torch's threads, prints the banner (CPU model and
its AVX-512 / AVX2 flags, cores, the GPU and its compute capability, the libraries' versions, threads),
calls the module's `run(args)` and, with `--json PATH`, writes what it returned beside the banner and
the command line. `timings` and `clock` are the one way a benchmark times code: CUDA work is waited for
before each clock reading, and the figure quoted is the median (outside load on a shared machine
lengthens some calls by tens of percent; the median leaves them out where a mean would not).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
LIBRARIES = ("torch", "diffusers", "transformers", "lightning", "accelerate", "datasets", "ldm")
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "avx2")  # the kernels torch can pick on a CPU


# ---- arguments ----------------------------------------------------------------------------------

def build_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    """NAME's parser: its docstring as the help, the common options, then the module's own."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    module.add_arguments(parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The options, allowed between positionals (`Q NAME 2.5 --plain key=value`) except in a parser with
    subcommands, which argparse cannot parse that way."""
    try:
        return parser.parse_intermixed_args(argv)
    except TypeError:  # subcommands: argparse refuses intermixed parsing before reading anything
        return parser.parse_args(argv)


def add_overrides(parser: argparse.ArgumentParser, example: str = "train.lr=0.002", option: str | None = None) -> None:
    """Config overrides (key=value ...) into `args.overrides`: the last positional arguments, as `ldm
    train` takes them, or the values of `option` (`--set`) where positionals would be ambiguous."""
    names, extra = ([option], {"dest": "overrides", "default": []}) if option else (["overrides"], {})
    parser.add_argument(*names, nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {example}", **extra)


# ---- the machine ---------------------------------------------------------------------------------

def cpu_info() -> tuple[str, list[str]]:
    """(the CPU's model name, which of CPU_FLAGS it has) from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
        if model and flags:
            break
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def gpu_info() -> str | None:
    """The CUDA device's name and compute capability, or None without one."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (compute capability {major}.{minor}, CUDA {torch.version.cuda})"


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict:
    """Where a figure was measured: what the banner prints and every JSON result records."""
    model, flags = cpu_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cpu_flags": flags, "cores": cores, "gpu": gpu_info(),
            "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
            "versions": versions(), "threads": torch.get_num_threads()}


def banner(info: dict) -> str:
    flags = ", ".join(info["cpu_flags"]) or "no AVX2"
    return "\n".join([
        f"machine:  {info['cpu']} ({flags}), {info['cores']} cores available; {info['system']}",
        f"gpu:      {info['gpu'] or 'none'}",
        f"versions: {', '.join(f'{name} {version}' for name, version in info['versions'].items())}",
        f"threads:  {info['threads']} torch threads"])


def start(args: argparse.Namespace) -> dict:
    """Set torch's threads, print the banner; the machine it describes."""
    torch.set_num_threads(args.threads)
    info = machine()
    print(banner(info), flush=True)
    return info


def device() -> torch.device:
    """CUDA where there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this one's import path (so `-m benchmarks` and `-m ldm`
    resolve as they do here), with `extra` variables set."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **extra}


# ---- timing --------------------------------------------------------------------------------------

def synchronize(on: torch.device | None) -> None:
    """Wait for queued GPU work, so that a clock measures it (a no-op on a CPU)."""
    if on is not None and on.type == "cuda":
        torch.cuda.synchronize(on)


@dataclass
class Clock:
    wall: float = 0.0  # seconds
    cpu: float = 0.0  # this process's seconds on a core


@contextmanager
def clock(on: torch.device | None = None):
    """Time the block (wall clock and this process's CPU time), GPU work on `on` included."""
    timed = Clock()
    synchronize(on)
    wall, cpu = time.perf_counter(), time.process_time()
    yield timed
    synchronize(on)
    timed.wall, timed.cpu = time.perf_counter() - wall, time.process_time() - cpu


def timings(run: Callable[[], object], repeats: int, warmup: int = 1, on: torch.device | None = None) -> list[float]:
    """Wall seconds of each of `repeats` calls of `run()`, after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        with clock(on) as timed:
            run()
        times.append(timed.wall)
    return times


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1, on: torch.device | None = None) -> float:
    return statistics.median(timings(run, repeats, warmup, on))


def durations(ends: list[float], warmup: int) -> list[float]:
    """Seconds each step took, from the end of the one before, leaving out the first `warmup`."""
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


# ---- results -------------------------------------------------------------------------------------

def write_results(path: Path, name: str, argv: list[str], info: dict, result: dict, seconds: float) -> None:
    """One benchmark's results as JSON: what ran, where, how long, and the figures `run` returned."""
    record = {"benchmark": name, "argv": argv, "machine": info, "seconds": round(seconds, 1), "result": result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def read_results(path: Path) -> dict:
    """The figures a benchmark returned, as `write_results` wrote them."""
    return json.loads(path.read_text())["result"]
