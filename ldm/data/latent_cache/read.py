"""Reading the cache back: its parts memory-mapped (`load_cache`), and training batches gathered
from numpy views over their Arrow buffers (`LatentCacheDataset`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch

from ldm.components.text_time import TIME_IDS as TIME_ID_COUNT
from ldm.core.errors import LdmError
from ldm.data.latent_cache.layout import PARTS, POOLED, SHARD_DATA, TEXT_LENGTH, TIME_IDS, shard_name
from ldm.data.masks import MASK


def cached(folder: Path) -> bool:
    return (folder / PARTS).is_file()


def load_cache(folder: Path) -> list[datasets.Dataset]:
    """The parts of a cache, each its shards in order (memory-mapped, not copied), in order."""
    if not cached(folder):
        raise LdmError(f"no latent cache at {folder}")
    layout = json.loads((folder / PARTS).read_text())
    count = layout["shards"]
    return [datasets.concatenate_datasets([
        datasets.Dataset.from_file(str((folder / part["name"] / shard_name(index, count)).with_suffix(SHARD_DATA)))
        for index in range(count)]) for part in layout["parts"]]


class LatentCacheDataset(torch.utils.data.Dataset):
    """Batches gathered straight from the memory-mapped cache, one caption drawn per image.

    `rows` are the cache rows this dataset serves (a training or validation split), numbered part
    after part. Keys are indices into `rows`, or the (index, sample_seed) pairs of the samplers
    (ldm/data/sampler.py): the seed picks the caption, so a resumed run draws the same captions.
    A batch comes from one part (latents of one shape): `bucket_of` gives each index's part, for
    BucketBatchSampler; without buckets there is one part. Each column is viewed once as numpy
    arrays over the Arrow buffers (no copy; `datasets`' own row access rebuilds extension types on
    every call, which costs more than the optimizer and EMA together for the shapes UNet:
    docs/benchmarks.md). (`__getitems__` returns the whole batch: the DataLoader needs no collate,
    use `already_batched`.)
    """

    def __init__(self, parts: list[datasets.Dataset], rows: np.ndarray, train: bool):
        self.parts, self.rows, self.train = parts, np.asarray(rows, dtype=np.int64), train
        self.columns = [CachePart(part) for part in parts]
        starts = np.cumsum([0] + [len(part) for part in parts])
        self.bucket_of = np.searchsorted(starts, self.rows, side="right") - 1
        self.part_rows = self.rows - starts[self.bucket_of]  # each index's row within its part

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn (macOS, Windows) receive a pickled copy: send the
        # memory-mapped datasets (pickled as their file names), not views that would pickle as data.
        return {"parts": self.parts, "rows": self.rows, "train": self.train}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["parts"], state["rows"], state["train"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return self.__getitems__([key])

    def __getitems__(self, keys: list) -> dict:
        pairs = [key if isinstance(key, tuple) else (key, None) for key in keys]
        indices = np.array([int(index) for index, _ in pairs])
        parts = np.unique(self.bucket_of[indices])
        if len(parts) > 1:
            raise ValueError("a batch mixes cache parts of different latent shapes: batch with "
                             "BucketBatchSampler")
        seeds = [seed for _, seed in pairs] if self.train else None
        return self.columns[parts[0]].batch(self.part_rows[indices], seeds)


class CachePart:
    """One part's columns, viewed once as numpy arrays over the Arrow buffers (`CachedColumn`, no
    copy: the file stays memory-mapped), so a batch is one fancy index per column. `datasets`' own
    row access rebuilds the columns' extension types on every call: 3.9 ms a batch of 32, more
    than the optimizer and EMA together for the shapes UNet."""

    def __init__(self, part: datasets.Dataset):
        table = part.data.table
        latent_shape = tuple(part.features["mean"].shape)
        self.mean = CachedColumn.of(table, "mean", latent_shape)
        self.std = CachedColumn.of(table, "std", latent_shape) if "std" in table.column_names else None
        # loss masks at the latent grid (data.mask), or None
        self.mask = CachedColumn.of(table, MASK, (1, *latent_shape[1:])) if MASK in table.column_names else None
        # SDXL time ids (original size, crop, target size) of an SDXL-style model's cache, or None
        self.time_ids = CachedColumn.of(table, TIME_IDS, (TIME_ID_COUNT,)) if TIME_IDS in table.column_names else None
        # Captions of all rows numbered in one sequence: row r's are first_caption[r] + 0..count-1.
        self.embeddings = CachedColumn.of(table, "embeddings", tuple(part.features["embeddings"].shape[1:]))
        self.caption_count = np.concatenate([np.diff(_storage(chunk).offsets.to_numpy())
                                             for chunk in table.column("embeddings").chunks])
        self.first_caption = np.cumsum(self.caption_count) - self.caption_count
        # long captions: each caption's own rows (the rest is the empty prompt's padding), or None
        self.text_length = (np.concatenate([_flat(_storage(chunk)) for chunk in table.column(TEXT_LENGTH).chunks])
                            if TEXT_LENGTH in table.column_names else None)
        # an SDXL-style model's pooled rows, numbered as the captions, or None
        self.pooled = (CachedColumn.of(table, POOLED, tuple(part.features[POOLED].shape[1:]))
                       if POOLED in table.column_names else None)

    def batch(self, rows: np.ndarray, seeds: list[int | None] | None) -> dict:
        """The batch of `rows`, each with one of its captions drawn by its seed (by torch's
        generator where the seed is None), or the first of each without `seeds` (validation)."""
        counts = self.caption_count[rows]
        drawn = [0] * len(rows) if seeds is None else [_draw(count, seed) for count, seed in zip(counts, seeds)]
        captions = self.first_caption[rows] + np.array(drawn, dtype=np.int64)
        embeddings = self.embeddings.take(captions)
        if self.text_length is not None:  # cut to the batch's longest caption, as encoding pads a batch
            embeddings = embeddings[:, :self.text_length[captions].max()]
        if self.pooled is not None:  # packed as ldm.components.text_time packs: token rows, then pooled
            embeddings = np.concatenate([embeddings, self.pooled.take(captions)], axis=1)
        batch = {"mean": torch.from_numpy(self.mean.take(rows)),
                 "embeddings": torch.from_numpy(np.ascontiguousarray(embeddings)).float()}
        if self.std is not None:
            batch["std"] = torch.from_numpy(self.std.take(rows))
        if self.mask is not None:
            batch[MASK] = torch.from_numpy(self.mask.take(rows))
        if self.time_ids is not None:
            batch[TIME_IDS] = torch.from_numpy(self.time_ids.take(rows))
        return batch


def _draw(count: int, seed: int | None) -> int:
    """Which of an image's `count` captions a training sample uses."""
    if count == 1:
        return 0
    rng = random.Random(int(torch.randint(0, 2**62, ()).item()) if seed is None else seed)
    return rng.randrange(count)


