"""A contact sheet: rows of images, each row's caption written under it.

Small images (16-64 px) are enlarged with nearest-neighbour so their pixels stay visible and the
caption has room; a caption wider than its row wraps onto more lines.
"""

from __future__ import annotations

import textwrap

from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw, ImageFont

MIN_TILE = 128  # pixels: tiles are enlarged to at least this, so captions fit under them
PAD = 4
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: int | None = None) -> Image.Image:
    """One image: for each (caption, images) a row of images (up to `columns`) and its caption."""
    columns = columns or max(len(images) for _, images in rows)
    width, height = rows[0][1][0].size
    scale = max(1, -(-MIN_TILE // max(width, height)))  # ceiling division
    tile = (width * scale, height * scale)
    font = ImageFont.load_default()
    blank = Image.new("RGB", tile, BACKGROUND)
    strips = []
    for caption, images in rows:
        tiles = [image.convert("RGB").resize(tile, Image.Resampling.NEAREST) for image in images[:columns]]
        tiles += [blank] * (columns - len(tiles))
        strips.append(make_image_grid(tiles, rows=1, cols=columns))
        strips.append(_caption_strip(caption, tile[0] * columns, font))
    sheet = Image.new("RGB", (tile[0] * columns, sum(strip.height for strip in strips)), BACKGROUND)
    top = 0
    for strip in strips:
        sheet.paste(strip, (0, top))
        top += strip.height
    return sheet


def _caption_strip(caption: str, width: int, font) -> Image.Image:
    """The caption wrapped to `width` pixels, as a white strip."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    char_width = max(1, draw.textlength("x" * 10, font=font) / 10)
    lines = textwrap.wrap(caption, width=max(1, int((width - 2 * PAD) // char_width))) or [""]
    left, top, right, bottom = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font)
    strip = Image.new("RGB", (width, bottom + 2 * PAD), BACKGROUND)
    ImageDraw.Draw(strip).multiline_text((PAD, PAD), "\n".join(lines), fill=INK, font=font)
    return strip
