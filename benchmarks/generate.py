"""Images per second: `LatentDiffusionPipeline` (what `ldm generate` runs) beside diffusers'
`StableDiffusionPipeline`, on the same KL pipeline folder, at the same dtype, batch and sampler.

    python -m benchmarks generate                       # a random-weight model, shapes sizes
    python -m benchmarks generate --pipeline runs/shapes/pipeline --batch 16 --repeats 5

Without --pipeline, a model of the sizes in configs/{autoencoder/kl_f4_shapes,clip/clip_shapes,
diffusion/ldm_shapes}.yaml is built with random weights (speed does not depend on the weights) and
exported to a temporary folder. The two pipelines run in alternation, each call timed separately;
the figures are medians. Both produce the same images (checked here), so only speed differs.
On a shared machine, wall-clock figures swing with the other load; CPU time (this process's
seconds on a core) is steadier, so both are printed.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from benchmarks import random_models
from benchmarks.harness import clock
from ldm.apps.generate import DTYPES
from ldm.sampling.pipeline_io import export_pipeline, load_pipeline
from ldm.sampling.samplers import make_sampler
from ldm.stages.clip.tokenizer import train_tokenizer

PROMPTS = ["a red circle in the top left", "a large blue square on a white background",
           "a small green triangle in the center", "two shapes on black: a yellow circle and a purple square"]
SHAPES_TEXT = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 512}


def add_arguments(parser) -> None:
    parser.add_argument("--pipeline", help="a KL pipeline folder (default: a random shapes-sized one)")
    parser.add_argument("--batch", type=int, default=16, help="images per call (default 16)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each pipeline")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def shapes_sized_pipeline(out: Path) -> Path:
    """Random weights, the shapes configs' sizes: 32 px, KL f=4 (8x8x4 latents), CLIP width 128."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer(random_models.shapes_captions(300), 1000)
    text_encoder = random_models.text_encoder(SHAPES_TEXT, tokenizer)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=32, sample_size=32)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128),
                                down_block_types=("CrossAttnDownBlock2D",) * 2,
                                up_block_types=("CrossAttnUpBlock2D",) * 2, layers_per_block=1,
                                attention_head_dim=8, norm_num_groups=32, cross_attention_dim=128)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return export_pipeline(out / "pipeline", vae, text_encoder, tokenizer, unet, scheduler)


def load_both(path: Path, args) -> dict:
    """Ours and diffusers' pipeline on the same folder, both with DPM-Solver++."""
    dtype = DTYPES[args.dtype]
    theirs = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, dtype=dtype)
    pipes = {"ldm": load_pipeline(path, dtype=dtype, device=args.device), "diffusers": theirs.to(args.device)}
    for pipe in pipes.values():
        pipe.scheduler = make_sampler("dpmsolver++", pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
    return pipes


def call(pipe, args, output_type: str = "pil"):
    """(wall and CPU seconds, images) of one call on the batch (4 prompts, repeated)."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    generators = [torch.Generator(args.device).manual_seed(i) for i in range(args.batch)]
    with clock() as timed:  # the images come back to the host: the GPU has finished
        images = pipe(prompts, num_inference_steps=args.steps, guidance_scale=args.guidance,
                      generator=generators, output_type=output_type).images
    return timed, images


def print_figures(args, path, same: float, times: dict, rate: dict, cpu_rate: dict) -> None:
    print(f"pipeline: {path if args.pipeline else 'random weights, shapes sizes (32 px, f=4, UNet 64-128)'}")
    print(f"batch {args.batch}, {args.steps} DPM-Solver++ steps, guidance {args.guidance}, {args.dtype}, "
          f"{args.device}, {args.threads} threads, median of {args.repeats} calls each")
    print(f"max abs difference of the images: {same:.2e}")
    for name in times:
        calls = ", ".join(f"{t.wall:.2f}s" for t in times[name])
        print(f"{name:>10}: {rate[name]:6.2f} images/s wall clock, {cpu_rate[name]:6.2f} images per "
              f"CPU-second   (calls: {calls})")
    print(f"speed-up: {rate['ldm'] / rate['diffusers']:.2f}x wall clock, "
          f"{cpu_rate['ldm'] / cpu_rate['diffusers']:.2f}x CPU time")


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.pipeline) if args.pipeline else shapes_sized_pipeline(Path(tmp))
        pipes = load_both(path, args)
        same = float(np.abs(call(pipes["ldm"], args, "np")[1] - call(pipes["diffusers"], args, "np")[1]).max())
        times = {name: [] for name in pipes}  # the calls above were also the warm-up
        for _ in range(args.repeats):
            for name, pipe in pipes.items():
                times[name].append(call(pipe, args)[0])
    rate = {name: args.batch / statistics.median(t.wall for t in ts) for name, ts in times.items()}
    cpu_rate = {name: args.batch / statistics.median(t.cpu for t in ts) for name, ts in times.items()}
    print_figures(args, path, same, times, rate, cpu_rate)
    return {"images_per_second": rate, "images_per_cpu_second": cpu_rate, "max_abs_difference": same,
            "speed_up": rate["ldm"] / rate["diffusers"], "calls": {n: [t.wall for t in ts] for n, ts in times.items()}}
