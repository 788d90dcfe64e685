"""Walks over a fixed image: `ldm animate ... --init-image IMG --mask MASK`. The mask's white part
walks (it is sampled from each frame's prompt and noise); the rest is the init image's, fixed, in
every frame. White means what it means to `ldm generate --mask`: the part that is painted.

Each frame is inpainted as `ldm generate --init-image --mask` inpaints: a text-to-image pipeline
keeps the init image's latents outside the mask at every step (`ldm.sampling.inpaint.Inpainting`),
an inpainting model (stage 2's `inpainting:`) takes the mask and the masked image itself; then the
frame is laid over the init image with the feathered edge. What the kept part is sampled from (the
init image's posterior sample, the noise that re-noises it, the masked image's latents) is drawn from
one fixed seed for every frame, so the kept part follows the same path in every frame, and a resumed
or split render makes the same bytes. The overlay makes its pixels the init image's own.

Walks whose frames sample whole trajectories take it (interpolation "dissolve" and "slerp"); "blend"
and "attention" branch or reuse partial trajectories, which the per-step blend does not follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from ldm.data.decode import read_image_file
from ldm.sampling.inpaint import Inpainting, composite, read_mask

FIXED_SEED = 0  # the seed of what the kept part is sampled from, the same in every frame
INTERPOLATIONS = ("dissolve", "slerp")  # the interpolation methods that sample whole trajectories


@dataclass
class FixedRegion:
    init: PIL.Image.Image  # the init image at the frame size
    mask: PIL.Image.Image  # white: the part that walks
    feather: int  # the overlay's edge blur radius, pixels

    def call_arguments(self, pipe, rows: int) -> dict:
        """What a pipeline call of `rows` frames takes to keep the region (a fresh blend each call:
        it holds that call's latents)."""
        generators = [torch.Generator().manual_seed(FIXED_SEED) for _ in range(rows)]
        if pipe.is_inpainting:
            return {"image": self.init, "mask_image": self.mask, "strength": 1.0, "generator": generators}
        return {"step_wrapper": Inpainting(pipe, self.init, self.mask, generators)}

    def overlay(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (N, H, W, 3) laid over the init image outside the mask."""
        return np.stack([np.asarray(composite(PIL.Image.fromarray(frame), self.init, self.mask, self.feather))
                         for frame in frames])


def read_fixed_region(init_image: str, mask: str, feather: int, size: tuple[int, int]) -> FixedRegion:
    """The init image and the mask, resized to the frames' (width, height) as `ldm generate` does."""
    init = read_image_file(init_image, "--init-image").convert("RGB").resize(size, PIL.Image.Resampling.LANCZOS)
    return FixedRegion(init, read_mask(mask).resize(size, PIL.Image.Resampling.LANCZOS), feather)
