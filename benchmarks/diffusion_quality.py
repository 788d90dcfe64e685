"""Prompt fidelity of stage 2 on the shapes data: train (time-capped), generate, check attributes.

    python -m benchmarks diffusion-quality run_dir=runs/shapes_bench   # train, then judge
    python -m benchmarks diffusion-quality --no-train                  # judge runs/shapes/pipeline

Trains `configs/diffusion/ldm_shapes.yaml` for at most --minutes of training (the latent cache is
built before the clock starts), reading stage 1 and 1b from runs/shapes (the config's `vae` and
`text_encoder`; a fresh `run_dir` keeps an earlier stage-2 run out of the way), then generates
images for the held-out colour/shape/position combinations of the shapes data (combinations never
seen in training), --seeds images each, and reads their colour and shape with
`ldm.data.shapes.checker`. Prints the share right and writes a grid PNG beside the run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.harness import add_overrides
from ldm.data.shapes.checker import prompt_fidelity
from ldm.data.shapes.generator import HELD_OUT, held_out_prompts
from ldm.sampling.pipeline_io import load_pipeline
from ldm.stages.registry import load_config, train


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="configs/diffusion/ldm_shapes.yaml")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time cap")
    parser.add_argument("--no-train", action="store_true", help="judge the existing RUN/pipeline")
    parser.add_argument("--seeds", type=int, default=8, help="images per held-out prompt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    add_overrides(parser, "run_dir=runs/bench")


def generate(pipeline_dir: Path, seeds: int, steps: int, guidance: float) -> tuple[list, list]:
    pipe = load_pipeline(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    images, attributes = [], []
    for prompt, (colour, shape, position) in zip(held_out_prompts(), HELD_OUT):
        generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
        out = pipe([prompt] * seeds, num_inference_steps=steps, guidance_scale=guidance,
                   generator=generators).images
        images += out
        attributes += [{"colour": colour, "shape": shape, "position": position}] * seeds
    return images, attributes


def save_grid(images: list, rows: int, path: Path) -> None:
    arrays = [np.asarray(image) for image in images]
    cols = len(arrays) // rows
    grid = np.concatenate([np.concatenate(arrays[r * cols:(r + 1) * cols], axis=1) for r in range(rows)])
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(path)


def train_timed(args, overrides: list[str]) -> dict:
    start = time.perf_counter()
    steps = train(args.config, overrides).trainer.global_step
    minutes = (time.perf_counter() - start) / 60
    print(f"trained {steps} steps in {minutes:.1f} min (cache and export included); "
          f"{steps / (minutes * 60):.2f} steps/s")
    return {"steps": steps, "minutes": round(minutes, 2)}


def run(args) -> dict:
    overrides = [*args.overrides, f"train.max_minutes={args.minutes}"]
    cfg = load_config(args.config, overrides)
    trained = {} if args.no_train else train_timed(args, overrides)
    images, attributes = generate(Path(cfg.run_dir) / "pipeline", args.seeds, args.steps, args.guidance)
    scores = prompt_fidelity(images, attributes)
    grid = Path(cfg.run_dir) / "diffusion" / "held_out_grid.png"
    save_grid(images, len(HELD_OUT), grid)
    print(f"held-out prompts: {len(HELD_OUT)} x {args.seeds} seeds, {args.steps} steps, "
          f"guidance {args.guidance}")
    by_background = scores.pop("by_background")
    scores.pop("background_counts")
    figures = {**scores, **{f"on {name}": v for name, v in by_background.items()}}
    for key, value in figures.items():
        print(f"  {key:>16}: {value:.1%}")
    print(f"grid: {grid}")
    return {**trained, "fidelity": figures, "grid": str(grid)}
