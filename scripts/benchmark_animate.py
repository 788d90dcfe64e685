"""Walk smoothness: linear spacing, even motion with the model's jumps kept, and even motion with
them dissolved (the default), on a pipeline folder.

    python scripts/benchmark_animate.py QUICKSTART/pipeline        # the quickstart's walk, without audio
    python scripts/benchmark_animate.py runs/shapes/pipeline --prompts "a red circle" "a blue square" \
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

import argparse
import tempfile
import time
from pathlib import Path

from ldm.apps.animate.render import WalkSettings, animate
from ldm.apps.quickstart import GUIDANCE, WALK_PROMPTS


def render(args, out: Path, dissolve: bool) -> tuple[dict, int, float]:
    """(smoothness report, frames rendered, seconds) of one even-motion render."""
    settings = WalkSettings(pipeline=args.pipeline, out=str(out), prompts=args.prompts, seeds=args.seeds or [],
                            frames=args.frames, steps=args.steps, guidance=args.guidance, loop=args.loop,
                            motion="even", even_passes=args.even_passes, dissolve_jumps=dissolve,
                            batch_size=args.batch_size)
    start = time.perf_counter()
    result = animate(settings)
    return result.report, result.rendered, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        kept = render(args, out / "jumps-kept", dissolve=False)
        dissolved = render(args, out / "jumps-dissolved", dissolve=True)

    report = dissolved[0]
    print(f"\nwalk: {' -> '.join(args.prompts)}{' (loop)' if args.loop else ''}, {report['frames']} frames, "
          f"{args.steps} steps, distance: {report['distance']}")
    print(f"{'spacing':<34}{'mean':>8}{'max':>8}{'CV':>8}{'rendered':>10}{'seconds':>9}")
    rows = (("linear (the probe pass)", report["linear"], None),
            (f"even, jumps kept ({args.even_passes} pass)", kept[0]["walk"], kept),
            (f"even, jumps dissolved ({args.even_passes} pass)", report["walk"], dissolved))
    for name, row, run in rows:
        cost = f"{run[1]:>10}{run[2]:>9.1f}" if run else ""
        print(f"{name:<34}{row['mean']:>8.4f}{row['max']:>8.4f}{row['cv']:>8.3f}{cost}")
    jumps = report.get("jumps", {"found": 0, "dissolved_frames": 0})
    print(f"jumps found: {jumps['found']}; frames that are dissolves: {jumps['dissolved_frames']}")
    print(f"render cost of the jump search: {dissolved[2] / kept[2]:.2f}x the render with jumps kept "
          f"({dissolved[1]} vs {kept[1]} frames rendered)")


if __name__ == "__main__":
    main()
