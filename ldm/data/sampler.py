"""Shuffling samplers that a resumed run can pick up mid-epoch: one for samples, one for bucket batches.

torch's RandomSampler draws its order from the global RNG and cannot skip ahead, so a run resumed
from a mid-epoch checkpoint would see different batches than an uninterrupted one. These samplers'
order depends only on (seed, epoch); they shard across processes themselves (so Lightning need not
wrap them) and can start an epoch after the batches a checkpoint had already done
(`skip_batches`, called by ldm/stages/resume.py's ExactResume).

Both yield (index, sample_seed) pairs: the dataset draws each sample's random crop, flip and
caption from sample_seed, so augmentation is reproducible too, in any worker, independent of the
global RNG.

- ResumableShuffleSampler: one order of all samples; the DataLoader cuts it into batches.
- BucketBatchSampler: whole batches, each of one aspect-ratio bucket (ldm/data/buckets.py), since
  images of different sizes cannot be stacked into one tensor. Each bucket's images are shuffled
  and cut into batches, then the batches of all buckets are shuffled together and dealt out to
  the processes in turn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs give distinct generator seeds


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The one source of an epoch's order and sample seeds."""
    return torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)


def sample_seeds(count: int, generator: torch.Generator) -> list[int]:
    return torch.randint(0, 2**62, (count,), generator=generator).tolist()


class ResumableShuffleSampler(Sampler):
    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.batch_size = batch_size  # of the DataLoader: how many samples a skipped batch held
        self.epoch = 0
        self.skip = 0  # samples of this process to skip at the start of the next epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def skip_batches(self, batches: int) -> None:
        """The next pass starts this many of this process's batches into its epoch (once)."""
        self.skip = batches * self.batch_size

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: len(self) * self.world_size - self.size]  # pad so every rank gets len(self)
        mine = order[self.rank :: self.world_size]
        seeds = sample_seeds(len(mine), generator)
        start, self.skip = self.skip, 0
        yield from zip(mine[start:], seeds[start:])


class BucketBatchSampler(Sampler):
    """Batches of (index, sample_seed) pairs, every batch from one bucket.

    `buckets[i]` is sample i's bucket. Each bucket's last batch may be short (dropping it would
    lose most of a small bucket). Without `shuffle` (validation) the batches come bucket by bucket
    in index order. Under several processes the batch list is padded by repeating its first
    batches until every process gets as many.
    """

    def __init__(self, buckets, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.buckets = np.asarray(buckets, dtype=np.int64)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0  # batches of this process to skip at the start of the next epoch
        counts = np.bincount(self.buckets) if len(self.buckets) else np.zeros(0, np.int64)
        self.total_batches = int(sum(math.ceil(count / batch_size) for count in counts))

    def __len__(self) -> int:
        return math.ceil(self.total_batches / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def skip_batches(self, batches: int) -> None:
        """The next pass starts this many of this process's batches into its epoch (once)."""
        self.skip = batches

    def epoch_batches(self) -> list[list[tuple[int, int]]]:
        """All processes' batches of this epoch, in order, before dealing them out."""
        generator = epoch_generator(self.seed, self.epoch)
        batches = []
        for bucket in np.unique(self.buckets):
            members = np.flatnonzero(self.buckets == bucket)
            if self.shuffle:
                members = members[torch.randperm(len(members), generator=generator).numpy()]
            batches += [members[i : i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        batches += batches[: len(self) * self.world_size - len(batches)]
        seeds = iter(sample_seeds(sum(len(batch) for batch in batches), generator))
        return [[(index, next(seeds)) for index in batch] for batch in batches]

    def __iter__(self):
        mine = self.epoch_batches()[self.rank :: self.world_size]
        start, self.skip = self.skip, 0
        yield from mine[start:]


def resumable_sampler(loader: DataLoader) -> ResumableShuffleSampler | BucketBatchSampler | None:
    """The sampler of a training DataLoader that can skip the batches a checkpoint had done."""
    for candidate in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if isinstance(candidate, (ResumableShuffleSampler, BucketBatchSampler)):
            return candidate
    return None
