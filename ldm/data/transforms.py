"""Image preprocessing: resize, crop, optional flip, and scaling to a [-1, 1] tensor.

Written with PIL and numpy because torchvision (which has these transforms) is not a dependency.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image


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


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a (3, H, W) float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [-1, 1] as an RGB PIL image."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def preprocess(image: Image.Image, resolution: int, center_crop: bool, random_flip: bool,
               rng: random.Random) -> torch.Tensor:
    image = resize_and_crop(image, resolution, center_crop, rng)
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image)
