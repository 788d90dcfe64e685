"""A latent cache's contents as training reads them, to compare caches built different ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldm.data.latent_cache import CachePart, load_cache


def contents(folder: Path) -> list[dict]:
    """Every part's columns through the zero-copy views, all rows and captions in order."""
    read = []
    for part in load_cache(folder):
        columns = CachePart(part)
        rows = np.arange(len(part))
        read.append({"mean": columns.mean.take(rows),
                     "std": columns.std.take(rows) if columns.std is not None else None,
                     "embeddings": columns.embeddings.take(np.arange(columns.caption_count.sum())),
                     "caption_count": columns.caption_count, "captions": part["captions"]})
    return read


def assert_same_cache(a: Path, b: Path) -> None:
    """The same parts, rows, captions, and latents and embeddings to the bit."""
    first, second = contents(a), contents(b)
    assert len(first) == len(second)
    for x, y in zip(first, second):
        assert x["captions"] == y["captions"]
        for name in ("mean", "std", "embeddings", "caption_count"):
            if x[name] is None or y[name] is None:
                assert x[name] is None and y[name] is None, name
            else:
                assert x[name].shape == y[name].shape and np.array_equal(x[name], y[name]), name
