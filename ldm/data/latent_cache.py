"""The latent cache: every image's latent distribution and every caption's embedding, computed once.

Both stage-2 encoders are frozen, so what they make of the dataset never changes during training;
computing it once turns each training step into UNet work only. The cache is a folder under
RUN/diffusion/cache/<fingerprint>/ of Arrow datasets (`datasets.save_to_disk`, memory-mapped when
read), one part per image size, so that each part's latents have one fixed shape:

    parts.json     the parts in order: [{"name": "32x32", "size": [32, 32]}, ...]
    32x32/         one row per image of that size (a bucket's; data.resolution's square without
                   buckets, the only part then), rows in the order of the data:
        mean        (C, h, w) float32   the latent's posterior mean (KL) or pre-quantization value (VQ)
        std         (C, h, w) float32   the posterior's standard deviation (KL only)
        embeddings  (n, L, D) float16   one text embedding per caption (n >= 1: every caption is kept)
        captions    n strings

The cache's rows are numbered part after part. Building is two steps, each on its own: encode a
list of rows at one size (`encode_part`), write the parts and their list (`build_cache`); a build
split across processes would share the first and gather for the second.

The fingerprint covers all that decides the cache's content: the dataset's own `datasets`
fingerprint (its files), the data settings that change the pixels or the captions, and the weights
and configs of the autoencoder and the text encoder. The same inputs find the same folder and reuse
it; any changed input gives a new fingerprint and a new cache. Embeddings are stored in float16,
halving the largest part of the cache (CLIP's hidden states lose nothing that matters).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.atomic import atomic_folder
from ldm.core.config import to_dict
from ldm.core.errors import LdmError
from ldm.data.buckets import Size, row_buckets
from ldm.data.captions import captions_of
from ldm.data.config import DataConfig
from ldm.data.datamodule import decode_row
from ldm.data.transforms import preprocess

CACHE_VERSION = 2  # bump when the layout of a cache changes, so old caches are not misread
TEXT_BATCH = 256  # captions per text-encoder call while building
PARTS = "parts.json"
# The data settings that change a cache's pixels or captions (center_crop and random_flip cannot
# differ: a cache refuses random crops and flips).
CACHED_SETTINGS = ("source", "split", "image_column", "caption_column", "resolution", "max_samples",
                   "background", "max_pixels", "empty_captions")


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a model's config and weights: identical for the same model, whatever its path."""
    digest = hashlib.sha256(json.dumps(_plain(module.config), sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _plain(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def fingerprint(ds: datasets.Dataset, cfg: DataConfig, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner) -> str:
    """The cache key: data, data settings, autoencoder and text encoder (tokenizer included)."""
    parts = {
        "version": CACHE_VERSION,
        "data": ds._fingerprint,  # datasets' own hash of the files and every transform applied
        "settings": {key: getattr(cfg, key) for key in CACHED_SETTINGS},
        "buckets": to_dict(cfg.buckets) if cfg.buckets is not None else None,
        "autoencoder": module_digest(autoencoder.vae),
        "text_encoder": module_digest(conditioner.text_encoder),
        "tokenizer": hashlib.sha256(json.dumps(conditioner.tokenizer.get_vocab(), sort_keys=True)
                                    .encode()).hexdigest(),
        "max_length": conditioner.tokenizer.model_max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_features(autoencoder: FrozenAutoencoder, conditioner: TextConditioner, size: Size) -> datasets.Features:
    """The columns of a part whose images are `size` (width, height)."""
    latent = (autoencoder.latent_channels, size[1] // autoencoder.factor, size[0] // autoencoder.factor)
    text = (None, conditioner.tokenizer.model_max_length, conditioner.hidden_size)
    features = {"mean": datasets.Array3D(latent, "float32")}
    if autoencoder.is_kl:
        features["std"] = datasets.Array3D(latent, "float32")
    features["embeddings"] = datasets.Array3D(text, "float16")
    features["captions"] = datasets.Sequence(datasets.Value("string"))
    return datasets.Features(features)


def _encoder(cfg: DataConfig, size: Size, autoencoder: FrozenAutoencoder, conditioner: TextConditioner):
    """The batched `map` function: images -> latent moments at `size`, captions -> embeddings."""
    rng = random.Random(0)  # unused: caching always centre-crops and never flips

    def encode(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        pixels = torch.stack([preprocess(decode_row(row, cfg, size), size, True, False, rng) for row in rows])
        mean, std = autoencoder.moments(pixels)
        captions = [captions_of(value) for value in batch[cfg.caption_column]]
        flat = [text for texts in captions for text in texts]
        embedded = torch.cat([conditioner.encode(flat[i:i + TEXT_BATCH]).cpu()
                              for i in range(0, len(flat), TEXT_BATCH)]).half().numpy()
        bounds = np.cumsum([0] + [len(texts) for texts in captions])
        out = {"mean": mean.float().cpu().numpy(),
               "embeddings": [embedded[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
               "captions": captions}
        if std is not None:
            out["std"] = std.float().cpu().numpy()
        return out

    return encode


def part_name(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def plan_parts(ds: datasets.Dataset, cfg: DataConfig) -> list[tuple[Size, np.ndarray]]:
    """(size, rows of `ds`) of each part: the rows of each bucket that holds any, in order."""
    sizes, bucket_of = row_buckets(ds, cfg)
    return [(sizes[bucket], np.flatnonzero(bucket_of == bucket)) for bucket in np.unique(bucket_of)]


@torch.no_grad()
def encode_part(ds: datasets.Dataset, size: Size, cfg: DataConfig, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner, key: str) -> datasets.Dataset:
    """The cache rows of every row of `ds`, its images at `size`."""
    return ds.map(
        _encoder(cfg, size, autoencoder, conditioner), batched=True, batch_size=cfg.batch_size,
        remove_columns=ds.column_names, features=cache_features(autoencoder, conditioner, size),
        new_fingerprint=f"{key}-{part_name(size)}",  # the function holds two models: don't let datasets hash it
        desc=f"caching latents and text embeddings ({part_name(size)})",
    )


def build_cache(ds: datasets.Dataset, cfg: DataConfig, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner, folder: Path, key: str) -> Path:
    """Encode `ds` (scanned: ldm.data.sources.scan) part by part and write it to `folder`, whole
    or not at all."""
    with atomic_folder(folder) as tmp:
        parts = []
        for size, rows in plan_parts(ds, cfg):
            rows_ds = ds if len(rows) == len(ds) else ds.select(rows)
            encode_part(rows_ds, size, cfg, autoencoder, conditioner, key).save_to_disk(str(tmp / part_name(size)))
            parts.append({"name": part_name(size), "size": list(size)})
        (tmp / PARTS).write_text(json.dumps({"version": CACHE_VERSION, "parts": parts}, indent=1))
    return folder


def cached(folder: Path) -> bool:
    return (folder / PARTS).is_file()


def load_cache(folder: Path) -> list[datasets.Dataset]:
    """The parts of a cache, memory-mapped, in order."""
    if not cached(folder):
        raise LdmError(f"no latent cache at {folder}")
    parts = json.loads((folder / PARTS).read_text())["parts"]
    return [datasets.load_from_disk(str(folder / part["name"])) for part in parts]


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
        # Captions of all rows numbered in one sequence: row r's are first_caption[r] + 0..count-1.
        self.embeddings = CachedColumn.of(table, "embeddings", tuple(part.features["embeddings"].shape[1:]))
        self.caption_count = np.concatenate([np.diff(_storage(chunk).offsets.to_numpy())
                                             for chunk in table.column("embeddings").chunks])
        self.first_caption = np.cumsum(self.caption_count) - self.caption_count

    def batch(self, rows: np.ndarray, seeds: list[int | None] | None) -> dict:
        """The batch of `rows`, each with one of its captions drawn by its seed (by torch's
        generator where the seed is None), or the first of each without `seeds` (validation)."""
        counts = self.caption_count[rows]
        drawn = [0] * len(rows) if seeds is None else [_draw(count, seed) for count, seed in zip(counts, seeds)]
        captions = self.first_caption[rows] + np.array(drawn, dtype=np.int64)
        batch = {"mean": torch.from_numpy(self.mean.take(rows)),
                 "embeddings": torch.from_numpy(self.embeddings.take(captions)).float()}
        if self.std is not None:
            batch["std"] = torch.from_numpy(self.std.take(rows))
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
