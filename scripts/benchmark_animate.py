"""Walk smoothness, even motion against linear spacing, on a pipeline folder.

    python scripts/benchmark_animate.py runs/shapes/pipeline
    python scripts/benchmark_animate.py runs/shapes/pipeline --prompts "a red circle" "a blue square" \
        --seeds 1 2 --frames 16 --steps 20 --even-passes 2 --out walks/bench

Renders one prompt walk with `--even-motion` (its first pass is the same walk at linear spacing,
so both come from one render) and prints mean, max and coefficient of variation of the
adjacent-frame distance for each, the ratio of the CVs (the issue asks for <= 0.5), and the
render speed. The frames, videos and smoothness.json stay in --out (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ldm.apps.animate.render import WalkSettings, animate

PROMPTS = ["a red circle in the top left", "a blue square in the bottom right"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="RUN/pipeline folder")
    parser.add_argument("--prompts", nargs="+", default=PROMPTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0, 1, ...")
    parser.add_argument("--frames", type=int, default=16, help="frames per segment (default 16)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--even-passes", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--out", default=None, help="walk folder (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "walk")
        settings = WalkSettings(pipeline=args.pipeline, out=str(out), prompts=args.prompts,
                                seeds=args.seeds or [], frames=args.frames, steps=args.steps,
                                guidance=args.guidance, sampler=args.sampler, loop=args.loop,
                                motion="even", even_passes=args.even_passes, batch_size=args.batch_size)
        start = time.perf_counter()
        result = animate(settings)
        seconds = time.perf_counter() - start

    report = result.report
    print(f"\nwalk: {' -> '.join(args.prompts)}{' (loop)' if args.loop else ''}, {result.frames} frames, "
          f"{args.steps} steps, distance: {report['distance']}")
    print(f"{'spacing':<14}{'mean':>10}{'max':>10}{'CV':>8}")
    for name, key in (("linear", "linear"), (f"even ({args.even_passes} pass)", "walk")):
        row = report[key]
        print(f"{name:<14}{row['mean']:>10.4f}{row['max']:>10.4f}{row['cv']:>8.3f}")
    print(f"even-motion CV / linear CV = {report['cv_ratio']:.3f} (target <= 0.5)")
    if "closing" in report["walk"]:
        print(f"loop closing step (last -> first frame): {report['walk']['closing']:.4f}")
    print(f"rendered {result.rendered} frames (probe passes included) in {seconds:.1f} s: "
          f"{result.rendered / seconds:.2f} frames/s")


if __name__ == "__main__":
    main()
