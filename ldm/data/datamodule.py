"""The Lightning datamodule that every stage trains on: batches of images and captions.

Each batch is a dict with `pixel_values` (B, 3, H, W) in [-1, 1] and `caption` (a list of B
strings), and with `data.mask` set `mask` (B, 1, H, W) in [0, 1], cropped and flipped with the images
(ldm/data/masks.py). Map-style training data is shuffled and sharded across processes by
ResumableShuffleSampler, validation data by torch's DistributedSampler; streamed data is sharded
with `datasets.distributed.split_dataset_by_node` (by shard files when their number divides among
the processes, else every process reads all and keeps its n-th rows), and each process holds out
its first STREAM_VAL_BATCHES batches for validation. With aspect-ratio buckets (`data.buckets`),
H and W change from batch to batch and BucketBatchSampler does both jobs, one bucket per batch.

A streamed run resumes where it was: every training batch carries its stream position (the
`datasets.IterableDataset.state_dict()` after its last row, per DataLoader worker, and the row
count), which the datamodule takes off the batch as it goes to training; its `state_dict`
gathers every process's last position into the checkpoint, and the resumed run's streams start
there. Each streamed sample's crop, flip and caption are drawn from a seed made of (data.seed,
epoch, process, worker, row), so they do not depend on where the run was resumed either. Exact
with data.shuffle_buffer: 0 and at most one DataLoader worker; otherwise the resumed run warns
how it differs: `datasets` refills the shuffle buffer instead of restoring it (the rows that were
in it are not seen that epoch), and several workers' batches interleave differently.
"""

from __future__ import annotations

import collections
import random
import warnings

import datasets
import lightning as L
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from ldm.core.distributed import gather
from ldm.core.errors import LdmError
from ldm.data.buckets import Size, bucket_sizes, row_buckets
from ldm.data.captions import NO_CAPTION, clean_captions, pick_caption, vary_tags
from ldm.data.config import DataConfig
from ldm.data.decode import UndecodableImage, decode_image, describe
from ldm.data.masks import MASK, decode_with_mask, warn_unmasked
from ldm.data.sampler import BucketBatchSampler, ResumableShuffleSampler
from ldm.data.sources import load_source
from ldm.data.sources.scan import MODE, drop_unusable
from ldm.data.transforms import preprocess_with_mask

STREAM_VAL_BATCHES = 2  # streamed data has no length: each process validates on its first few batches
STREAM_POSITION = "stream_position"  # the key of a streamed training batch's position


def decode_row(row: dict, cfg: DataConfig, size: Size) -> Image.Image:
    """A row's image as training sees it before cropping (raises UndecodableImage)."""
    return decode_image(row[cfg.image_column], cfg.background, cfg.max_pixels, cover=size)


def make_sample(row: dict, cfg: DataConfig, train: bool, seed: int | None = None,
                size: Size | None = None) -> dict:
    """A row as a training sample, its image resized and cropped to `size` (a bucket's; default
    data.resolution's square)."""
    # Training samples get their seed from the sampler; otherwise draw one from torch's
    # generator (seeded by Lightning per worker), so runs stay reproducible either way.
    rng = random.Random(int(torch.randint(0, 2**62, ()).item()) if seed is None else seed)
    size = size or (cfg.resolution, cfg.resolution)
    image, mask = decode_with_mask(row, cfg, size)  # mask None with data.mask: none
    pixels, mask = preprocess_with_mask(image, mask, size, cfg.center_crop or not train,
                                        cfg.random_flip and train, rng)
    caption = pick_caption(row[cfg.caption_column], rng, train)
    tags = cfg.caption_tags
    if train and tags is not None:  # after the crop, flip and pick: their draws stay as without tags
        caption = vary_tags(caption, rng, tags.keep, tags.separator, tags.shuffle, tags.dropout)
    sample = {"pixel_values": pixels, "caption": caption}
    if mask is not None:
        sample[MASK] = mask
    return sample


def collate(samples: list[dict]) -> dict:
    batch = {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "caption": [s["caption"] for s in samples],
    }
    if MASK in samples[0]:
        batch[MASK] = torch.stack([s[MASK] for s in samples])
    if STREAM_POSITION in samples[-1]:  # the stream after the batch's last row
        batch[STREAM_POSITION] = samples[-1][STREAM_POSITION]
    return batch


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Map-style: a scanned `datasets.Dataset` (ldm.data.sources.scan) of usable rows, each row's
    size its bucket's (`sizes[bucket_of[index]]`; one square bucket without data.buckets)."""

    def __init__(self, ds: datasets.Dataset, cfg: DataConfig, train: bool):
        self.ds, self.cfg, self.train = ds, cfg, train
        self.sizes, self.bucket_of = row_buckets(ds, cfg)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        size = self.sizes[self.bucket_of[index]]
        return make_sample(self.ds[index], self.cfg, self.train, seed, size)


