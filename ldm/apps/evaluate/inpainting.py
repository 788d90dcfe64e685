"""`ldm evaluate inpainting`: replace one shape by another in the masked part of shapes images.

    evaluate_inpainting("runs/shapes/pipeline")    checker fidelity inside the mask, PSNR outside it

Each case is a shapes image of one large object (`ldm.data.shapes.generator`: a red circle in the
top left on black, ...), a mask that covers the object (a box around where the generator may put it)
and the plain prompt of another colour and shape at the same place ("a blue square in the top left").
The pipeline repaints the mask as `ldm generate --init-image --mask` does: any text-to-image pipeline
by blending its latents, an inpainting model (stage 2's `inpainting:`) by itself; then the images are
laid over the init image with the feathered edge. Measured:
- inside the mask, prompt fidelity: the attribute checker (`ldm.data.shapes.checker`) reads the one
  object left in the image, which should be the asked colour and shape, at the asked position; the
  checker on the init images, reading what was drawn, is the ceiling;
- outside the mask, PSNR against the init image: of the composited images (only the feathered band
  can differ), and of the images as the pipeline decoded them, before the overlay (what the sampling
  itself kept; the autoencoder's reconstruction bounds it).
The cases are drawn by the generator (no data folder), the same for every pipeline of a size.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldm.apps.evaluate.diffusion import percent
from ldm.apps.generate import check_repaint, prepared_pipeline, sampling_settings
from ldm.apps.generate_settings import GenerateOptions
from ldm.core.errors import LdmError
from ldm.core.images import contact_sheet, to_tensor, write_png
from ldm.core.model_kind import is_inpainting
from ldm.data.shapes.checker import prompt_fidelity
from ldm.data.shapes.generator import BACKGROUNDS, POSITIONS, RADIUS, ShapeObject, plain_prompt, render
from ldm.metrics.image_quality import masked_psnr
from ldm.metrics.results import Evaluation, Metric
from ldm.sampling.inpaint import composite
from ldm.sampling.pipeline_io import check_pipeline_folder, image_size
from ldm.sampling.text_to_image import decoded_images

# (colour, shape) drawn -> (colour, shape) asked for: each colour and shape changes.
REPLACEMENTS = (
    (("red", "circle"), ("blue", "square")),
    (("green", "square"), ("yellow", "circle")),
    (("blue", "triangle"), ("red", "circle")),
    (("yellow", "circle"), ("purple", "triangle")),
    (("purple", "square"), ("green", "triangle")),
    (("orange", "triangle"), ("blue", "circle")),
)
SIZE = "large"
JITTER = 0.04  # of the side: how far `render` moves an object from its named position, at most
MARGIN = 0.04  # of the side, around the largest extent the object can reach (radius and jitter)
MIN_SIDE = 16  # the shapes data's smallest legible size


def mask_box(position: str, side: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the box that covers a large object at `position`, wherever
    the generator's jitter puts it."""
    cx, cy = POSITIONS[position]
    half = RADIUS[SIZE] + JITTER + MARGIN
    left, top = max(0, int(np.floor((cx - half) * side))), max(0, int(np.floor((cy - half) * side)))
    return left, top, min(side, int(np.ceil((cx + half) * side))), min(side, int(np.ceil((cy + half) * side)))


def make_case(index: int, side: int, seed: int) -> tuple[Image.Image, Image.Image, str, dict, dict]:
    """(init image, mask, prompt, attributes asked for, attributes drawn) of case `index`."""
    (colour, shape), (new_colour, new_shape) = REPLACEMENTS[index % len(REPLACEMENTS)]
    position = list(POSITIONS)[index % len(POSITIONS)]
    background = list(BACKGROUNDS)[index % len(BACKGROUNDS)]
    init = render([ShapeObject(colour, shape, SIZE, position)], background, side, random.Random(seed + index))
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, mask_box(position, side))
    wanted = {"colour": new_colour, "shape": new_shape, "position": position}
    drawn = {"colour": colour, "shape": shape, "position": position}
    return init, mask, plain_prompt(new_colour, new_shape, position), wanted, drawn


