"""The latent cache: every image's latent distribution and every caption's embedding, computed once.

Both stage-2 encoders are frozen, so what they make of the dataset never changes during training;
computing it once turns each training step into UNet work only. The cache is an Arrow dataset
(`datasets.save_to_disk`, memory-mapped when read) under RUN/diffusion/cache/<fingerprint>/, with
one row per image:

    mean        (C, h, w) float32   the latent's posterior mean (KL) or pre-quantization value (VQ)
    std         (C, h, w) float32   the posterior's standard deviation (KL only)
    embeddings  (n, L, D) float16   one text embedding per caption (n >= 1: every caption is kept)
    captions    n strings

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
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.sources import open_image
from ldm.data.transforms import preprocess

CACHE_VERSION = 1  # bump when the layout of a cache changes, so old caches are not misread
TEXT_BATCH = 256  # captions per text-encoder call while building


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
        "settings": {key: getattr(cfg, key) for key in ("source", "split", "image_column",
                                                        "caption_column", "resolution", "max_samples")},
        "autoencoder": module_digest(autoencoder.vae),
        "text_encoder": module_digest(conditioner.text_encoder),
        "tokenizer": hashlib.sha256(json.dumps(conditioner.tokenizer.get_vocab(), sort_keys=True)
                                    .encode()).hexdigest(),
        "max_length": conditioner.tokenizer.model_max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def captions_of(value) -> list[str]:
    """All captions of a row: a list column keeps every one, a missing caption is the empty prompt."""
    if isinstance(value, (list, tuple)):
        return [str(text) for text in value] or [""]
    return ["" if value is None else str(value)]


def cache_features(autoencoder: FrozenAutoencoder, conditioner: TextConditioner,
                   resolution: int) -> datasets.Features:
    side = resolution // autoencoder.factor
    latent = (autoencoder.latent_channels, side, side)
    text = (None, conditioner.tokenizer.model_max_length, conditioner.hidden_size)
    features = {"mean": datasets.Array3D(latent, "float32")}
    if autoencoder.is_kl:
        features["std"] = datasets.Array3D(latent, "float32")
    features["embeddings"] = datasets.Array3D(text, "float16")
    features["captions"] = datasets.Sequence(datasets.Value("string"))
    return datasets.Features(features)


def _encoder(cfg: DataConfig, autoencoder: FrozenAutoencoder, conditioner: TextConditioner):
    """The batched `map` function: images -> latent moments, captions -> embeddings."""
    rng = random.Random(0)  # unused: caching always centre-crops and never flips

    def encode(batch: dict) -> dict:
        pixels = torch.stack([preprocess(open_image(value), cfg.resolution, True, False, rng)
                              for value in batch[cfg.image_column]])
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


@torch.no_grad()
def build_cache(ds: datasets.Dataset, cfg: DataConfig, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner, folder: Path, key: str) -> Path:
    """Encode `ds` and write it to `folder`, whole or not at all."""
    encoded = ds.map(
        _encoder(cfg, autoencoder, conditioner), batched=True, batch_size=cfg.batch_size,
        remove_columns=ds.column_names, features=cache_features(autoencoder, conditioner, cfg.resolution),
        new_fingerprint=key,  # the function holds two models: don't let datasets hash it
        desc="caching latents and text embeddings",
    )
    with atomic_folder(folder) as tmp:
        encoded.save_to_disk(str(tmp))
    return folder


def cached(folder: Path) -> bool:
    return (folder / "state.json").is_file()


def load_cache(folder: Path) -> datasets.Dataset:
    if not cached(folder):
        raise LdmError(f"no latent cache at {folder}")
    return datasets.load_from_disk(str(folder))


class LatentCacheDataset(torch.utils.data.Dataset):
    """Batches gathered straight from the memory-mapped cache, one caption drawn per image.

    `rows` are the cache rows this dataset serves (a training or validation split). Keys are
    indices into `rows`, or the (index, sample_seed) pairs of `ResumableShuffleSampler`: the seed
    picks the caption, so a resumed run draws the same captions.

    Each column is viewed once, here, as numpy arrays over the Arrow buffers (`CachedColumn`, no
    copy: the file stays memory-mapped), so a batch is one fancy index per column. `datasets`' own
    row access rebuilds the columns' extension types on every call, which costs more than the
    optimizer and EMA together for the shapes UNet (docs/benchmarks.md). (`__getitems__` returns the whole
    batch: the DataLoader needs no collate, use `already_batched`.)
    """

    def __init__(self, cache: datasets.Dataset, rows: np.ndarray, train: bool):
        self.cache, self.rows, self.train = cache, np.asarray(rows, dtype=np.int64), train
        table = cache.data.table
        latent_shape = tuple(cache.features["mean"].shape)
        self.mean = CachedColumn.of(table, "mean", latent_shape)
        self.std = CachedColumn.of(table, "std", latent_shape) if "std" in table.column_names else None
        # Captions of all rows numbered in one sequence: row r's are first_caption[r] + 0..count-1.
        self.embeddings = CachedColumn.of(table, "embeddings", tuple(cache.features["embeddings"].shape[1:]))
        self.caption_count = np.concatenate([np.diff(_storage(chunk).offsets.to_numpy())
                                             for chunk in table.column("embeddings").chunks])
        self.first_caption = np.cumsum(self.caption_count) - self.caption_count

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn (macOS, Windows) receive a pickled copy: send the
        # memory-mapped dataset (pickled as its file names), not views that would pickle as data.
        return {"cache": self.cache, "rows": self.rows, "train": self.train}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cache"], state["rows"], state["train"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return self.__getitems__([key])

    def __getitems__(self, keys: list) -> dict:
        pairs = [key if isinstance(key, tuple) else (key, None) for key in keys]
        rows = self.rows[[int(index) for index, _ in pairs]]
        captions = self.first_caption[rows] + np.array(
            [self._pick(count, seed) for count, (_, seed) in zip(self.caption_count[rows], pairs)])
        batch = {"mean": torch.from_numpy(self.mean.take(rows)),
                 "embeddings": torch.from_numpy(self.embeddings.take(captions)).float()}
        if self.std is not None:
            batch["std"] = torch.from_numpy(self.std.take(rows))
        return batch

    def _pick(self, count: int, seed: int | None) -> int:
        if not self.train or count == 1:
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
