"""Images per second: `LatentDiffusionPipeline` (what `ldm generate` runs) beside diffusers'
`StableDiffusionPipeline`, on the same KL pipeline folder, at the same dtype, batch and sampler.

    python scripts/benchmark_generate.py                       # a random-weight model, shapes sizes
    python scripts/benchmark_generate.py --pipeline runs/shapes/pipeline --batch 16 --repeats 5

Without --pipeline, a model of the sizes in configs/{autoencoder/kl_f4_shapes,clip/clip_shapes,
diffusion/ldm_shapes}.yaml is built with random weights (speed does not depend on the weights) and
exported to a temporary folder. The two pipelines run in alternation, each call timed separately;
the figures are medians. Both produce the same images (checked here), so only speed differs.
On a shared machine, wall-clock figures swing with the other load; CPU time (this process's
seconds on a core) is steadier, so both are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from ldm.apps.generate import DTYPES
from ldm.data.shapes.generator import make_example
from ldm.sampling.pipeline_io import export_pipeline, load_pipeline
from ldm.sampling.samplers import make_sampler
from ldm.stages.clip.tokenizer import train_tokenizer

PROMPTS = ["a red circle in the top left", "a large blue square on a white background",
           "a small green triangle in the center", "two shapes on black: a yellow circle and a purple square"]


def shapes_sized_pipeline(out: Path) -> Path:
    """Random weights, the shapes configs' sizes: 32 px, KL f=4 (8x8x4 latents), CLIP width 128."""
    import random

    torch.manual_seed(0)
    rng = random.Random(0)
    tokenizer = train_tokenizer([make_example(rng, 32, False)[1]["text"] for _ in range(300)], 1000)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=32, sample_size=32)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128),
                                down_block_types=("CrossAttnDownBlock2D",) * 2,
                                up_block_types=("CrossAttnUpBlock2D",) * 2, layers_per_block=1,
                                attention_head_dim=8, norm_num_groups=32, cross_attention_dim=128)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return export_pipeline(out / "pipeline", vae, text_encoder, tokenizer, unet, scheduler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="a KL pipeline folder (default: a random shapes-sized one)")
    parser.add_argument("--batch", type=int, default=16, help="images per call (default 16)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each pipeline")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.pipeline) if args.pipeline else shapes_sized_pipeline(Path(tmp))
        ours = load_pipeline(path, dtype=dtype, device=args.device)
        theirs = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, dtype=dtype).to(args.device)
        for pipe in (ours, theirs):
            pipe.scheduler = make_sampler("dpmsolver++", pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)

        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]  # 4 prompts, repeated

        def call(pipe, output_type="pil"):
            generators = [torch.Generator(args.device).manual_seed(i) for i in range(args.batch)]
            start, start_cpu = time.perf_counter(), time.process_time()
            images = pipe(prompts, num_inference_steps=args.steps, guidance_scale=args.guidance,
                          generator=generators, output_type=output_type).images  # on the host: synchronised
            return (time.perf_counter() - start, time.process_time() - start_cpu), images

        same = np.abs(call(ours, "np")[1] - call(theirs, "np")[1]).max()  # also the warm-up
        times = {"ldm": [], "diffusers": []}
        for _ in range(args.repeats):
            times["ldm"].append(call(ours)[0])
            times["diffusers"].append(call(theirs)[0])

    rate = {name: args.batch / statistics.median(wall for wall, _ in t) for name, t in times.items()}
    cpu_rate = {name: args.batch / statistics.median(cpu for _, cpu in t) for name, t in times.items()}
    print(f"pipeline: {path if args.pipeline else 'random weights, shapes sizes (32 px, f=4, UNet 64-128)'}")
    print(f"batch {args.batch}, {args.steps} DPM-Solver++ steps, guidance {args.guidance}, {args.dtype}, "
          f"{args.device}, {args.threads} threads, median of {args.repeats} calls each")
    print(f"max abs difference of the images: {same:.2e}")
    for name in times:
        calls = ", ".join(f"{wall:.2f}s" for wall, _ in times[name])
        print(f"{name:>10}: {rate[name]:6.2f} images/s wall clock, {cpu_rate[name]:6.2f} images per "
              f"CPU-second   (calls: {calls})")
    print(f"speed-up: {rate['ldm'] / rate['diffusers']:.2f}x wall clock, "
          f"{cpu_rate['ldm'] / cpu_rate['diffusers']:.2f}x CPU time")


if __name__ == "__main__":
    main()
