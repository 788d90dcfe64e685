"""Walk smoothness: linear spacing, even motion with the model's jumps kept, and even motion with
them dissolved (the default), on a pipeline folder.

    python -m benchmarks animate QUICKSTART/pipeline        # the quickstart's walk, without audio
    python -m benchmarks animate runs/shapes/pipeline --prompts "a red circle" "a blue square" \
        --seeds 1 2 --frames 16 --no-loop --even-passes 2 --out walks/bench

Renders the same prompt walk twice with even motion, once with `dissolve_jumps=False`
(`--keep-jumps`) and once with the default; the first pass of either is the walk at linear
spacing. Prints mean, max and coefficient of variation (CV) of the adjacent-frame distance for
each, the jumps found, and each render's frames and seconds (the cost of the jump search is the
difference). The frames, videos and smoothness.json stay in --out (default: a temporary folder).
The defaults are the quickstart's walk: its three prompts in a loop, 8 frames a segment, 20 steps,
guidance 4.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.harness import clock
from ldm.apps.animate.render import WalkSettings, animate
from ldm.apps.quickstart import GUIDANCE, WALK_PROMPTS


def add_arguments(parser) -> None:
    parser.add_argument("pipeline", help="RUN/pipeline folder")
    parser.add_argument("--prompts", nargs="+", default=WALK_PROMPTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0, 1, ...")
    parser.add_argument("--frames", type=int, default=8, help="frames per segment (default 8)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--even-passes", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-loop", dest="loop", action="store_false", help="a plain walk, not a loop")
    parser.add_argument("--out", default=None, help="folder for both walks (default: a temporary one)")


def render(args, out: Path, dissolve: bool) -> dict:
    """One even-motion render: its smoothness report, the frames rendered, the seconds."""
    settings = WalkSettings(pipeline=args.pipeline, out=str(out), prompts=args.prompts, seeds=args.seeds or [],
                            frames=args.frames, steps=args.steps, guidance=args.guidance, loop=args.loop,
                            motion="even", even_passes=args.even_passes, dissolve_jumps=dissolve,
                            batch_size=args.batch_size)
    with clock() as timed:
        result = animate(settings)
    return {"report": result.report, "rendered": result.rendered, "seconds": timed.wall}


def print_table(args, kept: dict, dissolved: dict) -> None:
    report = dissolved["report"]
    print(f"\nwalk: {' -> '.join(args.prompts)}{' (loop)' if args.loop else ''}, {report['frames']} frames, "
          f"{args.steps} steps, distance: {report['distance']}")
    print(f"{'spacing':<34}{'mean':>8}{'max':>8}{'CV':>8}{'rendered':>10}{'seconds':>9}")
    rows = (("linear (the probe pass)", report["linear"], None),
            (f"even, jumps kept ({args.even_passes} pass)", kept["report"]["walk"], kept),
            (f"even, jumps dissolved ({args.even_passes} pass)", report["walk"], dissolved))
    for name, row, render_ in rows:
        cost = f"{render_['rendered']:>10}{render_['seconds']:>9.1f}" if render_ else ""
        print(f"{name:<34}{row['mean']:>8.4f}{row['max']:>8.4f}{row['cv']:>8.3f}{cost}")
    jumps = report.get("jumps", {"found": 0, "dissolved_frames": 0})
    print(f"jumps found: {jumps['found']}; frames that are dissolves: {jumps['dissolved_frames']}")
    print(f"render cost of the jump search: {dissolved['seconds'] / kept['seconds']:.2f}x the render with jumps "
          f"kept ({dissolved['rendered']} vs {kept['rendered']} frames rendered)")


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        kept = render(args, out / "jumps-kept", dissolve=False)
        dissolved = render(args, out / "jumps-dissolved", dissolve=True)
    print_table(args, kept, dissolved)
    report = dissolved["report"]
    return {"cv": {"linear": report["linear"]["cv"], "jumps kept": kept["report"]["walk"]["cv"],
                   "jumps dissolved": report["walk"]["cv"]},
            "jumps_kept": kept, "jumps_dissolved": dissolved}
