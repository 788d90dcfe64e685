"""`ldm evaluate autoencoder|diffusion|walk ...`: figures as a table, and as JSON with --out."""

from __future__ import annotations

import argparse

from ldm.cli.ranges import COUNT, GUIDANCE, SEED, STEPS, integer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    ae = sub.add_parser("autoencoder", help="PSNR, SSIM (and codebook usage for VQ) of reconstructions",
                        description="Reconstruct a split of a dataset with RUN/vae and measure PSNR and "
                                    "SSIM (and codebook usage and perplexity for a VQ autoencoder).")
    ae.add_argument("vae", help="autoencoder folder (RUN/vae)")
    ae.add_argument("--data", required=True, help="dataset folder (e.g. data/shapes)")
    ae.add_argument("--split", default="test", help="split to reconstruct (default test)")
    ae.add_argument("--max-images", type=COUNT, default=512, help="images to use at most (default 512)")
    ae.add_argument("--grid", help="also write originals over reconstructions to this PNG")

    dm = sub.add_parser("diffusion", help="prompt fidelity, CLIP score, FID and KID of a pipeline",
                        description="Generate images for a set of prompts and measure CLIP score, and "
                                    "FID/KID against the real images of a split: on Inception-v3 with "
                                    "--inception, otherwise on the CLIP's image features (labelled so). "
                                    "The prompts are --prompts-file's; else, on the shapes data, its "
                                    "held-out prompts, also read back for prompt fidelity (attribute "
                                    "checker); else the split's first distinct captions.")
    dm.add_argument("pipeline", help="pipeline folder (RUN/pipeline)")
    dm.add_argument("--data", required=True, help="dataset folder whose split is compared (e.g. data/shapes)")
    dm.add_argument("--prompts-file", help="prompts to generate for, one per line (default: see above)")
    dm.add_argument("--clip", help="CLIP folder for CLIP score and CLIP-feature FID (default: RUN/clip "
                                   "beside the pipeline); a pretrained CLIP folder works too")
    dm.add_argument("--inception", help="local Inception-v3 weights file (torch-fidelity's "
                                        "weights-inception-2015-12-05-6726825d.pth) for standard FID/KID")
    dm.add_argument("--split", default="test", help="split of real images to compare with (default test)")
    dm.add_argument("--n", type=integer(1, 10000), default=8, help="images per prompt (default 8)")
    dm.add_argument("--seed", type=SEED, default=0, help="first seed (default 0)")
    dm.add_argument("--steps", type=STEPS, default=20, help="denoising steps (default 20)")
    dm.add_argument("--guidance", type=GUIDANCE, default=4.0, help="guidance scale (default 4)")
    dm.add_argument("--samples", help="keep the generated images in this folder (default: discarded)")

    walk = sub.add_parser("walk", help="smoothness of a rendered walk",
                          description="Adjacent-frame distances of a walk folder written by ldm animate.")
    walk.add_argument("folder", help="walk folder (holds settings.json and frames/)")

    for command in (ae, dm, walk):
        command.add_argument("--out", help="write the results as JSON to this file")


def run(args: argparse.Namespace) -> None:
    from ldm.apps import evaluate
    from ldm.metrics.results import format_table, write_json

    if args.what == "autoencoder":
        result = evaluate.evaluate_autoencoder(args.vae, args.data, split=args.split,
                                               max_images=args.max_images, grid=args.grid)
    elif args.what == "diffusion":
        from ldm.apps.generate import read_prompts

        prompts = read_prompts([], args.prompts_file) if args.prompts_file else None
        result = evaluate.evaluate_diffusion(args.pipeline, args.data, clip=args.clip, inception=args.inception,
                                             split=args.split, n=args.n, seed=args.seed, steps=args.steps,
                                             guidance=args.guidance, samples=args.samples, prompts=prompts)
    else:
        result = evaluate.evaluate_walk(args.folder)
    print(format_table([result]))
    for key, value in result.settings.items():
        if key == "skipped":
            print(f"skipped: {value}")
    if args.out:
        print(f"wrote {write_json(result, args.out)}")
