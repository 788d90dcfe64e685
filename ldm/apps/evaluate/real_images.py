"""The real images of a dataset split that an evaluation compares with: pixels in [-1, 1],
centre-cropped to the model's resolution, and, for a diffusion model, what describes each one.

On the shapes data an image is described by its attributes (colour, shape, position: what the
attribute checker reads back) and the plain prompt made of them; on any other data, by its caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ldm.apps.evaluate.settings import MAX_REAL_IMAGES
from ldm.core.errors import LdmError
from ldm.data.captions import captions_of
from ldm.data.config import DataConfig
from ldm.data.labelled import load_labelled_images
from ldm.data.shapes.generator import plain_prompt
from ldm.data.sources import load_source

SHAPES_COLUMNS = ["colour", "shape", "position"]  # what the attribute checker reads


def check_data_folder(data: str) -> None:
    if not Path(data).exists():
        raise LdmError(f"data folder not found: {data}")


@dataclass
class RealImages:
    """The real images of a split: pixels in [-1, 1], a prompt describing each, and on the shapes
    data the attributes each shows (None on other data)."""

    pixels: torch.Tensor
    prompts: list[str]
    attributes: list[dict[str, str]] | None


def load_real(data: str, split: str, resolution: int, max_images: int | None = MAX_REAL_IMAGES,
              captions: bool = True) -> RealImages:
    """The split's images, described by their shapes attributes when it has them, else by their
    captions (`captions=False`: by nothing, for an evaluation that only needs the pixels)."""
    check_data_folder(data)
    cfg = DataConfig(source=str(data), split=split, resolution=resolution)
    ds = load_source(cfg)  # loaded once: its columns decide what describes the images
    if all(column in ds.column_names for column in SHAPES_COLUMNS):
        pixels, labels = load_labelled_images(cfg, SHAPES_COLUMNS, max_images, ds)
        attributes = [dict(zip(SHAPES_COLUMNS, values)) for values in zip(*labels.values())]
        prompts = [plain_prompt(a["colour"], a["shape"], a["position"]) for a in attributes]
        return RealImages(pixels, prompts, attributes)
    if not captions:
        return RealImages(load_labelled_images(cfg, [], max_images, ds)[0], [], None)
    pixels, labels = load_labelled_images(cfg, [cfg.caption_column], max_images, ds)
    return RealImages(pixels, [captions_of(value)[0] for value in labels[cfg.caption_column]], None)
