"""What the smoothness regulariser (`loss.smoothness`) costs a stage-2 training step: the same UNet,
batch and optimizer, steps with and without the term timed back to back in one process.

    python -m benchmarks smoothness-cost QUICKSTART [--rounds 5 --steps 6 --batch 64]

Builds the shapes stage-2 module (configs/diffusion/ldm_shapes.yaml) on quickstart folder Q's
autoencoder and text encoder, then alternates rounds of `--steps` training steps (forward, backward,
AdamW) without and with the term, so that load from other processes falls on both alike; prints
the median seconds a step of each and their ratio. The batch is random latents of the run's shape
with real caption embeddings: a step's time does not depend on what the latents show.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from benchmarks.harness import clock
from benchmarks.stage2 import quickstart_config
from ldm.stages.diffusion.train import build_module

PROMPTS = ["a red circle in the top left", "a yellow square in the bottom right", "a blue triangle"]


def add_arguments(parser) -> None:
    parser.add_argument("quickstart", type=Path, help="a quickstart folder (vae/, text_encoder/, data/)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default 5)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps a round (default 6)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64, the shapes config's)")
    parser.add_argument("--weight", type=float, default=1.0, help="loss.smoothness (default 1)")


def batch_for(module, size: int, resolution: int) -> dict:
    side = resolution // module.autoencoder.factor
    latents = torch.randn(size, module.autoencoder.latent_channels, side, side)
    embeddings = module.conditioner.encode([PROMPTS[i % len(PROMPTS)] for i in range(size)])
    return {"mean": latents, "embeddings": embeddings}


def step_seconds(module, optimizer, batch: dict, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        with clock() as timed:
            optimizer.zero_grad(set_to_none=True)
            module.training_step(batch, 0).backward()
            optimizer.step()
        times.append(timed.wall)
    return times


def run(args) -> dict:
    cfg = quickstart_config(args.quickstart, Path("/tmp/smoothness-cost"), 10,
                            [f"loss.smoothness={args.weight}", f"data.batch_size={args.batch}"])
    module = build_module(cfg).train()
    module.log = lambda *a, **k: None  # no Trainer to log to
    optimizer = torch.optim.AdamW(module.trained_parameters(), lr=cfg.train.lr)
    batch = batch_for(module, args.batch, cfg.data.resolution)
    smoothness, seconds = module.smoothness, {"without": [], "with": []}
    for _ in range(args.rounds):
        for name, part in (("without", None), ("with", smoothness)):
            module.smoothness = part
            step_seconds(module, optimizer, batch, 1)  # warm-up of this variant's graph
            seconds[name] += step_seconds(module, optimizer, batch, args.steps)
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    ratio = medians["with"] / medians["without"]
    print(f"\nstage-2 step, batch {args.batch}, shapes UNet: without the term {medians['without']:.3f} s, "
          f"with loss.smoothness={args.weight:g} {medians['with']:.3f} s: {ratio:.2f}x "
          f"(medians of {args.rounds} x {args.steps} steps each, rounds alternated)")
    return {"seconds_per_step": medians, "ratio": ratio}
