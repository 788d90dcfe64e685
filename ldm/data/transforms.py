"""Image preprocessing: resize to cover a size, crop to it, optional flip, and scale to a [-1, 1] tensor.

The size is data.resolution's square, or an aspect-ratio bucket's (width, height) (ldm/data/buckets.py).
Written with PIL because torchvision (which has these transforms) is not a dependency; PIL's
`ImageOps.fit` resizes and crops in one call but only centred, and training crops at random too.
"""

from __future__ import annotations

import random

import torch
from PIL import Image

from ldm.core.images import to_tensor

Size = tuple[int, int]


def as_size(size: int | Size) -> Size:
    """A side (a square) or a (width, height), as (width, height)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_and_crop(image: Image.Image, size: int | Size, center_crop: bool, rng: random.Random) -> Image.Image:
    """Resize an RGB image to cover `size` (a side, or (width, height)), then crop to it, centred or
    at random."""
    target_w, target_h = as_size(size)
    w, h = image.size
    scale = max(target_w / w, target_h / h)
    if scale != 1.0:
        image = image.resize((max(target_w, round(w * scale)), max(target_h, round(h * scale))),
                             Image.Resampling.BICUBIC)
    w, h = image.size
    if center_crop:
        left, top = (w - target_w) // 2, (h - target_h) // 2
    else:
        left, top = rng.randint(0, w - target_w), rng.randint(0, h - target_h)
    return image.crop((left, top, left + target_w, top + target_h))


def preprocess(image: Image.Image, size: int | Size, center_crop: bool, random_flip: bool,
               rng: random.Random) -> torch.Tensor:
    image = resize_and_crop(image, size, center_crop, rng)
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image)
