"""A folder of the images people actually have, and what each should decode to.

    good, bad = write_image_kinds(folder, background=(51, 102, 204))

writes one file of each kind (RGBA, LA, P with a transparent index, L, I;16, I, F, CMYK JPEG, JPEGs
with EXIF orientations 3, 6 and 8, a WEBP with alpha, a PNG whose header claims more pixels than
PIL's limit, a truncated PNG, a text file named .png) and returns `good`, {file name: the RGB image
training must see}, computed with PIL's own tools (exif_transpose, alpha_composite over the
background, 16-bit values / 257), and `bad`, {file name: the reason it must be skipped}.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

SIZE = (24, 16)  # width, height: not square, so a rotation shows
EXIF_ORIENTATION = 0x0112
HUGE_SIDE = 10_000  # 10000 x 10000 = 100 Mpx, above PIL's 89.5 Mpx limit


def pattern(channels: int = 3, seed: int = 0) -> np.ndarray:
    """A (16, 24, channels) uint8 image with no symmetry, so any flip or turn changes it."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIZE[1], SIZE[0], channels), dtype=np.uint8)


def alpha_channel() -> np.ndarray:
    """Fully transparent, half and opaque stripes (0, 128, 255)."""
    return np.tile(np.array([0, 128, 255], dtype=np.uint8), SIZE[0] // 3 + 1)[None, : SIZE[0]].repeat(SIZE[1], 0)


def over(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """`image` composited over the background with PIL's alpha_composite, as RGB."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")


def huge_png_header() -> bytes:
    """A 1x1 PNG whose header says HUGE_SIDE x HUGE_SIDE: a decompression bomb by its header alone."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", HUGE_SIDE, HUGE_SIDE) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def write_image_kinds(folder: Path, background: tuple[int, int, int] = (255, 255, 255)):
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, Image.Image] = {}
    rgb, alpha = pattern(), alpha_channel()

    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    rgba.save(folder / "rgba.png")
    good["rgba.png"] = over(rgba, background)

    la = Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    la.save(folder / "la.png")
    good["la.png"] = over(la, background)

    palette = Image.fromarray(rgb).quantize(16)
    palette.save(folder / "palette.png", transparency=0)
    good["palette.png"] = over(Image.open(folder / "palette.png"), background)

    gray = Image.fromarray(rgb[..., 1], "L")
    gray.save(folder / "gray.png")
    good["gray.png"] = gray.convert("RGB")

    sixteen = rgb[..., 2].astype(np.uint16) * 257 + 100  # every 16-bit value: high byte and low byte
    sixteen = np.minimum(sixteen, 65535).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen.png")  # opens as I;16
    good["sixteen.png"] = Image.fromarray(np.round(sixteen / 257).astype(np.uint8)).convert("RGB")

    integers = sixteen.astype(np.int32)
    Image.fromarray(integers).save(folder / "integers.tif")  # mode I, 16-bit values
    good["integers.tif"] = good["sixteen.png"]

    floats = rgb[..., 0].astype(np.float32) / 255
    Image.fromarray(floats).save(folder / "floats.tif")  # mode F, in [0, 1]
    good["floats.tif"] = Image.fromarray(np.round(floats * 255).astype(np.uint8)).convert("RGB")

    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    good["cmyk.jpg"] = Image.open(folder / "cmyk.jpg").convert("RGB")

    for orientation in (3, 6, 8):
        name = f"exif{orientation}.jpg"
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        Image.fromarray(rgb).save(folder / name, exif=exif, quality=95)
        good[name] = ImageOps.exif_transpose(Image.open(folder / name)).convert("RGB")

    rgba.save(folder / "alpha.webp", lossless=True)
    good["alpha.webp"] = over(Image.open(folder / "alpha.webp"), background)

    (folder / "huge.png").write_bytes(huge_png_header())
    whole = io.BytesIO()
    Image.fromarray(pattern(seed=1)).save(whole, "PNG")
    (folder / "truncated.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (folder / "notes.png").write_text("not a picture")
    bad = {"huge.png": "too many pixels", "truncated.png": "truncated", "notes.png": "not an image"}
    return good, bad


# Portrait, landscape and square sizes, as a folder of people's images has them.
MIXED_SIZES = [(32, 32), (48, 24), (24, 48), (40, 30), (30, 40), (64, 32), (20, 20), (36, 24)]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220)}


def write_mixed_aspect_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """An imagefolder of `n` PNGs of MIXED_SIZES: a coloured disc on gray, captioned by its colour."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        width, height = MIXED_SIZES[i % len(MIXED_SIZES)]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        image = Image.new("RGB", (width, height), (128, 128, 128))
        radius = min(width, height) // 3
        cx, cy = int(rng.integers(radius, width - radius + 1)), int(rng.integers(radius, height - radius + 1))
        ImageDraw.Draw(image).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=COLOURS[colour])
        image.save(folder / f"{i:03d}.png")
        rows.append({"file_name": f"{i:03d}.png", "text": f"a {colour} disc"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return folder