@torch.no_grad()
def evaluate_inpainting(pipeline: str, cases: int = 12, n: int = 2, seed: int = 0, steps: int = 20,
                        guidance: float = 4.0, strength: float = 1.0, feather: int = 2, repaint: int = 0,
                        samples: str | Path | None = None) -> Evaluation:
    start = time.perf_counter()
    check_pipeline_folder(pipeline)
    check_repaint(pipeline, repaint)
    side = image_size(pipeline)
    if side < MIN_SIDE:
        raise LdmError(f"{pipeline} makes {side} px images: the shapes cases need at least {MIN_SIDE}")
    opts = GenerateOptions(pipeline=str(pipeline), prompts=["_"], n=n, seed=seed, steps=steps, guidance=guidance,
                           strength=strength, feather=feather, repaint=repaint)
    pipe = prepared_pipeline(opts)
    rows, made, raw, inits, keeps, wanted, drawn = [], [], [], [], [], [], []
    for index in range(cases):
        init, mask, prompt, asked, was = make_case(index, side, seed)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        decoded = decoded_images(pipe, [prompt] * n, generators, **sampling_settings(opts, pipe, init, mask))
        images = [composite(image, init, mask, feather) for image in decoded]
        rows.append((f"{index}: {prompt}", [init, mask.convert("RGB"), *images]))
        made += images
        raw += decoded
        inits += [init] * n
        keeps += [torch.from_numpy(np.asarray(mask) < 128)[None]] * n
        wanted += [asked] * n
        drawn.append(was)
    if samples is not None:
        write_samples(samples, rows, made, opts)

    stack = lambda images: torch.stack([to_tensor(image.convert("RGB")) for image in images])  # noqa: E731
    keep, reference = torch.stack(keeps), stack(inits)
    composited, decoded = masked_psnr(stack(made), reference, keep), masked_psnr(stack(raw), reference, keep)
    inside = prompt_fidelity(made, wanted)
    ceiling = prompt_fidelity(inits[::n], drawn)
    checker = "read by ldm.data.shapes.checker from the one object left"
    metrics = [
        percent("inpaint_fidelity", "Inpainting fidelity inside the mask (colour and shape)",
                inside["colour_and_shape"], f"share of images whose masked object is the prompt's, {checker}"),
        percent("inpaint_fidelity_colour", "Inpainting fidelity: colour", inside["colour"]),
        percent("inpaint_fidelity_shape", "Inpainting fidelity: shape", inside["shape"]),
        percent("inpaint_fidelity_position", "Inpainting fidelity: position", inside["position"]),
        percent("init_fidelity", "Checker on the init images (colour and shape)", ceiling["colour_and_shape"],
                "the same checker reading what was drawn: the ceiling"),
        Metric("psnr_outside_mask", "PSNR outside the mask", composited.mean(), "dB", "higher",
               f"composited images vs the init image, over the pixels the mask keeps (feather {feather} px: "
               "only its band can differ); mean over images, empty when all are exact (infinite)"),
        Metric("psnr_outside_mask_decoded", "PSNR outside the mask, before the overlay", decoded.mean(), "dB",
               "higher", "the pipeline's decoded images vs the init image, over the pixels the mask keeps"),
    ]
    settings = {"cases": cases, "images_per_case": n, "seed": seed, "steps": steps, "guidance": guidance,
                "strength": strength, "feather": feather, "repaint": repaint, "image_size": side,
                "sampler": opts.sampler, "samples": str(samples) if samples is not None else None,
                "inpainting": "the inpainting model's own (its UNet takes the mask)" if is_inpainting(pipeline)
                else "latent blending (a text-to-image UNet)"}
    return Evaluation("inpainting", str(pipeline), settings, metrics, time.perf_counter() - start)


def write_samples(folder: str | Path, rows: list, images: list[Image.Image], opts: GenerateOptions) -> None:
    """The composited images (case, seed) and grid.png: per case the init image, the mask and the images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, (caption, row) in enumerate(rows):
        for i, image in enumerate(row[2:]):
            write_png(folder / f"case{index:02d}-seed{opts.seed + i}.png", image,
                      {"prompt": caption.split(": ", 1)[1], "seed": str(opts.seed + i), "steps": str(opts.steps),
                       "guidance": str(opts.guidance), "sampler": opts.sampler, "model": str(opts.pipeline)})
    write_png(folder / "grid.png", contact_sheet(rows))
