"""Random inpainting masks, drawn at training time (the inpainting model's `inpainting:` section).

    masks = random_masks(batch=8, height=8, width=8, shares={"box": 0.4, "strokes": 0.4, "whole": 0.2},
                         generator=torch.Generator().manual_seed(0))    # (8, 1, 8, 8), 1: repaint

Each mask is one of three kinds, as diffusers' and kohya's inpainting trainers (and RunwayML's SD
inpainting, after LaMa) draw them:
- `box`: one rectangle, each side 1/4 to 3/4 of the image's, anywhere;
- `strokes`: 1 to 4 thick strokes (polylines of 2 to 5 points, as brushed by hand);
- `whole`: the whole image, so that the model also learns to make an image from the text alone.

They are drawn directly on the latent grid, the only place the UNet sees them: the latent cache
holds no pixels, and an inference mask reaches the UNet as a binary mask at that grid too (diffusers'
inpainting pipeline resizes it there, nearest). Numbers come from a torch generator (None: the global
one, which Lightning's seed sets), so a seeded run draws the same masks.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

MASK_KINDS = ("box", "strokes", "whole")
BOX_SIDE = (0.25, 0.75)  # a box's side, as a share of the image's
STROKES = (1, 4)  # strokes per mask
STROKE_POINTS = (2, 5)  # points per stroke
STROKE_WIDTH = (1 / 16, 1 / 6)  # a stroke's width, as a share of the image's shorter side (at least 1 cell)


def _uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _integer(generator: torch.Generator | None, low: int, high: int) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def box_mask(height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    mask = torch.zeros(height, width)
    box_h = max(1, round(height * _uniform(generator, *BOX_SIDE)))
    box_w = max(1, round(width * _uniform(generator, *BOX_SIDE)))
    top, left = _integer(generator, 0, height - box_h), _integer(generator, 0, width - box_w)
    mask[top:top + box_h, left:left + box_w] = 1
    return mask


def strokes_mask(height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    # PIL draws thick lines with round-ish joints at any size, which torch has no primitive for.
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(_integer(generator, *STROKES)):
        points = [(_uniform(generator, 0, width - 1), _uniform(generator, 0, height - 1))
                  for _ in range(_integer(generator, *STROKE_POINTS))]
        stroke = max(1, round(min(height, width) * _uniform(generator, *STROKE_WIDTH)))
        draw.line(points, fill=255, width=stroke, joint="curve")
        for x, y in points[::len(points) - 1]:  # round ends; a 1-cell stroke still marks its ends
            r = stroke / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255).round()


def whole_mask(height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.ones(height, width)


DRAW = {"box": box_mask, "strokes": strokes_mask, "whole": whole_mask}


def random_kinds(batch: int, shares: dict[str, float], generator: torch.Generator | None = None) -> list[str]:
    """One kind per mask, each drawn with probability proportional to its share."""
    kinds = [kind for kind in MASK_KINDS if shares.get(kind, 0) > 0]
    weights = torch.tensor([float(shares[kind]) for kind in kinds])
    picks = torch.multinomial(weights, batch, replacement=True, generator=generator)
    return [kinds[i] for i in picks.tolist()]


def random_masks(batch: int, height: int, width: int, shares: dict[str, float],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, 1, height, width) binary masks, 1 where the image is to be repainted."""
    kinds = random_kinds(batch, shares, generator)
    return torch.stack([DRAW[kind](height, width, generator) for kind in kinds]).unsqueeze(1)
