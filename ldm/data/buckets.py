"""Aspect-ratio buckets: which sizes images are trained at, and which size each image gets.

Cropping every image to a square throws away a third of a portrait or a landscape. With buckets
(`data.buckets`, as kohya's sd-scripts and SimpleTuner offer them) there is a list of sizes of about
the same area but different shapes; each image goes to the bucket whose aspect ratio is closest to
its own, is resized to cover it and cropped (`ldm.data.transforms.resize_and_crop`), and every
batch holds images of one bucket (`ldm.data.sampler.BucketBatchSampler`).

Without buckets the one size is the square data.resolution x data.resolution, and everything here
still answers: one bucket, every image in it.

Sizes are (width, height) everywhere, as PIL has them.
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.sources.scan import HEIGHT, WIDTH

Size = tuple[int, int]


def bucket_sizes(cfg: DataConfig) -> list[Size]:
    """The sizes images are trained at, sorted by aspect ratio (tallest first)."""
    buckets = cfg.buckets
    if buckets is None:
        return [(cfg.resolution, cfg.resolution)]
    if buckets.sizes is not None:
        sizes = {(int(width), int(height)) for width, height in buckets.sizes}
    else:
        sizes = generated_sizes(area=buckets.area or cfg.resolution ** 2,
                                min_side=buckets.min_side or cfg.resolution // 2,
                                max_side=buckets.max_side or cfg.resolution * 2, step=buckets.step)
    return sorted(sizes, key=lambda size: size[0] / size[1])


def generated_sizes(area: int, min_side: int, max_side: int, step: int) -> set[Size]:
    """kohya's bucket list: for each width, the largest height (a multiple of `step`) that keeps
    the area within `area`, both sides within [min_side, max_side]; and the square of `area`."""
    low, high = math.ceil(min_side / step) * step, max_side // step * step
    side = min(high, max(low, math.isqrt(area) // step * step))
    sizes = {(side, side)}
    for width in range(low, high + 1, step):
        height = min(high, area // width // step * step)
        if height >= low:
            sizes |= {(width, height), (height, width)}
    if not sizes or low > high:
        raise LdmError(f"data.buckets: no bucket fits area {area} with sides between min_side {min_side} and "
                       f"max_side {max_side} in steps of {step} (unset sides are data.resolution / 2 and x 2)")
    return sizes


def assign_buckets(widths, heights, sizes: list[Size]) -> np.ndarray:
    """For each image, the index in `sizes` of the bucket whose aspect ratio is closest to its own
    (compared as log ratios, so 1:2 and 2:1 are equally far from 1:1)."""
    image_ratio = np.log(np.asarray(widths, dtype=np.float64) / np.asarray(heights, dtype=np.float64))
    bucket_ratio = np.log(np.array([width / height for width, height in sizes]))
    return np.abs(image_ratio[:, None] - bucket_ratio[None, :]).argmin(axis=1)


def row_buckets(scanned: datasets.Dataset, cfg: DataConfig) -> tuple[list[Size], np.ndarray]:
    """(the bucket sizes, each row's bucket index) of a scanned dataset (ldm.data.sources.scan)."""
    sizes = bucket_sizes(cfg)
    if len(sizes) == 1:
        return sizes, np.zeros(len(scanned), dtype=np.int64)
    return sizes, assign_buckets(scanned[WIDTH], scanned[HEIGHT], sizes)


def cropped_share(width: int, height: int, bucket: Size) -> float:
    """The share of an image's pixels that its crop to `bucket` cuts away (once resized to cover it)."""
    scale = max(bucket[0] / width, bucket[1] / height)
    return 1.0 - (bucket[0] * bucket[1]) / (width * height * scale * scale)
