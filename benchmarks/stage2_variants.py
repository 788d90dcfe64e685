"""Stage 2 variants for M minutes on a quickstart's stage-1 models, judged at guidance 1 and 4.

    python -m benchmarks stage2-variants Q NAME MINUTES [--plain] [--steps N] [--seeds S] [--guidance G ...]
                                         [config overrides ...]

Trains configs/diffusion/ldm_shapes.yaml (or, with --plain, benchmarks/baselines/plain_loop.py) for
MINUTES into OUT/NAME (--out, default /tmp/exp), or for exactly N steps with --steps (ldm only: the
clock off, so that variants compare at the same steps whatever else runs on the machine), then
scores 8 held-out prompts x S seeds (default 8) at each --guidance (default 1 and 4): prompt fidelity
(and per colour, shape, background), FID on the run's CLIP features, edge sharpness; appends a line
to OUT/results.jsonl. The table of docs/benchmarks.md (session 7, "Stage 2 side by side") was measured
with it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.baselines.plain_loop import train_and_export
from benchmarks.harness import add_overrides
from benchmarks.stage2 import judge, quickstart_config, train_ldm

GUIDANCES = (1.0, 4.0)
KEPT = ("fid_clip", "sharpness")  # and every prompt_fidelity* figure


def add_arguments(parser) -> None:
    parser.add_argument("quickstart", type=Path, help="a quickstart folder (stage-1 models and data)")
    parser.add_argument("name", help="the variant's name: its run folder and its line in results.jsonl")
    parser.add_argument("minutes", type=float, help="training time (train.max_minutes)")
    parser.add_argument("--plain", action="store_true", help="train the plain diffusers loop instead of ldm")
    parser.add_argument("--out", type=Path, default=Path("/tmp/exp"), help="where runs go (default /tmp/exp)")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps (MINUTES ignored)")
    parser.add_argument("--seeds", type=int, default=8, help="images per held-out prompt (default 8)")
    parser.add_argument("--guidance", type=float, action="append", default=None,
                        help="a guidance scale to judge at (repeatable; default 1 and 4)")
    add_overrides(parser, "train.max_steps=1300")


def run(args) -> dict:
    out = args.out / args.name
    budget = ["train.max_steps=100000"] if args.steps is None else [f"train.max_steps={args.steps}",
                                                                   "train.max_minutes=null"]
    cfg = quickstart_config(args.quickstart, out, args.minutes, [*budget, *args.overrides])
    start = time.perf_counter()
    if args.plain:
        pipeline, steps = train_and_export(cfg, args.minutes * 60, out / "pipeline")
    else:
        pipeline, steps = train_ldm(cfg)
    result = {"name": args.name, "steps": steps, "train_s": round(time.perf_counter() - start, 1)}
    for guidance in args.guidance or GUIDANCES:
        scores = judge(args.quickstart, pipeline, args.seeds, guidance, out / f"samples_g{guidance:g}")
        result[f"g{guidance:g}"] = {key: round(value, 4) for key, value in scores.items()
                                    if key in KEPT or key.startswith("prompt_fidelity")}
    print("RESULT", json.dumps(result), flush=True)
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result
