"""Walks by interpolation method: the quickstart's walk rendered through `ldm animate` with each
`--interpolation` method, its smoothness, keyframe fidelity and render time in one table.

    python -m benchmarks walks QUICKSTART/pipeline                  # every method, the quickstart's walk
    python -m benchmarks walks runs/smooth/pipeline --methods dissolve slerp --out /tmp/walks/smooth

The methods are the choices of WalkSettings.interpolation (whatever `ldm animate` offers; before
that field existed, the one default walk). Each walk is the quickstart's: its three prompts in a
loop, seeds 0, 1, 2, 20 steps, guidance 4, 8 fps, to the quickstart's beat track (QUICKSTART/
beats.wav beside the pipeline, when there; `--audio none` or any other file) or, without audio,
`--frames` per segment with even motion. For each method the table gives:

- smoothness: 1 - Gini of the adjacent-frame distances (AID's measure; 1: equal steps), with the
  project's multi-scale pixel distance, and with LPIPS too when `--lpips-weights` names the VGG
  weights file of the autoencoder's `loss.lpips_weights`;
- CV (std / mean) of those distances, and the largest step over the median one;
- jumps: what the walk's own jump search found (dissolve method), and the steps of the final walk
  still above the jump search's bar (jumps.py: EXAMINE_RATIO x the median step), for every method;
- dissolves: frames that are cross-dissolves of two samples, not samples;
- keyframes: how many keyframe frames the shapes checker reads as their prompt's colour and shape
  (and position);
- seconds: the `ldm animate` process's wall time (model loading included).

A walk with audio is meant to move unevenly (with the beat): its smoothness and CV then measure the
music as well as the method; the audio column says how closely the steps followed the track.
Each method also gets OUT/METHOD/contact_sheet.png: every frame, in rows of 8, dissolves marked.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

from PIL import Image

from benchmarks.harness import clock, subprocess_env
from ldm.apps.animate import video
from ldm.apps.animate.jumps import EXAMINE_RATIO, MEAN_FLOOR, Jump, jump_at
from ldm.apps.animate.layout import FRAMES_DIR, REPORT_FILE, TIMES_FILE
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.quickstart import GUIDANCE, WALK_AUDIO, WALK_FPS, WALK_PROMPTS
from ldm.core.images import contact_sheet, write_png
from ldm.data.shapes.checker import read_image
from ldm.data.shapes.generator import ALL_COLOURS, POSITIONS, SHAPES
from ldm.metrics.smoothness import perceptual_smoothness

DEFAULT_METHOD = "default"  # the name of the one walk there is without an interpolation field
SHEET_COLUMNS = 8
SHEET_NAME = "contact_sheet.png"
SECONDS_FILE = "render_seconds.txt"  # in OUT/METHOD: what --reuse reads instead of rendering again


def interpolation_methods() -> list[str]:
    """The choices of WalkSettings.interpolation, in the order the Literal lists them."""
    hints = typing.get_type_hints(WalkSettings)
    if "interpolation" not in hints:
        return [DEFAULT_METHOD]
    return list(typing.get_args(hints["interpolation"]))


def add_arguments(parser) -> None:
    parser.add_argument("pipeline", type=Path, help="RUN/pipeline folder")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"interpolation methods (default: all, now {' '.join(interpolation_methods())})")
    parser.add_argument("--prompts", nargs="+", default=WALK_PROMPTS)
    parser.add_argument("--audio", default=None,
                        help=f"audio file, or none (default: {WALK_AUDIO} beside the pipeline, when there)")
    parser.add_argument("--frames", type=int, default=11, help="frames per segment without audio (default 11)")
    parser.add_argument("--fps", type=float, default=WALK_FPS)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-loop", dest="loop", action="store_false", help="a plain walk, not a loop")
    parser.add_argument("--lpips-weights", default=None, help="LPIPS weights file: an LPIPS smoothness column too")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the walks already rendered in --out again instead of rendering them")
    parser.add_argument("--out", type=Path, default=None,
                        help="one folder per method, with its contact sheet (default: a temporary folder, "
                             "the sheets copied to /tmp/walks-benchmark)")


def audio_of(args) -> Path | None:
    if args.audio == "none":
        return None
    if args.audio is not None:
        return Path(args.audio)
    beside = args.pipeline.resolve().parent / WALK_AUDIO
    return beside if beside.is_file() else None


def animate_command(args, method: str, out: Path) -> list[str]:
    """`ldm animate` for the walk with `method` (no --interpolation for DEFAULT_METHOD)."""
    command = [sys.executable, "-m", "ldm", "animate", str(args.pipeline), "--out", str(out),
               "--prompts", *args.prompts, "--steps", str(args.steps), "--guidance", str(args.guidance),
               "--fps", str(args.fps), "--batch-size", str(args.batch_size)]
    if args.loop:
        command.append("--loop")
    audio = audio_of(args)
    command += ["--audio", str(audio)] if audio is not None else ["--frames", str(args.frames)]
    if method != DEFAULT_METHOD:
        command += ["--interpolation", method]
    return command


def render(args, method: str, out: Path) -> float:
    """Render the walk into `out` through the CLI; its wall seconds (with --reuse, those of the
    render already there, when it finished)."""
    seconds_file = out / SECONDS_FILE
    if args.reuse and seconds_file.is_file() and (out / REPORT_FILE).is_file():
        return float(seconds_file.read_text())
    env = subprocess_env(OMP_NUM_THREADS=str(args.threads))
    with clock() as timed:
        done = subprocess.run(animate_command(args, method, out), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ldm animate --interpolation {method} failed:\n{done.stderr[-3000:]}")
    seconds_file.write_text(f"{timed.wall:.2f}\n")
    return timed.wall


def prompt_attributes(prompt: str) -> dict[str, str | None]:
    """The colour, shape and position a shapes prompt names ('a red circle in the top left'); the
    shapes generator writes prompts from attributes but has no reader for them."""
    words = prompt.lower().split()
    return {"colour": next((c for c in ALL_COLOURS if c in words), None),
            "shape": next((s for s in SHAPES if s in words), None),
            "position": next((p for p in POSITIONS if p in prompt.lower()), None)}


def keyframe_fidelity(frames, keyframe_frames: list[int], prompts: list[str]) -> dict[str, int]:
    """How many keyframe frames the checker reads as their prompt: colour and shape, and position."""
    right = {"colour_and_shape": 0, "position": 0, "keyframes": len(prompts)}
    for index, prompt in zip(keyframe_frames, prompts):
        seen, wanted = read_image(frames[index]), prompt_attributes(prompt)
        right["colour_and_shape"] += seen.colour == wanted["colour"] and seen.shape == wanted["shape"]
        right["position"] += seen.position == wanted["position"]
    return right


def frame_positions(out: Path) -> list[float]:
    """Where on the walk each frame is (keyframe k at position k)."""
    return json.loads((out / FRAMES_DIR / TIMES_FILE).read_text())


def keyframe_frames(positions: list[float], keyframes: int) -> list[int]:
    """The frame at each keyframe's position (re-spacing moves keyframes off the timeline's even
    slots: with audio motion, the frame at keyframe 1 may be any frame)."""
    return [min(range(len(positions)), key=lambda i: abs(positions[i] - k)) for k in range(keyframes)]


def dissolve_frames(positions: list[float], report: dict) -> list[int]:
    """Indices of the frames inside a dissolved jump."""
    if "jumps" not in report:
        return []
    jumps = [Jump(**jump) for jump in report["jumps"]["intervals"]]
    return [i for i, t in enumerate(positions) if jump_at(jumps, t) is not None]


def steps_over_jump_bar(distances: list[float]) -> int:
    """Steps the walk's jump search would examine (jumps.py's bar), counted on the final frames."""
    bar = EXAMINE_RATIO * max(statistics.median(distances), MEAN_FLOOR * statistics.fmean(distances))
    return sum(d > bar for d in distances)


def lpips_distances(weights: str, frames, loop: bool) -> list[float]:
    """LPIPS between consecutive frames (the closing step of a loop included); the project's LPIPS
    averages over its batch, so pairs go one at a time."""
    import numpy as np
    import torch

    from ldm.core.images import frames_to_tensor
    from ldm.stages.autoencoder.lpips import LPIPS

    model = LPIPS(weights)
    pixels = frames_to_tensor(np.stack(list(frames) + ([frames[0]] if loop else [])))  # in [-1, 1]
    with torch.no_grad():
        return [float(model(pixels[i + 1:i + 2], pixels[i:i + 1])) for i in range(len(pixels) - 1)]


def write_contact_sheet(out: Path, frames, dissolves: list[int], keyframes: list[int]) -> Path:
    """Every frame in rows of SHEET_COLUMNS, each row captioned with its frame numbers, keyframes
    (K) and dissolves (D)."""
    rows = []
    for first in range(0, len(frames), SHEET_COLUMNS):
        indices = range(first, min(first + SHEET_COLUMNS, len(frames)))
        marks = [f"{i}{'K' if i in keyframes else ''}{'D' if i in dissolves else ''}" for i in indices]
        rows.append(("   ".join(marks), [Image.fromarray(frames[i]) for i in indices]))
    return write_png(out / SHEET_NAME, contact_sheet(rows, SHEET_COLUMNS))


def measure(args, method: str, out: Path, seconds: float) -> dict:
    """The table's row for one rendered walk, and its contact sheet."""
    report = json.loads((out / REPORT_FILE).read_text())
    frames = video.read_frames(out / FRAMES_DIR, report["frames"])
    distances, positions = report["distances"], frame_positions(out)
    keyframes = keyframe_frames(positions, len(args.prompts))
    dissolves = dissolve_frames(positions, report)
    row = {"method": method, "frames": len(frames), "smoothness": perceptual_smoothness(distances),
           "cv": report["walk"]["cv"], "max_over_median": max(distances) / statistics.median(distances),
           "jumps_found": report.get("jumps", {}).get("found"), "over_bar": steps_over_jump_bar(distances),
           "dissolves": len(dissolves), "fidelity": keyframe_fidelity(frames, keyframes, args.prompts),
           "seconds": seconds, "audio_correlation": report.get("audio", {}).get("correlation"),
           "sheet": str(write_contact_sheet(out, frames, dissolves, keyframes))}
    if args.lpips_weights:
        row["lpips_smoothness"] = perceptual_smoothness(lpips_distances(args.lpips_weights, frames, report["loop"]))
    return row