class StreamingImageCaptionDataset(torch.utils.data.IterableDataset):
    """Streamed: images are decoded as they arrive; unreadable ones are skipped and counted.

    Each pass over the stream is an epoch (Lightning starts one pass per epoch, in the DataLoader's
    persistent workers or in this process). Training samples carry their stream position
    (STREAM_POSITION) for resuming; `resume_from` makes the next pass start at one.
    """

    def __init__(self, ds: datasets.IterableDataset, cfg: DataConfig, train: bool, rank: int = 0):
        self.ds, self.cfg, self.train, self.rank = ds, cfg, train, rank
        self.epoch = 0  # of the next pass
        self.resume: dict | None = None  # worker -> {"stream": state, "rows": count} for the next pass
        self.skipped = collections.Counter()  # reason -> images skipped so far

    def resume_from(self, position: dict) -> None:
        """Start the next pass at `position`, a training batch's STREAM_POSITION, saying how the
        resumed run will differ from an uninterrupted one where it will."""
        self.epoch, self.resume = position["epoch"], position["workers"]
        if self.cfg.shuffle_buffer > 0:
            warnings.warn(f"resuming a stream shuffled in a buffer (data.shuffle_buffer={self.cfg.shuffle_buffer}): "
                          "the buffer starts empty, so the rows it held at the checkpoint are not seen this "
                          "epoch and the order differs from an uninterrupted run (data.shuffle_buffer: 0 "
                          "resumes exactly)", stacklevel=2)
        if self.cfg.num_workers > 1:
            warnings.warn(f"resuming a stream read by {self.cfg.num_workers} DataLoader workers: each continues "
                          "where it was, but their batches interleave differently from an uninterrupted run "
                          "(data.num_workers: 0 or 1 resumes exactly)", stacklevel=2)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0  # `datasets` gives each worker its own shard files
        epoch, self.epoch = self.epoch, self.epoch + 1
        resumed, self.resume = (self.resume or {}).get(worker), None
        self.ds.set_epoch(epoch)
        rows = 0
        if resumed is not None:
            self.ds.load_state_dict(resumed["stream"])
            rows = resumed["rows"]
        for row in self.ds:
            rows += 1
            if self.cfg.empty_captions == "skip" and not clean_captions(row[self.cfg.caption_column]):
                self.skip(row, NO_CAPTION)
                continue
            seed = stream_seed(self.cfg.seed, epoch, self.rank, worker, rows) if self.train else None
            try:
                sample = make_sample(row, self.cfg, self.train, seed)
            except UndecodableImage as err:  # a broken image in a stream must not end the epoch
                self.skip(row, err.reason)
                continue
            if self.train:
                sample[STREAM_POSITION] = {"epoch": epoch, "worker": worker,
                                           "stream": self.ds.state_dict(), "rows": rows}
            yield sample

    def skip(self, row: dict, reason: str) -> None:
        self.skipped[reason] += 1
        if sum(self.skipped.values()) == 1:
            warnings.warn(f"skipping image {describe(row[self.cfg.image_column])} ({reason}); further "
                          "ones are skipped silently and counted in `skipped`", stacklevel=3)


def stream_seed(seed: int, epoch: int, rank: int, worker: int, row: int) -> int:
    """The sample seed of a streamed row: the same wherever the run was started or resumed."""
    return int(np.random.SeedSequence([seed, epoch, rank, worker, row]).generate_state(1, np.uint64)[0] >> 2)


class StreamPosition:
    """The position of a process's training stream: the last trained batch's, per DataLoader worker."""

    def __init__(self):
        self.epoch, self.workers = 0, {}

    def advance(self, batch_position: dict) -> None:
        if batch_position["epoch"] != self.epoch:
            self.epoch, self.workers = batch_position["epoch"], {}
        self.workers[batch_position["worker"]] = {key: batch_position[key] for key in ("stream", "rows")}

    def state(self) -> dict:
        return {"epoch": self.epoch, "workers": dict(self.workers)}


