"""`ldm data check`: what a user needs to know about their data before a long run.

It reads the data exactly as training will (the same source loading, scan, decoding, bucket
assignment and caption rules: `ldm.data.sources`, `ldm.data.decode`, `ldm.data.buckets`,
`ldm.data.captions`) and reports:

- images counted, by file format and by PIL mode;
- every skipped file with its reason (as the training warning counts them);
- sizes and aspect ratios as histograms, how many images are enlarged;
- the bucket each image goes to and the share of its pixels the crop cuts away;
- captions: missing or empty, repeated, and their length against the text encoder's limit;
- with `data.mask`, the loss masks (ldm/data/masks.py): found, missing, unreadable, empty (all black);

and, with a preview folder, writes each usable image as training will see it (decoded, resized to
cover its bucket and centre-cropped, as validation crops it; with `data.mask`, dimmed where its
mask leaves it out) as a PNG named after its source file.
`fatal` says why training would fail on this data (no usable image, too few to hold out for
validation), or is None.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ldm.core.errors import LdmError
from ldm.core.images import write_png
from ldm.core.outputs import refuse_earlier_results, refuse_inside_inputs
from ldm.data.buckets import Size, cropped_share, row_buckets
from ldm.data.captions import clean_captions
from ldm.data.config import BucketConfig, DataConfig
from ldm.data.datamodule import validation_rows
from ldm.data.decode import NO_PATH, UndecodableImage, describe, inspect_image
from ldm.data.masks import EMPTY, FOUND, MISSING, UNREADABLE, decode_with_mask, dim_masked_out, mask_status
from ldm.data.sources import load_source
from ldm.data.sources.scan import FORMAT, HEIGHT, MODE, WIDTH, find_skips, scan
from ldm.data.transforms import resize_and_crop_with_mask

# CLIP's text encoders read 77 tokens (start and end included); what a caption is measured
# against when no tokenizer is given.
CLIP_TOKEN_LIMIT = 77
# Without a tokenizer a caption's length is its words and punctuation marks, plus the start and
# end tokens: a lower bound on a BPE tokenizer's count (it never splits less than a word).
WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")
SPECIAL_TOKENS = 2
# Aspect ratio (width / height) bins: their upper edges and names.
ASPECT_BINS = [(1 / 2, "taller than 1:2"), (3 / 4, "1:2 to 3:4"), (4 / 3, "3:4 to 4:3"),
               (2.0, "4:3 to 2:1"), (float("inf"), "wider than 2:1")]
# Short side against the target side: upper edges (as multiples of it) and names.
SIDE_BINS = [(0.5, "under 1/2 of the target (enlarged over 2x)"), (1.0, "1/2 to 1x (enlarged)"),
             (2.0, "1x to 2x"), (4.0, "2x to 4x"), (float("inf"), "4x or more")]
TOP_REPEATS = 5
BAR = 40  # characters of the longest histogram bar


@dataclass
class BucketUse:
    size: Size
    images: int
    cropped: float  # mean share of each image's pixels cut away


@dataclass
class DataReport:
    source: str
    split: str
    total: int  # rows in the split
    usable: int
    formats: collections.Counter = field(default_factory=collections.Counter)
    modes: collections.Counter = field(default_factory=collections.Counter)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (file, reason, what is wrong)
    kept_uncaptioned: list[str] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    target_side: int = 0
    buckets: list[BucketUse] = field(default_factory=list)
    bucketed: bool = False
    cropped: float = 0.0  # mean share of pixels cut away, over usable images
    cropped_with_default_buckets: float | None = None  # the same with `buckets: {}`, when off
    captions: int = 0  # every caption of every usable image
    repeated: list[tuple[str, int]] = field(default_factory=list)  # most repeated first
    repeated_images: int = 0  # images whose caption another image has too
    token_counts: list[int] = field(default_factory=list)
    token_limit: int = CLIP_TOKEN_LIMIT
    tokenizer: bool = False  # counted by a tokenizer, or estimated from words
    over_limit: list[tuple[str, int]] = field(default_factory=list)  # (caption, tokens)
    previews: int = 0
    mask: str = "none"  # data.mask
    masks: dict[str, list[str]] = field(default_factory=dict)  # found / missing / ... -> image files
    fatal: str | None = None


def word_tokens(caption: str) -> int:
    return len(WORD_OR_MARK.findall(caption)) + SPECIAL_TOKENS


def check_data(cfg: DataConfig, count_tokens: Callable[[str], int] | None = None,
               token_limit: int = CLIP_TOKEN_LIMIT, preview: str | Path | None = None) -> DataReport:
    """The report on `cfg`'s data (see the module docstring); `count_tokens` is the text encoder's
    tokenizer (None: estimated from words), `preview` a folder for the images as training sees them."""
    if cfg.streaming:
        raise LdmError("ldm data check reads the whole split: set data.streaming: false")
    if preview is not None:  # before any work: previews never land among (or on) the user's images
        refuse_inside_inputs(preview, {"the data": cfg.source}, "--preview")
        refuse_earlier_results(preview, [p.name for p in Path(preview).glob("*.png")], "--preview")
    scanned = scan(load_source(cfg), cfg)
    skips = find_skips(scanned, cfg)
    names = [describe(value) for value in scanned[cfg.image_column]]
    report = DataReport(cfg.source, cfg.split, len(scanned), len(scanned) - len(skips.skipped),
                        target_side=cfg.resolution, bucketed=cfg.buckets is not None,
                        tokenizer=count_tokens is not None, token_limit=token_limit)
    for reason, rows in skips.by_reason.items():
        report.skipped += [(names[row], reason, _detail(scanned[row][cfg.image_column], names[row], cfg))
                           for row in rows]
    report.skipped.sort()
    report.kept_uncaptioned = [names[row] for row in skips.kept_uncaptioned]
    skipped = set(skips.skipped)
    usable = scanned.select([row for row in range(len(scanned)) if row not in skipped])
    report.formats.update(usable[FORMAT])
    report.modes.update(usable[MODE])
    report.widths, report.heights = usable[WIDTH], usable[HEIGHT]
    _measure_buckets(report, usable, cfg)
    _measure_captions(report, usable[cfg.caption_column], count_tokens or word_tokens)
    report.mask = cfg.mask
    if cfg.mask != "none":
        report.masks = count_masks(usable, cfg)
    report.fatal = _fatal(report, cfg)
    if preview is not None:
        report.previews = write_previews(usable, cfg, Path(preview))
    return report


def _detail(value, name: str, cfg: DataConfig) -> str:
    """What exactly is wrong with a skipped image (its caption, when the image itself is fine)."""
    try:
        inspect_image(value, cfg.max_pixels)
    except UndecodableImage as err:
        return err.detail
    return f"{name}: its caption is missing, empty or not text"


def _measure_buckets(report: DataReport, usable, cfg: DataConfig) -> None:
    if report.usable == 0:
        return
    sizes, bucket_of = row_buckets(usable, cfg)
    shares = np.array([cropped_share(w, h, sizes[b]) for w, h, b in zip(report.widths, report.heights, bucket_of)])
    report.cropped = float(shares.mean())
    report.buckets = [BucketUse(sizes[b], int((bucket_of == b).sum()), float(shares[bucket_of == b].mean()))
                      for b in np.unique(bucket_of)]
    if cfg.buckets is None:
        buckets, assigned = row_buckets(usable, dataclasses.replace(cfg, buckets=BucketConfig()))
        report.cropped_with_default_buckets = float(np.mean(
            [cropped_share(w, h, buckets[b]) for w, h, b in zip(report.widths, report.heights, assigned)]))


def _measure_captions(report: DataReport, values: list, count_tokens: Callable[[str], int]) -> None:
    per_image = [clean_captions(value) for value in values]
    captions = [text for texts in per_image for text in texts]
    report.captions = len(captions)
    counts = collections.Counter(captions)
    report.repeated = [(text, n) for text, n in counts.most_common() if n > 1]
    report.repeated_images = sum(1 for texts in per_image if any(counts[text] > 1 for text in texts))
    lengths = {text: count_tokens(text) for text in counts}
    report.token_counts = [lengths[text] for text in captions]
    report.over_limit = sorted(((text, n) for text, n in lengths.items() if n > report.token_limit),
                               key=lambda item: -item[1])


def count_masks(usable, cfg: DataConfig) -> dict[str, list[str]]:
    """The image files of each mask status (FOUND, MISSING, UNREADABLE, EMPTY), each mask decoded."""
    found: dict[str, list[str]] = {}
    for row in range(len(usable)):
        record = usable[row]
        found.setdefault(mask_status(record, cfg), []).append(describe(record[cfg.image_column]))
    return found


def _fatal(report: DataReport, cfg: DataConfig) -> str | None:
    if report.usable == 0:
        return f"dataset {cfg.source} (split '{cfg.split}') has no usable images"
    try:
        validation_rows(report.usable, cfg)
    except LdmError as err:
        return str(err)
    return None


def write_previews(usable, cfg: DataConfig, folder: Path) -> int:
    """Each usable image as training sees it, as folder/<source file's stem>.png (a number added
    when two sources share a stem; the row number for images without a file name)."""
    sizes, bucket_of = row_buckets(usable, cfg)
    taken: set[str] = set()
    for row in range(len(usable)):
        record = usable[row]
        size = sizes[bucket_of[row]]
        image, mask = resize_and_crop_with_mask(*decode_with_mask(record, cfg, size), size, center_crop=True,
                                                rng=random.Random(0))
        if mask is not None:
            image = dim_masked_out(image, mask)
        write_png(folder / f"{_preview_stem(record[cfg.image_column], row, taken)}.png", image)
    return len(usable)


def _preview_stem(value, row: int, taken: set[str]) -> str:
    name = describe(value)
    stem = f"{row:06d}" if name == NO_PATH else Path(name).stem
    unique, number = stem, 1
    while unique in taken:
        number += 1
        unique = f"{stem}-{number}"
    taken.add(unique)
    return unique


# ---- the report as text -------------------------------------------------------------------------

def format_report(report: DataReport) -> str:
    lines = [(f"{report.source} (split '{report.split}'): {report.total} images, {report.usable} usable, "
              f"{len(report.skipped)} skipped")]
    if report.usable:
        lines += ["", "formats: " + _counts(report.formats), "modes:   " + _counts(report.modes)]
    if report.skipped:
        by_reason = collections.Counter(reason for _, reason, _ in report.skipped)
        lines += ["", "skipped: " + _counts(by_reason)]
        lines += [f"  {reason}: {detail}" for _, reason, detail in report.skipped]
    if report.usable:
        lines += _size_lines(report) + _bucket_lines(report)
    lines += _caption_lines(report) + _mask_lines(report)
    if report.previews:
        lines += ["", f"wrote {report.previews} preview images"]
    lines += ["", f"training would fail: {report.fatal}" if report.fatal else "ready to train"]
    return "\n".join(lines)


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{name or '?'} {n}" for name, n in counter.most_common())


def _histogram(title: str, values: list[float], bins: list[tuple[float, str]]) -> list[str]:
    counts = [0] * len(bins)
    for value in values:
        counts[next(i for i, (edge, _) in enumerate(bins) if value < edge)] += 1
    width = max(len(name) for _, name in bins)
    top = max(counts) or 1
    return ["", title] + [f"  {name:<{width}} {n:>6}  {'#' * round(BAR * n / top)}"
                          for (_, name), n in zip(bins, counts)]


def _size_lines(report: DataReport) -> list[str]:
    widths, heights = report.widths, report.heights
    sizes = (f"sizes: width {min(widths)} to {max(widths)} (median {statistics.median(widths):g}), "
             f"height {min(heights)} to {max(heights)} (median {statistics.median(heights):g})")
    lines = ["", sizes]
    short = [min(w, h) / report.target_side for w, h in zip(widths, heights)]
    lines += _histogram(f"short side against the target side {report.target_side}:", short, SIDE_BINS)
    return lines + _histogram("aspect ratio (width:height):", [w / h for w, h in zip(widths, heights)], ASPECT_BINS)


def _bucket_lines(report: DataReport) -> list[str]:
    title = "buckets" if report.bucketed else "crop (no buckets: every image to one square)"
    lines = ["", f"{title}: {report.cropped:.1%} of the pixels cropped away on average"]
    lines += [f"  {use.size[0]}x{use.size[1]}: {use.images:>6} images, {use.cropped:.1%} cropped"
              for use in report.buckets]
    if report.cropped_with_default_buckets is not None:
        lines.append(f"  with data.buckets: {{}} it would be {report.cropped_with_default_buckets:.1%}")
    return lines


def _caption_lines(report: DataReport) -> list[str]:
    lines = ["", f"captions: {report.captions} of {report.usable} usable images"]
    if report.kept_uncaptioned:
        lines.append(f"  {len(report.kept_uncaptioned)} images have no caption and train with the empty prompt "
                     f"(data.empty_captions: keep), e.g. {report.kept_uncaptioned[0]}")
    if report.repeated:
        lines.append(f"  {len(report.repeated)} captions are repeated, over {report.repeated_images} images; "
                     "most repeated:")
        lines += [f"    {n} x {text!r}" for text, n in report.repeated[:TOP_REPEATS]]
    if report.token_counts:
        unit = "tokens" if report.tokenizer else "tokens (estimated from words; give --tokenizer to count)"
        lines.append(f"  length: {min(report.token_counts)} to {max(report.token_counts)} {unit}, "
                     f"median {statistics.median(report.token_counts):g}; the text encoder reads "
                     f"{report.token_limit}")
    if report.over_limit:
        lines.append(f"  {len(report.over_limit)} captions are longer and will be cut, e.g. "
                     f"{report.over_limit[0][1]} tokens: {report.over_limit[0][0][:80]!r}")
    return lines


def _mask_lines(report: DataReport) -> list[str]:
    if report.mask == "none":
        return []
    what = {FOUND: "found", MISSING: "missing (train at full weight)",
            UNREADABLE: "unreadable (train at full weight)",
            EMPTY: "empty, all black (train only at loss.mask_floor)"}
    counts = ", ".join(f"{len(report.masks.get(status, []))} {what[status]}" for status in what
                       if status == FOUND or report.masks.get(status))
    lines = ["", f"masks (data.mask: {report.mask}): {counts}"]
    lines += [f"  {what[status].split(' (')[0]}: e.g. {report.masks[status][0]}"
              for status in (MISSING, UNREADABLE, EMPTY) if report.masks.get(status)]
    return lines
