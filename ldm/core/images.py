"""Images in the two forms the project moves between, and images as files.

Models see tensors (3, H, W) or (B, 3, H, W) in [-1, 1]; people and files see 8-bit RGB. Every
conversion between the two is here, once, rounding as diffusers' `numpy_to_pil` does:

    to_tensor(pil) -> (3, H, W) in [-1, 1]          to_pil(tensor) -> RGB image
    to_uint8(tensor) -> uint8 tensor, same shape      to_unit_range(tensor) -> [0, 1] floats
    frames_to_tensor(uint8 (B, H, W, 3)) -> (B, 3, H, W) in [-1, 1]
    unit_to_uint8(floats in [0, 1]) -> uint8 array  (the pipelines' output_type="np")

and the files: a PNG carries what made it (prompt, seed, steps, ...) as iTXt chunks, which hold
UTF-8, so any prompt survives; grids are diffusers' `make_image_grid`, and a contact sheet adds a
caption under each row.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from ldm.core.atomic import atomic_write_bytes

MIN_TILE = 128  # pixels: contact-sheet tiles are enlarged to at least this, so captions fit under them
CAPTION_PAD = 4
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


# ---- conversions --------------------------------------------------------------------------------

def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a (3, H, W) float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] in float32, clamped (a decoder may overshoot)."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 in 0-255, any shape."""
    return (to_unit_range(images) * 255).round().to(torch.uint8)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [-1, 1] as an RGB image."""
    return Image.fromarray(to_uint8(tensor.detach()).permute(1, 2, 0).cpu().numpy())


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) as a (B, 3, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def unit_to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (a pipeline's output_type="np") as uint8, rounded as diffusers rounds."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


# ---- PNG files with their metadata ----------------------------------------------------------------

def png_bytes(image: Image.Image, metadata: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_itxt(key, str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_png(path: str | Path, image: Image.Image, metadata: dict[str, str] | None = None) -> Path:
    """The image as a PNG with `metadata` in it, written whole or not at all."""
    atomic_write_bytes(path, png_bytes(image, metadata))
    return Path(path)


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """The metadata a PNG was written with."""
    with Image.open(path) as image:
        return dict(image.text)


def read_rgb(path: str | Path) -> Image.Image:
    """An image file the project wrote itself (a frame, a sample) as RGB, file closed."""
    with Image.open(path) as image:
        return image.convert("RGB")


# ---- grids ------------------------------------------------------------------------------------------

def image_grid(rows: list[list[Image.Image | torch.Tensor]], upscale: int = 1) -> Image.Image:
    """Rows of images (RGB images or [-1, 1] tensors) as one picture, nearest-neighbour enlarged
    `upscale` times (32 px images are too small to judge at their own size)."""
    tiles = [[item if isinstance(item, Image.Image) else to_pil(item) for item in row] for row in rows]
    grid = make_image_grid([tile for row in tiles for tile in row], rows=len(tiles), cols=len(tiles[0]))
    if upscale > 1:
        grid = grid.resize((grid.width * upscale, grid.height * upscale), Image.Resampling.NEAREST)
    return grid


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: int | None = None) -> Image.Image:
    """For each (caption, images) a row of images (up to `columns`) with its caption under it.

    Small images are enlarged with nearest-neighbour so their pixels stay visible and the caption
    has room; a caption wider than its row wraps onto more lines.
    """
    columns = columns or max(len(images) for _, images in rows)
    width, height = rows[0][1][0].size
    scale = max(1, -(-MIN_TILE // max(width, height)))  # ceiling division
    tile = (width * scale, height * scale)
    font = ImageFont.load_default()
    blank = Image.new("RGB", tile, WHITE)
    strips = []
    for caption, images in rows:
        tiles = [image.convert("RGB").resize(tile, Image.Resampling.NEAREST) for image in images[:columns]]
        tiles += [blank] * (columns - len(tiles))
        strips.append(make_image_grid(tiles, rows=1, cols=columns))
        strips.append(_caption_strip(caption, tile[0] * columns, font))
    sheet = Image.new("RGB", (tile[0] * columns, sum(strip.height for strip in strips)), WHITE)
    top = 0
    for strip in strips:
        sheet.paste(strip, (0, top))
        top += strip.height
    return sheet


def _caption_strip(caption: str, width: int, font) -> Image.Image:
    """The caption wrapped to `width` pixels, as a white strip."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    char_width = max(1, draw.textlength("x" * 10, font=font) / 10)
    lines = textwrap.wrap(caption, width=max(1, int((width - 2 * CAPTION_PAD) // char_width))) or [""]
    _, _, _, bottom = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font)
    strip = Image.new("RGB", (width, bottom + 2 * CAPTION_PAD), WHITE)
    ImageDraw.Draw(strip).multiline_text((CAPTION_PAD, CAPTION_PAD), "\n".join(lines), fill=BLACK, font=font)
    return strip