def load_splits(cfg: DataConfig, rank: int = 0, world_size: int = 1):
    """(train, validation) torch datasets for `cfg`; validation may be None when val_fraction is 0."""
    ds = load_source(cfg)
    if cfg.streaming:
        # Split first: the skip and the take then apply to each process's own stream (each DataLoader
        # worker's, under workers), so its validation rows are the first of it and none of them trains.
        mine = split_dataset_by_node(ds, rank=rank, world_size=world_size)
        val_count = STREAM_VAL_BATCHES * cfg.batch_size if cfg.val_fraction > 0 else 0
        train = mine.skip(val_count)
        if cfg.shuffle_buffer > 0:
            train = train.shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer)
        val = StreamingImageCaptionDataset(mine.take(val_count), cfg, False, rank) if val_count else None
        return StreamingImageCaptionDataset(train, cfg, True, rank), val
    usable = drop_unusable(ds, cfg)
    warn_unmasked(usable, cfg, usable[MODE] if cfg.mask == "alpha" else None)
    train, val = split_validation(usable, cfg)
    return ImageCaptionDataset(train, cfg, True), (ImageCaptionDataset(val, cfg, False) if val else None)


def validation_rows(count: int, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """(training rows, validation rows or None) of `count` rows: data.val_fraction of them held
    out, chosen by data.seed."""
    n_val = int(round(count * cfg.val_fraction))
    if cfg.val_fraction > 0 and count >= 2:
        n_val = max(1, n_val)
    if n_val >= count:
        raise LdmError(f"dataset {cfg.source} has only {count} readable image(s): too few to "
                       f"hold out data.val_fraction={cfg.val_fraction} for validation")
    if n_val == 0:
        return np.arange(count), None
    order = np.random.default_rng(cfg.seed).permutation(count)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def split_validation(ds: datasets.Dataset, cfg: DataConfig):
    """(train, validation or None) parts of `ds`, as `validation_rows` divides it."""
    train, val = validation_rows(len(ds), cfg)
    if val is None:
        return ds, None
    return ds.select(train), ds.select(val)


def make_loader(ds, cfg: DataConfig, collate_fn, trainer, train: bool) -> DataLoader:
    """The DataLoader of either datamodule: training data shuffled and sharded by
    ResumableShuffleSampler (map-style only), validation data sharded when there are processes;
    with data.buckets, both batched by BucketBatchSampler (`ds.bucket_of`: each sample's bucket)."""
    rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
    if cfg.buckets is not None:
        batches = BucketBatchSampler(ds.bucket_of, cfg.batch_size, cfg.seed, rank, world, shuffle=train)
        return DataLoader(ds, batch_sampler=batches, num_workers=cfg.num_workers,
                          persistent_workers=cfg.num_workers > 0, collate_fn=collate_fn)
    sampler = None  # streamed data shards itself (split_dataset_by_node)
    if not isinstance(ds, torch.utils.data.IterableDataset):
        if train:
            sampler = ResumableShuffleSampler(len(ds), cfg.seed, rank, world, cfg.batch_size)
        elif world > 1:
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        collate_fn=collate_fn,
        drop_last=isinstance(sampler, ResumableShuffleSampler) and len(sampler) >= 2 * cfg.batch_size,
    )


def require_divisible(resolution: int, factor: int, what: str) -> None:
    """Fail early when the model cannot take images of this size."""
    if resolution % factor:
        raise LdmError(f"data.resolution={resolution} is not divisible by {what}={factor}; "
                       f"use a multiple of {factor}")


def require_divisible_sizes(cfg: DataConfig, factor: int, what: str) -> None:
    """Fail early when the model cannot take data.resolution or one of the bucket sizes."""
    require_divisible(cfg.resolution, factor, what)
    if cfg.buckets is not None:
        for width, height in bucket_sizes(cfg):
            if width % factor or height % factor:
                raise LdmError(f"data.buckets: size {width}x{height} is not divisible by {what}={factor}; "
                               f"make every side a multiple of {factor} (data.buckets.step)")


class ImageCaptionDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        self.train_set = self.val_set = None
        self.stream = StreamPosition()  # streamed data: where this process's training stream is
        self.resume: dict | None = None  # streamed data: the position a checkpoint restored

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        self.train_set, self.val_set = load_splits(self.cfg, rank, world)

    def train_dataloader(self) -> DataLoader:
        if self.resume is not None:  # restored by load_state_dict, which runs after setup
            self.train_set.resume_from(self.resume)
            self.resume = None
        return make_loader(self.train_set, self.cfg, collate, self.trainer, train=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return make_loader(self.val_set, self.cfg, collate, self.trainer, train=False)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """A streamed training batch goes to training: the stream is now past it."""
        position = batch.pop(STREAM_POSITION, None)
        if position is not None:
            self.stream.advance(position)
        return batch

    def state_dict(self) -> dict:
        # Every process's stream position (a collective call, as Lightning builds a checkpoint on
        # every process); map-style data is resumed by its sampler (ldm/stages/resume.py).
        return {"stream": gather(self.stream.state(), self.trainer)} if self.cfg.streaming else {}

    def load_state_dict(self, state: dict) -> None:
        if "stream" in state:
            self.resume = state["stream"][self.trainer.global_rank if self.trainer else 0]
