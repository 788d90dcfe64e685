"""The scan: every image inspected once and every caption read (`scan`), then the rows that cannot
train left out, counted by reason in one warning (`drop_unusable`)."""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field

import datasets

from ldm.core.errors import LdmError
from ldm.data.captions import NO_CAPTION, clean_captions
from ldm.data.config import DataConfig
from ldm.data.decode import UndecodableImage, describe, inspect_image

WARN_PATHS = 3  # how many files a warning names for each reason

# The columns the scan adds; they stay with the rows that train (buckets read the sizes).
SKIP = "_ldm_skip"  # why the image cannot be used ("" when it can)
WIDTH, HEIGHT = "_ldm_width", "_ldm_height"  # upright size, 0 when undecodable
FORMAT, MODE = "_ldm_format", "_ldm_mode"
CAPTIONED = "_ldm_captioned"  # whether the row has at least one usable caption
SCAN_COLUMNS = (SKIP, WIDTH, HEIGHT, FORMAT, MODE, CAPTIONED)


def scan(ds: datasets.Dataset, cfg: DataConfig) -> datasets.Dataset:
    """`ds` with SCAN_COLUMNS added: every image inspected once, every caption read.

    Cached by `datasets` (the map's fingerprint covers the data and data.max_pixels), so later
    stages and `ldm data check` on the same data do not read the images again.
    """
    image_column, caption_column, max_pixels = cfg.image_column, cfg.caption_column, cfg.max_pixels

    def inspect(batch: dict) -> dict:
        out = {name: [] for name in SCAN_COLUMNS}
        for value, caption in zip(batch[image_column], batch[caption_column]):
            try:
                info = inspect_image(value, max_pixels)
                values = ("", info.width, info.height, info.format, info.mode)
            except UndecodableImage as err:
                values = (err.reason, 0, 0, "", "")
            for name, item in zip(SCAN_COLUMNS, values):
                out[name].append(item)
            out[CAPTIONED].append(bool(clean_captions(caption)))
        return out

    return ds.map(inspect, batched=True, batch_size=256, desc="checking images and captions",
                  num_proc=cfg.num_workers if cfg.num_workers > 1 and len(ds) > 5000 else None)


@dataclass
class Skips:
    """The rows a scan leaves out, by reason, and the rows kept without a caption."""

    total: int
    by_reason: dict[str, list[int]] = field(default_factory=dict)  # reason -> rows, in order
    kept_uncaptioned: list[int] = field(default_factory=list)

    @property
    def skipped(self) -> list[int]:
        return sorted(row for rows in self.by_reason.values() for row in rows)


def find_skips(scanned: datasets.Dataset, cfg: DataConfig) -> Skips:
    """Which rows of a scanned dataset cannot train, and why (an image's fault comes first)."""
    skips = Skips(len(scanned), collections.defaultdict(list))
    for row, (reason, captioned) in enumerate(zip(scanned[SKIP], scanned[CAPTIONED])):
        if reason:
            skips.by_reason[reason].append(row)
        elif not captioned and cfg.empty_captions == "skip":
            skips.by_reason[NO_CAPTION].append(row)
        elif not captioned:
            skips.kept_uncaptioned.append(row)
    skips.by_reason = dict(skips.by_reason)
    return skips


def drop_unusable(ds: datasets.Dataset, cfg: DataConfig) -> datasets.Dataset:
    """The rows of `ds` that can train (scanned: their sizes are columns), warning once about the
    rest with the count and the first few files for each reason."""
    scanned = scan(ds, cfg)
    skips = find_skips(scanned, cfg)
    message = skip_message(skips, scanned, cfg)
    if message:
        warnings.warn(message, stacklevel=2)
    if skips.by_reason:
        skipped = set(skips.skipped)
        scanned = scanned.select([row for row in range(len(scanned)) if row not in skipped])
    if len(scanned) == 0:
        raise LdmError(f"dataset {cfg.source} (split '{cfg.split}') has no usable images"
                       + (f" ({message})" if message else ""))
    return scanned


def skip_message(skips: Skips, ds: datasets.Dataset, cfg: DataConfig) -> str:
    """One line: how many images are left out of how many, for which reasons, naming a few files."""
    def named(rows: list[int]) -> str:
        names = [describe(ds[row][cfg.image_column]) for row in rows[:WARN_PATHS]]
        return ", ".join(names) + (", ..." if len(rows) > WARN_PATHS else "")

    parts = []
    if skips.by_reason:
        reasons = "; ".join(f"{len(rows)} {reason} ({named(rows)})" for reason, rows in skips.by_reason.items())
        parts.append(f"skipped {len(skips.skipped)} image(s) of {skips.total} in {cfg.source}: {reasons}")
    if skips.kept_uncaptioned:
        parts.append(f"{len(skips.kept_uncaptioned)} image(s) with no caption train with the empty prompt "
                     f"(data.empty_captions: keep): {named(skips.kept_uncaptioned)}")
    return "; ".join(parts)
