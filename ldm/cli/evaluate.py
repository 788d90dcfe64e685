"""`ldm evaluate autoencoder|diffusion|inpainting|walk ...`: figures as a table, and as JSON with --out."""

from __future__ import annotations

import argparse
from argparse import SUPPRESS

from ldm.cli.ranges import COUNT, GUIDANCE, SEED, STEPS, integer, number
from ldm.cli.settings_help import given, show_defaults_of

# Each subcommand's settings model (ldm/apps/evaluate/settings.py), and the options that set the field
# of their name; one not given (SUPPRESS) is left to the field's default (ldm/cli/settings_help.py).
SETTINGS = {"autoencoder": "AutoencoderEvaluation", "diffusion": "DiffusionEvaluation",
            "inpainting": "InpaintingEvaluation", "walk": "WalkEvaluation"}
SETTINGS_OPTIONS = ("data", "split", "max_images", "grid", "prompts_file", "clip", "inception", "n", "seed", "steps",
                    "guidance", "sampler", "samples", "out", "cases", "strength", "feather", "repaint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    ae = sub.add_parser("autoencoder", help="PSNR, SSIM (and codebook usage for VQ) of reconstructions",
                        description="Reconstruct a split of a dataset with RUN/vae and measure PSNR and "
                                    "SSIM (and codebook usage and perplexity for a VQ autoencoder).")
    show_defaults_of(ae, f"ldm.apps.evaluate.settings:{SETTINGS['autoencoder']}")
    ae.add_argument("vae", help="autoencoder folder (RUN/vae)")
    ae.add_argument("--data", required=True, help="dataset folder (e.g. data/shapes)")
    ae.add_argument("--split", default=SUPPRESS, help="split to reconstruct (default %(default)s)")
    ae.add_argument("--max-images", type=COUNT, default=SUPPRESS, help="images to use at most (default %(default)s)")
    ae.add_argument("--grid", default=SUPPRESS, help="also write originals over reconstructions to this new PNG")

    dm = sub.add_parser("diffusion", help="prompt fidelity, CLIP score, FID and KID of a pipeline",
                        description="Generate images for a set of prompts and measure CLIP score, and "
                                    "FID/KID against the real images of a split: on Inception-v3 with "
                                    "--inception, otherwise on the CLIP's image features (labelled so). "
                                    "The prompts are --prompts-file's; else, on the shapes data, its "
                                    "held-out prompts, also read back for prompt fidelity (attribute "
                                    "checker); else the split's first distinct captions.")
    show_defaults_of(dm, f"ldm.apps.evaluate.settings:{SETTINGS['diffusion']}")
    dm.add_argument("pipeline", help="pipeline folder (RUN/pipeline)")
    dm.add_argument("--data", required=True, help="dataset folder whose split is compared (e.g. data/shapes)")
    dm.add_argument("--prompts-file", default=SUPPRESS,
                    help="prompts to generate for, one per line (default: see above)")
    dm.add_argument("--clip", default=SUPPRESS,
                    help="CLIP folder for CLIP score and CLIP-feature FID (default: RUN/clip beside the pipeline); "
                         "a pretrained CLIP folder works too")
    dm.add_argument("--inception", default=SUPPRESS,
                    help="local Inception-v3 weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth) "
                         "for standard FID/KID")
    dm.add_argument("--split", default=SUPPRESS, help="split of real images to compare with (default %(default)s)")
    dm.add_argument("--n", type=integer(1, 10000), default=SUPPRESS, help="images per prompt (default %(default)s)")
    dm.add_argument("--seed", type=SEED, default=SUPPRESS, help="first seed (default %(default)s)")
    dm.add_argument("--steps", type=STEPS, default=SUPPRESS, help="denoising steps (default %(default)s)")
    dm.add_argument("--guidance", type=GUIDANCE, default=SUPPRESS, help="guidance scale (default %(default)s)")
    dm.add_argument("--sampler", default=SUPPRESS,
                    help="sampler name, as ldm generate's (default: the pipeline's own)")
    dm.add_argument("--samples", default=SUPPRESS,
                    help="keep the generated images in this folder, new or without images (default: discarded)")

    ip = sub.add_parser("inpainting", help="shapes replaced in a mask: checker fidelity inside, PSNR outside",
                        description="Replace the object of shapes images (drawn by the shapes generator at the "
                                    "pipeline's size) by another colour and shape in a mask over it, as ldm generate "
                                    "--init-image --mask does (any pipeline by latent blending, an inpainting model "
                                    "by itself), and measure the attribute checker's fidelity to the prompt inside "
                                    "the mask and the PSNR against the init image outside it.")
    show_defaults_of(ip, f"ldm.apps.evaluate.settings:{SETTINGS['inpainting']}")
    ip.add_argument("pipeline", help="pipeline folder (RUN/pipeline), text-to-image or inpainting")
    ip.add_argument("--cases", type=integer(1, 1000), default=SUPPRESS, help="shapes images (default %(default)s)")
    ip.add_argument("--n", type=integer(1, 10000), default=SUPPRESS, help="images per case (default %(default)s)")
    ip.add_argument("--seed", type=SEED, default=SUPPRESS, help="first seed (default %(default)s)")
    ip.add_argument("--steps", type=STEPS, default=SUPPRESS, help="denoising steps (default %(default)s)")
    ip.add_argument("--guidance", type=GUIDANCE, default=SUPPRESS, help="guidance scale (default %(default)s)")
    ip.add_argument("--strength", type=number(0.0, 1.0, low_open=True), default=SUPPRESS,
                    help="how much of the masked part to repaint, 0-1 (default %(default)s)")
    ip.add_argument("--feather", type=integer(0, 256), default=SUPPRESS,
                    help="blur radius of the mask's edge in the overlay, pixels (default %(default)s)")
    ip.add_argument("--repaint", type=integer(0, 100), default=SUPPRESS,
                    help="RePaint's resampling for a text-to-image pipeline (default %(default)s)")
    ip.add_argument("--samples", default=SUPPRESS,
                    help="keep the images and grid.png (init, mask, images per case) in this new folder")

    walk = sub.add_parser("walk", help="smoothness of a rendered walk",
                          description="Adjacent-frame distances of a walk folder written by ldm animate.")
    show_defaults_of(walk, f"ldm.apps.evaluate.settings:{SETTINGS['walk']}")
    walk.add_argument("folder", help="walk folder (holds settings.json and frames/)")

    for command in (ae, dm, ip, walk):
        command.add_argument("--out", default=SUPPRESS, help="write the results as JSON to this new file")


def run(args: argparse.Namespace) -> None:
    from ldm.apps.evaluate import evaluate, settings
    from ldm.metrics.results import format_table

    model = getattr(settings, SETTINGS[args.what])
    target = {"autoencoder": "vae", "diffusion": "pipeline", "inpainting": "pipeline", "walk": "folder"}[args.what]
    result = evaluate(model(**{target: getattr(args, target)}, **given(args, SETTINGS_OPTIONS)))
    print(format_table([result]))
    for key, value in result.settings.items():
        if key == "skipped":
            print(f"skipped: {value}")
    if hasattr(args, "out"):
        print(f"wrote {args.out}")
