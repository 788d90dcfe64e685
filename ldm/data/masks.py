"""Loss masks: which part of each training image the diffusion stage's loss weighs (`data.mask`).

As kohya's sd-scripts (`--masked_loss`, alpha masks) and OneTrainer offer it: a mask per image,
white (or opaque) where the image is to be learnt, black where not. It comes from
- `alpha`: the image's own transparency, read before the image is composited over data.background
  (ldm/data/decode.py), so that a clip-art drawing trains without the colour put behind it;
- `file`: a mask image beside the image, named as the image with `.mask` before the extension
  (cat.png: cat.mask.png; cat.jpg: cat.mask.jpg or cat.mask.png), in a local folder (caption files
  or an imagefolder), whose image lists leave the mask files out;
- `column`: a column of mask images (data.mask_column): a saved dataset, shards, the hub.

A mask is read as 8-bit gray (a mask file's transparent pixels count as black), resized to its
image's size where it differs, then resized, cropped and flipped with its image
(ldm/data/transforms.py) and averaged down to the latent grid (`to_latent_grid`: the masked-in
share of each latent pixel's area). An image with no mask of its own (no alpha, no file, an empty
cell, an unreadable mask file) trains at full weight: `warn_unmasked` counts them once before
training, and `ldm data check` reports found, missing, unreadable and empty (all black) masks.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from PIL import Image

from ldm.data.config import DataConfig
from ldm.data.decode import (
    ALPHA_MODES,
    NO_PATH,
    UndecodableImage,
    decode_image,
    decode_image_and_alpha,
    describe,
    has_alpha,
)

MASK = "mask"  # the key of a batch's masks: (B, 1, H, W) in [0, 1], at the latent grid from the cache
MASK_NAME = ".mask"  # cat.png's mask file is cat.mask.png
MASK_BACKGROUND = "black"  # under a mask file's transparent pixels: masked out
FULL_WEIGHT = 255  # a missing mask: every pixel trains
# What `ldm data check` finds for each image.
FOUND, MISSING, UNREADABLE, EMPTY = "found", "missing", "unreadable", "empty"
WARN_PATHS = 3  # how many files the warning names
ROWS_PER_READ = 256


def is_mask_file(path: str | Path) -> bool:
    """Whether a file is a mask file (cat.mask.png), not an image to train on."""
    return Path(path).stem.endswith(MASK_NAME)


def mask_file(image: str | Path) -> Path | None:
    """The mask file beside an image (with the image's extension, else .png), or None."""
    path = Path(image)
    for suffix in dict.fromkeys((path.suffix, ".png")):
        candidate = path.with_name(f"{path.stem}{MASK_NAME}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def mask_source(row: dict, cfg: DataConfig):
    """What a row's mask is read from (a path or a `datasets` image value), or None where it has none
    (data.mask: file or column)."""
    if cfg.mask == "column":
        value = row.get(cfg.mask_column)
        return value if value and (not isinstance(value, dict) or value.get("bytes") or value.get("path")) else None
    name = describe(row[cfg.image_column])
    return None if name == NO_PATH else mask_file(name)


def read_mask(value, size: tuple[int, int], max_pixels: int) -> Image.Image | None:
    """A mask image as 8-bit gray at `size` (its image's), or None where it cannot be read."""
    try:
        mask = decode_image(value, MASK_BACKGROUND, max_pixels).convert("L")
    except UndecodableImage:
        return None
    return mask if mask.size == size else mask.resize(size, Image.Resampling.BILINEAR)


def decode_with_mask(row: dict, cfg: DataConfig, cover: tuple[int, int] | None = None
                     ) -> tuple[Image.Image, Image.Image | None]:
    """A row's RGB image as training sees it before cropping, and its mask (an L image of the same
    size; white where the row has none), or None with data.mask: none. Raises UndecodableImage."""
    value = row[cfg.image_column]
    if cfg.mask == "alpha":
        image, mask = decode_image_and_alpha(value, cfg.background, cfg.max_pixels, cover)
    else:
        image = decode_image(value, cfg.background, cfg.max_pixels, cover)
        if cfg.mask == "none":
            return image, None
        source = mask_source(row, cfg)
        mask = read_mask(source, image.size, cfg.max_pixels) if source is not None else None
    return image, mask if mask is not None else Image.new("L", image.size, FULL_WEIGHT)


def to_latent_grid(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Masks (B, 1, H, W) averaged over each latent pixel's area, to (B, 1, h, w) = `size`
    (unchanged when they are at that size already, as the latent cache stores them)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_avg_pool2d(mask.float(), tuple(size))


def has_own_mask(row: dict, cfg: DataConfig, mode: str | None = None) -> bool:
    """Whether a row has a mask of its own, found without decoding it (alpha: from the header, or
    from the scan's `mode` where it has an alpha mode)."""
    if cfg.mask != "alpha":
        return mask_source(row, cfg) is not None
    if mode in ALPHA_MODES:
        return True
    try:
        return has_alpha(row[cfg.image_column], cfg.max_pixels)
    except UndecodableImage:
        return False


def unmasked_rows(ds: datasets.Dataset, cfg: DataConfig, modes: list[str] | None = None) -> list[int]:
    """The rows of `ds` that train at full weight for want of a mask (none with data.mask: none)."""
    if cfg.mask == "none":
        return []
    found, start = [], 0
    for batch in ds.iter(batch_size=ROWS_PER_READ):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        for offset, row in enumerate(rows):
            mode = modes[start + offset] if modes is not None else None
            if not has_own_mask(row, cfg, mode):
                found.append(start + offset)
        start += len(rows)
    return found


def warn_unmasked(ds: datasets.Dataset, cfg: DataConfig, modes: list[str] | None = None) -> None:
    """One warning before training: how many images train at full weight for want of a mask."""
    rows = unmasked_rows(ds, cfg, modes)
    if not rows:
        return
    names = ", ".join(describe(ds[row][cfg.image_column]) for row in rows[:WARN_PATHS])
    what = {"alpha": "no transparency", "file": f"no {MASK_NAME} file beside them",
            "column": f"no mask in column '{cfg.mask_column}'"}[cfg.mask]
    warnings.warn(f"data.mask: {cfg.mask}: {len(rows)} of {len(ds)} image(s) have {what} and train at full "
                  f"weight ({names}{', ...' if len(rows) > WARN_PATHS else ''})", stacklevel=2)


def mask_status(row: dict, cfg: DataConfig) -> str:
    """FOUND, MISSING, UNREADABLE or EMPTY (all black): what a row's mask is, decoded."""
    if cfg.mask == "alpha":
        try:
            _, mask = decode_image_and_alpha(row[cfg.image_column], cfg.background, cfg.max_pixels)
        except UndecodableImage:
            return UNREADABLE
    else:
        source = mask_source(row, cfg)
        if source is None:
            return MISSING
        try:
            mask = decode_image(source, MASK_BACKGROUND, cfg.max_pixels).convert("L")
        except UndecodableImage:
            return UNREADABLE
    if mask is None:
        return MISSING
    return EMPTY if mask.getextrema()[1] == 0 else FOUND


def mask_key(ds: datasets.Dataset, cfg: DataConfig) -> dict | None:
    """What the latent cache's key adds for masks: None with data.mask: none (a cache without masks
    keeps its key); the mode, the column, and for mask files their names, sizes and times (the
    dataset's own fingerprint covers its images and columns, not files beside them)."""
    if cfg.mask == "none":
        return None
    key = {"mask": cfg.mask, "column": cfg.mask_column if cfg.mask == "column" else None}
    if cfg.mask == "file":
        digest = hashlib.sha256()
        for batch in ds.select_columns([cfg.image_column]).iter(batch_size=ROWS_PER_READ):
            for value in batch[cfg.image_column]:
                found = mask_file(describe(value)) if describe(value) != NO_PATH else None
                stat = found.stat() if found is not None else None
                digest.update(repr((str(found), stat and stat.st_size, stat and stat.st_mtime_ns)).encode())
        key["files"] = digest.hexdigest()
    return key


def dim_masked_out(image: Image.Image, mask: Image.Image, strength: float = 0.75) -> Image.Image:
    """A picture of a mask on its image: the image where the mask is white, dimmed towards black
    where it is not (`ldm data check --preview`)."""
    dimmed = Image.blend(image, Image.new("RGB", image.size), strength)
    return Image.composite(image, dimmed, mask)

