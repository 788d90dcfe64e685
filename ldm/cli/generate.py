"""`ldm generate RUN/pipeline "a red circle" ... [--n 4 --seed 7 ...]`."""

from __future__ import annotations

import argparse
from argparse import SUPPRESS

from ldm.cli.lora_args import add_lora_arguments, lora_choices_of
from ldm.cli.ranges import COUNT, GUIDANCE, SEED, SIDE, STEPS, integer, number
from ldm.cli.settings_help import given, show_defaults_of
from ldm.cli.text_args import TEXT_OPTIONS, add_text_arguments

# Options that set the GenerateOptions field of their name; one not given (SUPPRESS) is left to the
# field's default (ldm/cli/settings_help.py).
SETTINGS_OPTIONS = ("n", "seed", "steps", "guidance", "guidance_rescale", "negative", "sampler", "eta", "height",
                    "width", "init_image",
                    "strength", "mask", "feather", "repaint", "out", "batch_size", "device", "dtype", "vae",
                    *TEXT_OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    show_defaults_of(parser, "ldm.apps.generate_settings:GenerateOptions")
    parser.add_argument("pipeline", help="pipeline folder written by the diffusion stage (RUN/pipeline)")
    parser.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts, each in quotes")
    parser.add_argument("--prompts-file", help="text file with one prompt per line (added after PROMPTs)")
    parser.add_argument("--n", type=integer(1, 10000), default=SUPPRESS,
                        help="images per prompt (default %(default)s)")
    parser.add_argument("--seed", type=SEED, default=SUPPRESS,
                        help="seed of each prompt's first image; image i uses seed+i (default %(default)s)")
    parser.add_argument("--steps", type=STEPS, default=SUPPRESS, help="denoising steps (default %(default)s)")
    parser.add_argument("--guidance", type=GUIDANCE, default=SUPPRESS,
                        help="classifier-free guidance scale; 1 turns guidance off (default %(default)s)")
    parser.add_argument("--guidance-rescale", type=number(0.0, 1.0), default=SUPPRESS,
                        help="guidance rescale, 0-1: 0 plain guidance (default: the pipeline's own, 0.7 for "
                             "a noise.zero_terminal_snr model, else 0)")
    parser.add_argument("--negative", default=SUPPRESS, help="negative prompt (needs --guidance above 1)")
    add_text_arguments(parser)
    parser.add_argument("--sampler", default=SUPPRESS,
                        help="sampler name (default: dpmsolver++, or lcm for a pipeline distilled by "
                             "`ldm train configs/distill/...`); a wrong name lists the valid ones")
    parser.add_argument("--eta", type=number(0.0, 1.0), default=SUPPRESS,
                        help="DDIM's eta: 0 deterministic, 1 DDPM-like (default %(default)s)")
    parser.add_argument("--height", type=SIDE, default=SUPPRESS, help="image height in pixels (default: the model's)")
    parser.add_argument("--width", type=SIDE, default=SUPPRESS, help="image width in pixels (default: the model's)")
    parser.add_argument("--init-image", default=SUPPRESS, help="start from this image (image-to-image)")
    parser.add_argument("--strength", type=number(0.0, 1.0, low_open=True), default=SUPPRESS,
                        help="with --init-image: how much of it to repaint, 0-1 (default %(default)s)")
    parser.add_argument("--mask", default=SUPPRESS,
                        help="with --init-image: repaint only the mask's white part and keep the rest (inpainting)")
    parser.add_argument("--feather", type=integer(0, 256), default=SUPPRESS,
                        help="with --mask: the blur radius, in pixels, of the mask's edge; the repainted part "
                             "blends into the image over about 2.5 times that outside the mask; 0: a sharp "
                             "edge (default %(default)s)")
    parser.add_argument("--repaint", type=integer(0, 100), default=SUPPRESS,
                        help="with --mask: RePaint's resampling, times each step is noised back and redone; "
                             "slower, the repainted part fits the rest better (default %(default)s)")
    parser.add_argument("--out", default=SUPPRESS,
                        help="output folder (default: samples/ beside the pipeline folder)")
    parser.add_argument("--batch-size", type=COUNT, default=SUPPRESS,
                        help="images per model call (default %(default)s)")
    parser.add_argument("--device", default=SUPPRESS,
                        help="cpu, cuda, cuda:1, mps (default: the accelerator if any, one per process)")
    parser.add_argument("--dtype", default=SUPPRESS, help="float32, float16 or bfloat16 (default %(default)s)")
    add_lora_arguments(parser)
    parser.add_argument("--vae", metavar="DIR", default=SUPPRESS,
                        help="decode with this autoencoder (e.g. RUN/vae of a train.decoder_only run) instead "
                             "of the pipeline's; it must share the pipeline's latents")


def run(args: argparse.Namespace) -> None:
    from ldm.apps.generate import generate, output_folder, read_prompts
    from ldm.apps.generate_settings import GenerateOptions

    opts = GenerateOptions(pipeline=args.pipeline, prompts=read_prompts(args.prompts, args.prompts_file),
                           loras=lora_choices_of(args), **given(args, SETTINGS_OPTIONS))
    written = generate(opts)
    print(f"wrote {len(written)} images to {output_folder(opts)}")