class CachedColumn:
    """A column of same-shaped arrays, as numpy views over each Arrow record batch's buffer.

    A list column (embeddings: several per row) is flattened: its items are numbered in order.
    The views share the memory-mapped file (no copy into RAM, whatever the cache's size);
    `take` gathers items by number across record batches.
    """

    def __init__(self, chunks: list[np.ndarray]):
        self.chunks = chunks
        self.starts = np.cumsum([0] + [len(chunk) for chunk in chunks])

    @classmethod
    def of(cls, table: pa.Table, name: str, item_shape: tuple) -> CachedColumn:
        return cls([_flat(_storage(chunk)).reshape(-1, *item_shape) for chunk in table.column(name).chunks])

    def take(self, items: np.ndarray) -> np.ndarray:
        chunk_of = np.searchsorted(self.starts, items, side="right") - 1
        out = np.empty((len(items), *self.chunks[0].shape[1:]), self.chunks[0].dtype)
        for chunk in np.unique(chunk_of):
            here = chunk_of == chunk
            out[here] = self.chunks[chunk][items[here] - self.starts[chunk]]
        return out


def _storage(chunk):
    """A column chunk as plain nested Arrow lists (the storage under `datasets`' ArrayXD type)."""
    return chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk


def _flat(array) -> np.ndarray:
    """All values of a nested list array, in order, as one numpy array (a view where Arrow allows)."""
    while pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) \
            or pa.types.is_large_list(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False)


def already_batched(batch: dict) -> dict:
    """DataLoader collate for datasets whose `__getitems__` returns the batch itself."""
    return batch
