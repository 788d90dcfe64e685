"""Every comparison with a baseline in one go: one table, with the machine and the versions.

    python -m benchmarks compare                      # all, reading exports from ./quickstart
    python -m benchmarks compare --run runs/shapes    # another run folder (vae/, text_encoder/, pipeline/, data/)
    python -m benchmarks compare --only generate      # needs no run folder: random weights

Speeds: generation (ours against diffusers' StableDiffusionPipeline) and diffusion training (the
latent cache against a loop that encodes every step); and walk smoothness (even motion against
linear spacing).

Each comparison is one of the benchmarks here, run as its own process (a fresh process per figure,
so one benchmark's threads and caches do not slow the next) with short settings and `--json`: the
two figures are read from the results it writes. A benchmark that fails is reported with the end
of its output.

The quality benchmarks (autoencoder, diffusion-quality, ...) train for minutes and print quality,
not speed: run them on their own.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import read_results, subprocess_env


@dataclass
class Comparison:
    name: str
    benchmark: str
    figure: str
    unit: str
    ours: tuple[str, ...]  # where this project's figure is in the benchmark's results
    baseline: tuple[str, ...]  # where the baseline's is
    baseline_name: str
    args: list[str] = field(default_factory=list)  # "{run}" stands for the --run folder
    needs: tuple[str, ...] = ()  # what the --run folder must hold for this benchmark


COMPARISONS = [
    Comparison("generate", "generate", "generation (LatentDiffusionPipeline vs diffusers)", "images/s",
               ("images_per_second", "ldm"), ("images_per_second", "diffusers"), "StableDiffusionPipeline",
               args=["--repeats", "3"]),
    Comparison("diffusion-training", "diffusion-speed", "diffusion training (latent cache vs encoding every step)",
               "images/s", ("images_per_second", "ldm"), ("images_per_second", "plain"), "plain fp32 loop",
               needs=("vae/config.json", "text_encoder", "tokenizer", "data"),
               args=["--steps", "30", "--warmup", "5", "--rounds", "2", "vae={run}/vae",
                     "text_encoder={run}", "data.source={run}/data"]),
    # Not a speed: how evenly a walk moves (coefficient of variation of frame-to-frame distance,
    # lower is smoother), with even-motion re-spacing against frames evenly spaced in latent space.
    Comparison("walk-smoothness", "animate", "walk unevenness (even motion vs linear)", "CV, lower is better",
               ("cv", "jumps dissolved"), ("cv", "linear"), "linear spacing", needs=("pipeline",),
               args=["{run}/pipeline", "--frames", "8", "--steps", "10"]),
]


def add_arguments(parser) -> None:
    parser.add_argument("--run", type=Path, default=Path("quickstart"),
                        help="a run folder with stage-1 exports and data/ (default ./quickstart)")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in COMPARISONS], help="run only these")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per benchmark (default 900)")


def benchmark_args(comparison: Comparison, run: Path) -> list[str] | str:
    """The benchmark's arguments, or why it cannot run here."""
    missing = [need for need in comparison.needs if not (run / need).exists()]
    if missing:
        return (f"needs {', '.join(f'RUN/{n}' for n in comparison.needs)}: pass --run RUN (e.g. a finished "
                f"`ldm quickstart` folder); {run / missing[0]} is missing")
    return [arg.replace("{run}", str(run.resolve())) for arg in comparison.args]


def figure(results: dict, where: tuple[str, ...]) -> float:
    for key in where:
        results = results[key]
    return float(results)


def measure(comparison: Comparison, args: list[str], threads: int, timeout: float) -> dict:
    """The two figures of one comparison, from the JSON its benchmark writes in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        command = [sys.executable, "-m", "benchmarks", comparison.benchmark, *args, "--threads", str(threads),
                   "--json", str(path)]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if done.returncode != 0:
            return {"error": f"exit status {done.returncode}", "output": (done.stdout + done.stderr)[-2000:]}
        results = read_results(path)
    return {"ours": figure(results, comparison.ours), "baseline": figure(results, comparison.baseline),
            "seconds": time.perf_counter() - start}


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> dict:
    rows = [("figure", "this project", "baseline", "ratio", "baseline is")]
    found, problems = {}, []
    for comparison in COMPARISONS:
        if args.only and comparison.name not in args.only:
            continue
        benchmark_argv = benchmark_args(comparison, args.run)
        if isinstance(benchmark_argv, str):
            problems.append(f"{comparison.name}: not run: {benchmark_argv}")
            continue
        print(f"running python -m benchmarks {comparison.benchmark} {' '.join(benchmark_argv)} ...", flush=True)
        result = found[comparison.name] = measure(comparison, benchmark_argv, args.threads, args.timeout)
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
    return {"comparisons": found, "problems": problems}
