"""Image preprocessing: resize to cover a size, crop to it, optional flip, and scale to a [-1, 1] tensor.

The size is data.resolution's square, or an aspect-ratio bucket's (width, height) (ldm/data/buckets.py).
Written with PIL because torchvision (which has these transforms) is not a dependency; PIL's
`ImageOps.fit` resizes and crops in one call but only centred, and training crops at random too.
A loss mask (ldm/data/masks.py) goes through the same resize, crop and flip as its image.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from ldm.core.images import to_tensor

Size = tuple[int, int]


def as_size(size: int | Size) -> Size:
    """A side (a square) or a (width, height), as (width, height)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def crop_box(image_size: Size, size: int | Size, center_crop: bool,
             rng: random.Random) -> tuple[Size, tuple[int, int, int, int]]:
    """(the size an image of `image_size` is resized to so that it covers `size`, the box of `size`
    cropped from it, centred or at random): the one geometry an image and its loss mask share."""
    target_w, target_h = as_size(size)
    w, h = image_size
    scale = max(target_w / w, target_h / h)
    if scale != 1.0:
        w, h = max(target_w, round(w * scale)), max(target_h, round(h * scale))
    if center_crop:
        left, top = (w - target_w) // 2, (h - target_h) // 2
    else:
        left, top = rng.randint(0, w - target_w), rng.randint(0, h - target_h)
    return (w, h), (left, top, left + target_w, top + target_h)


def _fit(image: Image.Image, resized: Size, box: tuple[int, int, int, int]) -> Image.Image:
    if image.size != resized:
        image = image.resize(resized, Image.Resampling.BICUBIC)
    return image.crop(box)


def resize_and_crop(image: Image.Image, size: int | Size, center_crop: bool, rng: random.Random) -> Image.Image:
    """Resize an RGB image to cover `size` (a side, or (width, height)), then crop to it, centred or
    at random."""
    return _fit(image, *crop_box(image.size, size, center_crop, rng))


def preprocess(image: Image.Image, size: int | Size, center_crop: bool, random_flip: bool,
               rng: random.Random) -> torch.Tensor:
    return preprocess_with_mask(image, None, size, center_crop, random_flip, rng)[0]


def resize_and_crop_with_mask(image: Image.Image, mask: Image.Image | None, size: int | Size, center_crop: bool,
                              rng: random.Random) -> tuple[Image.Image, Image.Image | None]:
    """`resize_and_crop` of an image and of its loss mask (an L image of the same size, or None),
    with one box: the mask stays on the pixels it marks. Bicubic for both, so their edges agree."""
    resized, box = crop_box(image.size, size, center_crop, rng)
    return _fit(image, resized, box), (_fit(mask, resized, box) if mask is not None else None)


def preprocess_with_mask(image: Image.Image, mask: Image.Image | None, size: int | Size, center_crop: bool,
                         random_flip: bool, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`preprocess` of an image and of its loss mask (or None), both resized, cropped and flipped
    alike: (pixels (3, H, W) in [-1, 1], mask (1, H, W) in [0, 1] or None). The random draws are
    those `preprocess` makes, in the same order, with or without a mask."""
    image, mask = resize_and_crop_with_mask(image, mask, size, center_crop, rng)
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mask is not None else None
    if mask is None:
        return to_tensor(image), None
    return to_tensor(image), torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]
