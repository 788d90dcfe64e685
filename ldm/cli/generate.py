"""`ldm generate RUN/pipeline "a red circle" ... [--n 4 --seed 7 ...]`."""

from __future__ import annotations

import argparse

from ldm.cli.lora_args import add_lora_arguments, lora_choices_of
from ldm.cli.ranges import COUNT, GUIDANCE, SEED, SIDE, STEPS, integer, number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", help="pipeline folder written by the diffusion stage (RUN/pipeline)")
    parser.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts, each in quotes")
    parser.add_argument("--prompts-file", help="text file with one prompt per line (added after PROMPTs)")
    parser.add_argument("--n", type=integer(1, 10000), default=1, help="images per prompt (default 1)")
    parser.add_argument("--seed", type=SEED, default=0,
                        help="seed of each prompt's first image; image i uses seed+i (default 0)")
    parser.add_argument("--steps", type=STEPS, default=20, help="denoising steps (default 20)")
    parser.add_argument("--guidance", type=GUIDANCE, default=5.0,
                        help="classifier-free guidance scale; 1 turns guidance off (default 5)")
    parser.add_argument("--negative", default="", help="negative prompt (needs --guidance above 1)")
    parser.add_argument("--sampler", default="dpmsolver++",
                        help="sampler name (default dpmsolver++); a wrong name lists the valid ones")
    parser.add_argument("--eta", type=number(0.0, 1.0), default=0.0, help="DDIM's eta: 0 deterministic, 1 DDPM-like")
    parser.add_argument("--height", type=SIDE, help="image height in pixels (default: the model's)")
    parser.add_argument("--width", type=SIDE, help="image width in pixels (default: the model's)")
    parser.add_argument("--init-image", help="start from this image (image-to-image)")
    parser.add_argument("--strength", type=number(0.0, 1.0, low_open=True), default=0.8,
                        help="with --init-image: how much of it to repaint, 0-1 (default 0.8)")
    parser.add_argument("--out", help="output folder (default: samples/ beside the pipeline folder)")
    parser.add_argument("--batch-size", type=COUNT, default=8, help="images per model call (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the accelerator if any, one per process)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    add_lora_arguments(parser)
    parser.add_argument("--vae", metavar="DIR",
                        help="decode with this autoencoder (e.g. RUN/vae of a train.decoder_only run) instead "
                             "of the pipeline's; it must share the pipeline's latents")


def run(args: argparse.Namespace) -> None:
    from ldm.apps.generate import GenerateOptions, generate, output_folder, read_prompts

    opts = GenerateOptions(
        pipeline=args.pipeline, prompts=read_prompts(args.prompts, args.prompts_file), out=args.out,
        n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance, negative=args.negative,
        sampler=args.sampler, eta=args.eta, height=args.height, width=args.width,
        init_image=args.init_image, strength=args.strength, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, loras=lora_choices_of(args), vae=args.vae)
    written = generate(opts)
    print(f"wrote {len(written)} images to {output_folder(opts)}")