def print_table(args, rows: list[dict]) -> None:
    audio = audio_of(args)
    print(f"\nwalk: {' -> '.join(args.prompts)}{' (loop)' if args.loop else ''}, {rows[0]['frames']} frames, "
          f"{args.steps} steps, guidance {args.guidance:g}, "
          f"{f'audio {audio.name}' if audio else f'{args.frames} frames a segment, even motion'}; "
          f"pipeline {args.pipeline}")
    lpips = f"{'LPIPS':>7}" if args.lpips_weights else ""
    header = (f"{'method':<11}{'1-Gini':>7}{lpips}{'CV':>7}{'max/med':>8}{'jumps':>6}{'>bar':>5}"
              f"{'dissolves':>10}{'keyframes':>10}{'position':>9}{'audio r':>8}{'seconds':>8}")
    print(header)
    for row in rows:
        fidelity = row["fidelity"]
        found = "-" if row["jumps_found"] is None else str(row["jumps_found"])
        lpips_value = f"{row['lpips_smoothness']:>7.3f}" if args.lpips_weights else ""
        correlation = "-" if row["audio_correlation"] is None else f"{row['audio_correlation']:.2f}"
        print(f"{row['method']:<11}{row['smoothness']:>7.3f}{lpips_value}{row['cv']:>7.3f}"
              f"{row['max_over_median']:>8.2f}{found:>6}{row['over_bar']:>5}{row['dissolves']:>10}"
              f"{fidelity['colour_and_shape']:>6}/{fidelity['keyframes']}"
              f"{fidelity['position']:>6}/{fidelity['keyframes']}{correlation:>8}{row['seconds']:>8.1f}")
    print("1-Gini: AID's smoothness of the adjacent-frame distances (multi-scale pixel distance); "
          "jumps: found by the walk's search (dissolve only); >bar: final steps above the search's bar; "
          "keyframes/position: keyframes the shapes checker reads as their prompt")
    for row in rows:
        print(f"contact sheet ({row['method']}): {row['sheet']}")


def run(args) -> dict:
    methods = args.methods or interpolation_methods()
    unknown = [m for m in methods if m not in interpolation_methods()]
    if unknown:
        sys.exit(f"walks: no interpolation method {', '.join(unknown)}; choose from "
                 f"{', '.join(interpolation_methods())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        rows, failed = [], []
        for method in methods:
            out = root / method
            try:
                rows.append(measure(args, method, out, render(args, method, out)))
            except RuntimeError as err:  # one method's failure is a row of the table, not the end of it
                print(err, flush=True)
                failed.append({"method": method, "error": str(err).splitlines()[-1]})
                continue
            print(f"{method}: rendered in {rows[-1]['seconds']:.1f} s", flush=True)
        if args.out is None:  # the sheets outlive the temporary folder
            kept = Path(tempfile.gettempdir()) / "walks-benchmark"
            kept.mkdir(exist_ok=True)
            for row in rows:
                row["sheet"] = str(Path(row["sheet"]).replace(kept / f"{row['method']}_{SHEET_NAME}"))
    if rows:
        print_table(args, rows)
    for row in failed:
        print(f"{row['method']}: failed ({row['error']})")
    return {"methods": rows, "failed": failed}
