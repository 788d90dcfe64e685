"""The latent cache: every image's latent distribution and every caption's embedding, computed once.

Both stage-2 encoders are frozen, so what they make of the dataset never changes during training;
computing it once turns each training step into UNet work only. The cache is a folder under
RUN/diffusion/cache/<fingerprint>/ of Arrow files (memory-mapped when read), one part per image
size, so that each part's latents have one fixed shape, each part written as shards by the
processes that build it together (ldm/data/cache_share.py decides which those are):

    parts.json     written last, once every shard is: the shard count and the parts in order,
                   {"version": 3, "shards": 2, "parts": [{"name": "32x32", "size": [32, 32], "rows": 24}]}
    32x32/         one part per image size (a bucket's; data.resolution's square without buckets):
        shard-00000-of-00002.arrow   shard i: the i-th contiguous block of the part's rows (whole
        shard-00001-of-00002.arrow   encoder batches), in the data's order; one row per image:
            mean        (C, h, w) float32   the latent's posterior mean (KL) or pre-quantization value (VQ)
            std         (C, h, w) float32   the posterior's standard deviation (KL only)
            embeddings  (n, L, D) float16   one text embedding per caption (n >= 1: every caption is kept)
            captions    n strings
        shard-00000-of-00002.json    its marker, written once the shard is whole: rows, seconds, host

Process i of n encodes shard i of every part (`build_shard`), then polls for the other shards'
markers (`wait_for_shards`) and writes parts.json (`finish_cache`). Contiguous blocks rather than
every n-th row: the shards read back in index order are the part's rows in the data's order, with
no index to keep, each process reads its source rows in sequence, and blocks of whole batches
encode every image in the same batch as one process would (`shard_block`: the same bits). A shard is written under a
temporary name and renamed whole, then marked; a restarted build keeps every marked shard and
redoes the rest. Waiting on markers instead of a collective means that no process is under a
collective timeout while the others encode: each waits as long as the slowest share takes.

The cache's rows are numbered part after part, in the data's order within each part: the same
whatever the number of processes that built it (a cache built by 2 processes equals one built by 1).

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
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.arrow_writer import ArrowWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.atomic import atomic_file, atomic_write_bytes
from ldm.core.config import to_dict
from ldm.core.errors import LdmError
from ldm.data.buckets import Size, row_buckets
from ldm.data.captions import captions_of
from ldm.data.config import DataConfig
from ldm.data.datamodule import decode_row
from ldm.data.transforms import preprocess

CACHE_VERSION = 3  # bump when the layout of a cache changes, so old caches are not misread
TEXT_BATCH = 256  # captions per text-encoder call while building
PARTS = "parts.json"
SHARD = "shard-{index:05d}-of-{count:05d}"
SHARD_DATA, SHARD_MARKER = ".arrow", ".json"
# How often a process that has finished its shards looks for the others' markers: one small file
# read per poll and process, nothing next to the minutes a share takes.
POLL_SECONDS = 0.5
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


class DecodedRows(torch.utils.data.Dataset):
    """Rows of a part as the encoders take them: (pixels at `size`, centre-cropped and unflipped, as
    training would see them; every caption). Decoded in the DataLoader's workers (data.num_workers),
    since for a GPU decoding the images can take longer than encoding them (docs/benchmarks.md)."""

    def __init__(self, ds: datasets.Dataset, cfg: DataConfig, size: Size):
        self.ds, self.cfg, self.size = ds, cfg, size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        row = self.ds[index]
        rng = random.Random(0)  # unused: caching always centre-crops and never flips
        pixels = preprocess(decode_row(row, self.cfg, self.size), self.size, True, False, rng)
        return pixels, captions_of(row[self.cfg.caption_column])


def decoded_batches(ds: datasets.Dataset, cfg: DataConfig, size: Size) -> DataLoader:
    """`ds`'s rows in order, in batches of data.batch_size: (pixels, captions of each image)."""
    return DataLoader(DecodedRows(ds, cfg, size), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                      collate_fn=_stack_decoded)


