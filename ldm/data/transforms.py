"""Image preprocessing: resize, crop, optional flip, and scaling to a [-1, 1] tensor.

Written with PIL and numpy because torchvision (which has these transforms) is not a dependency.
"""

from __future__ import annotations

import random

import torch
from PIL import Image

from ldm.core.images import to_tensor


def resize_and_crop(image: Image.Image, resolution: int, center_crop: bool,
                    rng: random.Random) -> Image.Image:
    """Resize the short side to `resolution`, then crop a square (centred or random)."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    if scale != 1.0:
        image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                             Image.Resampling.BICUBIC)
    w, h = image.size
    if center_crop:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    else:
        left, top = rng.randint(0, w - resolution), rng.randint(0, h - resolution)
    return image.crop((left, top, left + resolution, top + resolution))


def preprocess(image: Image.Image, resolution: int, center_crop: bool, random_flip: bool,
               rng: random.Random) -> torch.Tensor:
    image = resize_and_crop(image, resolution, center_crop, rng)
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image)
