"""The cache folder's names (see ldm/data/latent_cache/__init__.py for the whole layout): parts.json,
one folder per part, each part's shards and their markers."""

from __future__ import annotations

from pathlib import Path

from ldm.data.buckets import Size

CACHE_VERSION = 3  # bump when the layout of a cache changes, so old caches are not misread
PARTS = "parts.json"
SHARD = "shard-{index:05d}-of-{count:05d}"
SHARD_DATA, SHARD_MARKER = ".arrow", ".json"
# A cache of long captions (prompt_chunks above 1): each caption's own embedding rows, beside its
# embedding padded to the column's width.
TEXT_LENGTH = "text_length"
TIME_IDS = "time_ids"  # the column (and batch key) of an SDXL-style model's size and crop conditioning
# An SDXL-style model's pooled embedding rows, kept apart from the token rows so that a batch of long
# captions is cut to its longest caption's token rows and the pooled rows still end it (text_time's packing)
POOLED = "pooled"


def part_name(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def shard_name(index: int, count: int) -> str:
    return SHARD.format(index=index, count=count)


def marker(shard: Path) -> Path:
    return shard.with_suffix(SHARD_MARKER)


def shard_markers(folder: Path, sizes: list[Size], count: int) -> list[Path]:
    """The marker of every shard of every part: the cache is complete when all exist."""
    return [marker(folder / part_name(size) / shard_name(index, count)) for size in sizes for index in range(count)]
