"""What differs between two caches, to the bit: the tests and the cache benchmark build one cache in
several ways (processes, workers, sources) and check that each gives the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldm.data.latent_cache.read import CachePart, load_cache


def cache_contents(folder: Path) -> list[dict]:
    """Every part of a cache as training reads it (through `CachePart`'s views): all rows' latent
    moments, all captions' embeddings and each row's caption count and captions, in order. For
    comparing caches built different ways."""
    read = []
    for part in load_cache(folder):
        columns = CachePart(part)
        rows = np.arange(len(part))
        read.append({"mean": columns.mean.take(rows),
                     "std": columns.std.take(rows) if columns.std is not None else None,
                     "mask": columns.mask.take(rows) if columns.mask is not None else None,
                     "embeddings": columns.embeddings.take(np.arange(columns.caption_count.sum())),
                     "caption_count": columns.caption_count, "captions": part["captions"]})
    return read


def cache_differences(a: Path, b: Path) -> list[str]:
    """What differs between two caches (empty when they hold the same rows, captions, latents and
    embeddings, to the bit)."""
    first, second = cache_contents(a), cache_contents(b)
    if len(first) != len(second):
        return [f"{len(first)} parts against {len(second)}"]
    differences = []
    for index, (x, y) in enumerate(zip(first, second)):
        if x["captions"] != y["captions"]:
            differences.append(f"part {index}: captions")
        for name in ("mean", "std", "mask", "embeddings", "caption_count"):
            same = (x[name] is None and y[name] is None) or (
                x[name] is not None and y[name] is not None and x[name].shape == y[name].shape
                and np.array_equal(x[name], y[name]))
            if not same:
                differences.append(f"part {index}: {name}")
    return differences
