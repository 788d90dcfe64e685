"""Image grids: rows of image tensors as one PNG (torchvision's make_grid is not a dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ldm.data.transforms import to_pil

PAD = 2  # pixels of white between images


def grid_array(rows: list[torch.Tensor]) -> np.ndarray:
    """Rows of (N, 3, H, W) tensors in [-1, 1] -> one (rows*H, N*W, 3) uint8 array, padded."""
    height, width = rows[0].shape[-2:]
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (height + PAD) + PAD, columns * (width + PAD) + PAD, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = PAD + r * (height + PAD), PAD + c * (width + PAD)
            canvas[top:top + height, left:left + width] = np.asarray(to_pil(image))
    return canvas


def save_grid(rows: list[torch.Tensor], path: str | Path, upscale: int = 1) -> np.ndarray:
    """Write the grid as PNG (nearest-neighbour upscaled, for tiny images) and return its array."""
    from PIL import Image

    array = grid_array(rows)
    image = Image.fromarray(array)
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return array
