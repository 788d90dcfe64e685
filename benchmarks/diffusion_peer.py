"""Quality in the same time: stage 2 trained by ldm against the plain diffusers loop, on the same data.

    python -m benchmarks diffusion-peer --config configs/diffusion/ldm_clipart64.yaml --minutes 10 \
        run_dir=runs/clipart vae=runs/clipart/vae text_encoder=runs/clipart data.source=data/clipart

Both start from the same UNet (same config, same initial weights) with the same frozen autoencoder and
text encoder (stage 1 and 1b must be trained first):
- ldm: `ldm train` of the config, capped at --minutes of wall time (the latent cache's build counts),
- plain: benchmarks/baselines/plain_loop.py (encoding every step, fp32) for the same wall time ldm took.
Each is then exported as a pipeline (EMA weights) and evaluated with `ldm evaluate diffusion` against
the held-out split (--split): CLIP score with the run's own CLIP and FID on its image features, the
real images' own figures beside them. Prints a table; the pipelines and their samples are kept in
RUN/peer/ to look at.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.baselines.plain_loop import train_and_export
from benchmarks.harness import add_overrides
from benchmarks.stage2 import train_ldm
from ldm.apps.evaluate import evaluate_diffusion
from ldm.metrics.results import format_table
from ldm.stages.registry import load_config


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="configs/diffusion/ldm_clipart64.yaml")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of each (default 10)")
    parser.add_argument("--split", default="test", help="held-out split to compare with (default test)")
    parser.add_argument("--n", type=int, default=4, help="images per prompt (default 4)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--guidance", type=float, default=4.0)
    add_overrides(parser, "run_dir=... vae=... text_encoder=...")


def run(args) -> dict:
    cfg = load_config(args.config, [*args.overrides, f"train.max_minutes={args.minutes}",
                                    "train.max_steps=1000000", "samples.prompts=[]"])
    peer_dir = Path(cfg.run_dir) / "peer"
    start = time.perf_counter()
    ours, ldm_steps = train_ldm(cfg)
    seconds = time.perf_counter() - start
    print(f"ldm: {ldm_steps} steps in {seconds / 60:.1f} min (cache and export included)")
    plain, plain_steps = train_and_export(cfg, seconds, peer_dir / "plain_pipeline")
    print(f"plain loop: {plain_steps} steps in the same {seconds / 60:.1f} min")

    clip = Path(cfg.text_encoder) / "clip"
    results = []
    for name, pipeline, steps in (("ldm", ours, ldm_steps), ("plain loop", plain, plain_steps)):
        result = evaluate_diffusion(str(pipeline), cfg.data.source, clip=str(clip), split=args.split, n=args.n,
                                    steps=args.steps, guidance=args.guidance,
                                    samples=peer_dir / f"samples-{name.replace(' ', '-')}")
        result.kind = f"{name} ({steps} steps)"
        results.append(result)
    print(format_table(results))
    return {"seconds": round(seconds, 1), "steps": {"ldm": ldm_steps, "plain loop": plain_steps},
            "evaluations": {r.kind: {m.key: m.value for m in r.metrics} for r in results}}
