"""Building the cache: each process encodes its shard of every part (`build_shard`), waits until
every shard is marked done (`wait_for_shards`), then writes parts.json (`finish_cache`)."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets.arrow_writer import ArrowWriter
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ldm.components import text_time
from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.dual_text_encoder import TextTimeConditioner
from ldm.components.prompt_tokens import chunk_counts
from ldm.components.text_encoder import TextConditioner
from ldm.core.atomic import atomic_file, atomic_write_bytes
from ldm.data.buckets import Size, row_buckets
from ldm.data.captions import captions_of
from ldm.data.config import DataConfig
from ldm.data.latent_cache.layout import (
    CACHE_VERSION,
    PARTS,
    POOLED,
    SHARD_DATA,
    TEXT_LENGTH,
    TIME_IDS,
    marker,
    part_name,
    shard_markers,
    shard_name,
)
from ldm.data.masks import MASK, decode_with_mask, to_latent_grid
from ldm.data.sources.scan import HEIGHT, WIDTH
from ldm.data.transforms import crop_box, preprocess_with_mask

TEXT_BATCH = 256  # captions per text-encoder call while building
# How often a process that has finished its shards looks for the others' markers: one small file
# read per poll and process, nothing next to the minutes a share takes.
POLL_SECONDS = 0.5


def cache_features(autoencoder: FrozenAutoencoder, conditioner: TextConditioner, size: Size,
                   masked: bool = False, sized: bool = False) -> datasets.Features:
    """The columns of a part whose images are `size` (width, height); `masked`: with loss masks;
    `sized`: with each image's SDXL time ids (original size and crop, `ldm.components.text_time`)."""
    latent = (autoencoder.latent_channels, size[1] // autoencoder.factor, size[0] // autoencoder.factor)
    tail = conditioner.tail_rows
    text = (None, conditioner.max_tokens - tail, conditioner.hidden_size)
    features = {"mean": datasets.Array3D(latent, "float32")}
    if autoencoder.is_kl:
        features["std"] = datasets.Array3D(latent, "float32")
    if masked:  # at the latent grid, as the loss weighs it
        features[MASK] = datasets.Array3D((1, *latent[1:]), "float32")
    features["embeddings"] = datasets.Array3D(text, "float16")
    features["captions"] = datasets.Sequence(datasets.Value("string"))
    if conditioner.max_chunks > 1:  # only then: a one-window cache keeps the layout it always had
        features[TEXT_LENGTH] = datasets.Sequence(datasets.Value("int32"))
    if tail:
        features[POOLED] = datasets.Array3D((None, tail, conditioner.hidden_size), "float16")
    if sized:
        features[TIME_IDS] = datasets.Sequence(datasets.Value("float32"), length=text_time.TIME_IDS)
    return datasets.Features(features)


class DecodedRows(torch.utils.data.Dataset):
    """Rows of a part as the encoders take them: (pixels at `size`, centre-cropped and unflipped, as
    training would see them; every caption; the loss mask cropped alike, or None). Decoded in the
    DataLoader's workers (data.num_workers), since for a GPU decoding the images can take longer
    than encoding them (docs/benchmarks.md)."""

    def __init__(self, ds: datasets.Dataset, cfg: DataConfig, size: Size):
        self.ds, self.cfg, self.size = ds, cfg, size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str], torch.Tensor | None, torch.Tensor]:
        row = self.ds[index]
        rng = random.Random(0)  # unused: caching always centre-crops and never flips
        image, mask = decode_with_mask(row, self.cfg, self.size)
        times = crop_time_ids(row, image.size, self.size)
        pixels, mask = preprocess_with_mask(image, mask, self.size, True, False, rng)
        return pixels, captions_of(row[self.cfg.caption_column]), mask, times


def crop_time_ids(row: dict, decoded: Size, size: Size) -> torch.Tensor:
    """SDXL's time ids of a row cropped (centred) to `size`, as diffusers' SDXL training script
    makes them: the image's original (height, width), the crop's (top, left) in the image resized
    to cover `size`, and `size` as (height, width). The original size is the scanned one (a large
    JPEG may be decoded at a reduced size); the crop is the one `preprocess_with_mask` takes."""
    original = (row.get(HEIGHT) or decoded[1], row.get(WIDTH) or decoded[0])
    _, (left, top, _, _) = crop_box(decoded, size, True, random.Random(0))
    return text_time.time_ids(original, (top, left), (size[1], size[0]))


def decoded_batches(ds: datasets.Dataset, cfg: DataConfig, size: Size) -> DataLoader:
    """`ds`'s rows in order, in batches of data.batch_size: (pixels, captions of each image)."""
    return DataLoader(DecodedRows(ds, cfg, size), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                      collate_fn=_stack_decoded)


def _stack_decoded(items: list[tuple]) -> tuple[torch.Tensor, list[list[str]], torch.Tensor | None, torch.Tensor]:
    # a module function, not a lambda: workers started by spawn (macOS, Windows) receive it pickled
    masks = None if items[0][2] is None else torch.stack([item[2] for item in items])
    return (torch.stack([item[0] for item in items]), [item[1] for item in items], masks,
            torch.stack([item[3] for item in items]))


def _encoder(autoencoder: FrozenAutoencoder, conditioner: TextConditioner, sized: bool = False):
    """The batch function: images -> latent moments, captions -> embeddings, as cache columns
    (`sized`: with each image's time ids)."""

    def encode(batch: tuple[torch.Tensor, list[list[str]], torch.Tensor | None, torch.Tensor]) -> dict:
        pixels, captions, masks, times = batch
        mean, std = autoencoder.moments(pixels)
        flat = [text for texts in captions for text in texts]
        # Long captions: each stored padded to the most windows allowed (the column's width) with
        # the empty prompt's window, and its own length beside it, so that a training batch is
        # cut to its longest caption (`ldm.data.latent_cache.read`), as encoding it would pad it.
        embedded = torch.cat([conditioner.padded(conditioner.encode(flat[i:i + TEXT_BATCH]), conditioner.max_tokens)
                              .cpu() for i in range(0, len(flat), TEXT_BATCH)]).half().numpy()
        bounds = np.cumsum([0] + [len(texts) for texts in captions])
        tail = conditioner.tail_rows  # an SDXL-style model's pooled rows: a column of their own
        out = {"mean": mean.float().cpu().numpy(),
               "embeddings": [embedded[a:b, :embedded.shape[1] - tail] for a, b in zip(bounds[:-1], bounds[1:])],
               "captions": captions}
        if tail:
            out[POOLED] = [embedded[a:b, -tail:] for a, b in zip(bounds[:-1], bounds[1:])]
        if conditioner.max_chunks > 1:
            lengths = np.array(chunk_counts(conditioner.tokenizer, flat, conditioner.max_chunks)) \
                * conditioner.window_tokens
            out[TEXT_LENGTH] = [lengths[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
        if std is not None:
            out["std"] = std.float().cpu().numpy()
        if masks is not None:
            out[MASK] = to_latent_grid(masks, mean.shape[-2:]).float().numpy()
        if sized:
            out[TIME_IDS] = times.numpy()
        return out

    return encode


def sized_cache(conditioner: TextConditioner) -> bool:
    """Whether a cache stores time ids: for an SDXL-style model's text encoders only, so that an SD
    model's cache is what it was."""
    return isinstance(conditioner, TextTimeConditioner)


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
        sized = sized_cache(conditioner)
        written = write_shard(batches, _encoder(autoencoder, conditioner, sized),
                              cache_features(autoencoder, conditioner, size, cfg.mask != "none", sized),
                              target.with_suffix(SHARD_DATA))
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
