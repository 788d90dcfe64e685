"""Does an image walk pass through the user's images? PSNR of its end frames against the autoencoder's
own reconstructions of the two images (the best a latent walk can show), and against the other image.

    python -m benchmarks image-walk quickstart/pipeline quickstart/data/test/000000.png \
        quickstart/data/test/000001.png --captions "a shape" "a shape" [--steps 20] [--frames 8]

The walk is rendered by `ldm animate --images` (DDIM inversion under the captions, guidance 1, linear
spacing so the end frames are the keyframes themselves); the frames stay in --out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ldm.apps.animate import video
from ldm.apps.animate.render import WalkSettings, animate
from ldm.apps.animate.renderers import load_image_tensor
from ldm.components import autoencoder as vae_lib
from ldm.core.images import frames_to_tensor
from ldm.metrics.image_quality import psnr
from ldm.sampling.pipeline_io import load_pipeline

ENDS = ("first frame", "last frame")


def add_arguments(parser) -> None:
    parser.add_argument("pipeline")
    parser.add_argument("images", nargs=2)
    parser.add_argument("--captions", nargs=2, default=["", ""])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--out", help="walk folder (default: a temporary one)")


def end_frames(args) -> torch.Tensor:
    """The walk's first and last frames, as the autoencoder's input range."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "walk")
        result = animate(WalkSettings(pipeline=args.pipeline, out=str(out), kind="image", images=args.images,
                                      captions=args.captions, frames=args.frames, steps=args.steps, motion="linear"))
        frames = video.read_frames(result.out / "frames", result.frames)
    return frames_to_tensor(torch.stack([torch.from_numpy(frames[0]), torch.from_numpy(frames[-1])]).numpy())


def run(args) -> dict:
    ends = end_frames(args)
    pipe = load_pipeline(args.pipeline)
    pixels = torch.cat([load_image_tensor(path, pipe.image_size) for path in args.images])
    with torch.no_grad():
        reconstructed = vae_lib.decode(pipe.vae, vae_lib.encode(pipe.vae, pixels)).clamp(-1, 1)
    own = psnr(ends, reconstructed)
    other = psnr(ends, reconstructed.flip(0))
    for i, name in enumerate(ENDS):
        print(f"{name}: PSNR {own[i]:.1f} dB against its image's autoencoder reconstruction, "
              f"{other[i]:.1f} dB against the other image's")
    return {name: {"psnr_own": float(own[i]), "psnr_other": float(other[i])} for i, name in enumerate(ENDS)}