def _stack_decoded(items: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    # a module function, not a lambda: workers started by spawn (macOS, Windows) receive it pickled
    return torch.stack([pixels for pixels, _ in items]), [captions for _, captions in items]


def _encoder(autoencoder: FrozenAutoencoder, conditioner: TextConditioner):
    """The batch function: images -> latent moments, captions -> embeddings, as cache columns."""

    def encode(batch: tuple[torch.Tensor, list[list[str]]]) -> dict:
        pixels, captions = batch
        mean, std = autoencoder.moments(pixels)
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


def shard_name(index: int, count: int) -> str:
    return SHARD.format(index=index, count=count)


def plan_parts(ds: datasets.Dataset, cfg: DataConfig) -> list[tuple[Size, np.ndarray]]:
    """(size, rows of `ds`) of each part: the rows of each bucket that holds any, in order."""
    sizes, bucket_of = row_buckets(ds, cfg)
    return [(sizes[bucket], np.flatnonzero(bucket_of == bucket)) for bucket in np.unique(bucket_of)]


def shard_block(rows: int, batch_size: int, index: int, count: int) -> slice:
    """Which of a part's `rows` shard `index` of `count` holds: a contiguous block of whole encoder
    batches, so that every batch any process encodes is one that a one-process build encodes too,
    and the cache comes out the same to the bit (CPU kernels round differently for different batch
    sizes: a batch of 1 and one of 5 give latents that differ in the last bits). The first shards
    take one batch more when the batches do not divide evenly."""
    batches = np.array_split(np.arange(-(-rows // batch_size)), count)[index]
    if len(batches) == 0:
        return slice(0, 0)
    return slice(int(batches[0]) * batch_size, min((int(batches[-1]) + 1) * batch_size, rows))


@torch.no_grad()
def write_shard(batches: Iterable, encode: Callable[..., dict], features: datasets.Features, target: Path) -> int:
    """Encode `batches` into the Arrow file `target`, whole or not at all; returns the number of
    rows written."""
    rows = 0
    with atomic_file(target) as tmp:
        with ArrowWriter(features=features, path=str(tmp)) as writer:
            for batch in batches:
                encoded = encode(batch)
                writer.write_batch(encoded)
                rows += len(encoded["mean"])
            writer.finalize()
    return rows


@dataclass
class ShardReport:
    """What one process did towards a cache: rows encoded, in how long, and shards found done."""

    rows: int = 0
    seconds: float = 0.0
    reused: int = 0  # shards finished by an earlier, interrupted build


def build_shard(ds: datasets.Dataset, plan: list[tuple[Size, np.ndarray]], cfg: DataConfig,
                autoencoder: FrozenAutoencoder, conditioner: TextConditioner, folder: Path, index: int,
                count: int, progress: bool = True) -> ShardReport:
    """Encode shard `index` of `count` of every part of `ds` (scanned: ldm.data.sources.scan; its
    parts as `plan_parts` plans them) into `folder`, and mark each shard done; shards already
    marked are kept."""
    report = ShardReport()
    for size, rows in plan:
        target = folder / part_name(size) / shard_name(index, count)
        if marker(target).is_file():
            report.reused += 1
            continue
        remove_unfinished(target.with_suffix(SHARD_DATA))
        mine = ds.select(rows[shard_block(len(rows), cfg.batch_size, index, count)])
        started = time.perf_counter()
        batches = tqdm(decoded_batches(mine, cfg, size), desc=f"caching latents and text embeddings "
                       f"({part_name(size)})", disable=not progress)
        written = write_shard(batches, _encoder(autoencoder, conditioner),
                              cache_features(autoencoder, conditioner, size), target.with_suffix(SHARD_DATA))
        seconds = time.perf_counter() - started
        atomic_write_bytes(marker(target), json.dumps(
            {"rows": written, "seconds": round(seconds, 3), "host": socket.gethostname()}).encode())
        report.rows, report.seconds = report.rows + written, report.seconds + seconds
    return report


def remove_unfinished(data: Path) -> None:
    """Remove what a killed build of this shard left: its temporary files (ldm.core.atomic names
    them), and a shard renamed into place just before the kill but never marked. Only this process
    writes this shard, so none of them is another's work in progress."""
    for path in [data, *data.parent.glob(f".{data.name}.tmp-*")]:
        path.unlink(missing_ok=True)


def marker(shard: Path) -> Path:
    return shard.with_suffix(SHARD_MARKER)


def shard_markers(folder: Path, sizes: list[Size], count: int) -> list[Path]:
    """The marker of every shard of every part: the cache is complete when all exist."""
    return [marker(folder / part_name(size) / shard_name(index, count)) for size in sizes for index in range(count)]


def wait_for_shards(folder: Path, sizes: list[Size], count: int, poll: float = POLL_SECONDS) -> float:
    """Wait, polling the file system, until every shard of the cache is marked done; returns the
    seconds waited. No timeout: the wait lasts as long as the slowest process's share, and a
    process that dies ends the run (the launcher stops the others)."""
    started = time.perf_counter()
    for path in shard_markers(folder, sizes, count):
        while not path.is_file():
            time.sleep(poll)
    return time.perf_counter() - started


def finish_cache(folder: Path, plan: list[tuple[Size, np.ndarray]], count: int) -> None:
    """Write parts.json, which makes a cache whose shards are all marked readable (each process
    that built it writes the same file; the rename makes that harmless)."""
    parts = [{"name": part_name(size), "size": list(size), "rows": len(rows)} for size, rows in plan]
    atomic_write_bytes(folder / PARTS, json.dumps({"version": CACHE_VERSION, "shards": count, "parts": parts},
                                                  indent=1).encode())


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
        for name in ("mean", "std", "embeddings", "caption_count"):
            same = (x[name] is None and y[name] is None) or (
                x[name] is not None and y[name] is not None and x[name].shape == y[name].shape
                and np.array_equal(x[name], y[name]))
            if not same:
                differences.append(f"part {index}: {name}")
    return differences


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
