"""Every comparison with a baseline in one go: one table, with the machine and the versions.

    python scripts/benchmark.py                      # all, reading exports from ./quickstart
    python scripts/benchmark.py --run runs/shapes    # another run folder (vae/, text_encoder/, pipeline/, data/)
    python scripts/benchmark.py --only generate      # needs no run folder: random weights

Speeds: generation (ours against diffusers' StableDiffusionPipeline) and diffusion training (the
latent cache against a loop that encodes every step); and walk smoothness (even motion against
linear spacing).

Each comparison is one of the scripts/benchmark_*.py, run as its own process (a fresh process per
figure, so one benchmark's threads and caches do not slow the next) with short settings. The two
figures are read from the lines the script prints, by the patterns in COMPARISONS below; a script
whose output no longer matches is reported as such, with its output, rather than guessed at.

The quality benchmarks (benchmark_autoencoder.py, benchmark_diffusion_quality.py) train for
minutes and print quality, not speed: run them on their own.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
LIBRARIES = ("torch", "diffusers", "transformers", "lightning", "accelerate", "datasets", "ldm")


@dataclass
class Comparison:
    name: str
    script: str
    figure: str
    unit: str
    ours: str  # regex on the script's output whose last group is this project's figure
    baseline: str  # regex whose last group is the baseline's figure
    baseline_name: str
    args: list[str] = field(default_factory=list)  # "{run}" stands for the --run folder
    needs: tuple[str, ...] = ()  # what the --run folder must hold for this benchmark


COMPARISONS = [
    Comparison("generate", "benchmark_generate.py", "generation (LatentDiffusionPipeline vs diffusers)",
               "images/s", rf"^\s*ldm:\s*{NUMBER} images/s", rf"^\s*diffusers:\s*{NUMBER} images/s",
               "StableDiffusionPipeline", args=["--repeats", "3"]),
    Comparison("diffusion-training", "benchmark_diffusion_speed.py",
               "diffusion training (latent cache vs encoding every step)", "images/s",
               rf"^all \d+ rounds: ldm \(latent cache.*?\)\s*{NUMBER} images/s",
               rf"^all \d+ rounds: .*plain loop \(.*?\)\s*{NUMBER} images/s",
               "plain fp32 loop", needs=("vae/config.json", "text_encoder", "tokenizer", "data"),
               args=["--steps", "30", "--warmup", "5", "--rounds", "2", "vae={run}/vae",
                     "text_encoder={run}", "data.source={run}/data"]),
    # Not a speed: how evenly a walk moves (coefficient of variation of frame-to-frame distance,
    # lower is smoother), with even-motion re-spacing against frames evenly spaced in latent space.
    Comparison("walk-smoothness", "benchmark_animate.py", "walk unevenness (even motion vs linear)",
               "CV, lower is better", rf"^even \(\d+ pass\)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}",
               rf"^linear\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}", "linear spacing", needs=("pipeline",),
               args=["{run}/pipeline", "--frames", "8", "--steps", "10"]),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{cpu}, {cores} cores available; {system}"


def versions() -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def run_args(comparison: Comparison, run: Path) -> list[str] | str:
    """The script's arguments, or why it cannot run here."""
    missing = [need for need in comparison.needs if not (run / need).exists()]
    if missing:
        return (f"needs {', '.join(f'RUN/{n}' for n in comparison.needs)}: pass --run RUN (e.g. a finished "
                f"`ldm quickstart` folder); {run / missing[0]} is missing")
    return [arg.replace("{run}", str(run.resolve())) for arg in comparison.args]


def measure(comparison: Comparison, args: list[str], timeout: float) -> dict:
    command = [sys.executable, str(SCRIPTS / comparison.script), *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    output = done.stdout + done.stderr
    ours = re.search(comparison.ours, done.stdout, re.MULTILINE)
    baseline = re.search(comparison.baseline, done.stdout, re.MULTILINE)
    if done.returncode != 0 or not (ours and baseline):
        why = f"exit status {done.returncode}" if done.returncode else "its output no longer matches"
        return {"error": why, "output": output[-2000:]}
    return {"ours": float(ours.group(ours.lastindex)), "baseline": float(baseline.group(baseline.lastindex)),
            "seconds": time.perf_counter() - start}


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("quickstart"),
                        help="a run folder with stage-1 exports and data/ (default ./quickstart)")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in COMPARISONS], help="run only these")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per benchmark (default 900)")
    args = parser.parse_args()

    print(f"machine:  {machine()}")
    print(f"versions: {versions()}")
    rows = [("figure", "this project", "baseline", "ratio", "baseline is")]
    problems = []
    for comparison in COMPARISONS:
        if args.only and comparison.name not in args.only:
            continue
        script_args = run_args(comparison, args.run)
        if isinstance(script_args, str):
            problems.append(f"{comparison.name}: not run: {script_args}")
            continue
        print(f"running {comparison.script} {' '.join(script_args)} ...", flush=True)
        result = measure(comparison, script_args, args.timeout)
        if "error" in result:
            problems.append(f"{comparison.name}: {result['error']}\n{result.get('output', '')}")
            continue
        rows.append((f"{comparison.figure} [{comparison.unit}]", f"{result['ours']:.3g}",
                     f"{result['baseline']:.3g}", f"{result['ours'] / result['baseline']:.2f}x",
                     comparison.baseline_name))
    print()
    print(table(rows))
    for problem in problems:
        print(problem)


if __name__ == "__main__":
    main()
