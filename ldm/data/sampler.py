"""A shuffling sampler that a resumed run can pick up mid-epoch.

torch's RandomSampler draws its order from the global RNG and cannot skip ahead, so a run resumed
from a mid-epoch checkpoint would see different batches than an uninterrupted one. This sampler's
order depends only on (seed, epoch); it shards across processes itself (so Lightning need not wrap
it) and can start an epoch after the samples a checkpoint had already consumed.

It yields (index, sample_seed) pairs: the dataset draws each sample's random crop, flip and caption
from sample_seed, so augmentation is reproducible too, in any worker, independent of the global RNG.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class ResumableShuffleSampler(Sampler):
    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.skip = 0  # samples of this process to skip at the start of the next epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def skip_next(self, samples: int) -> None:
        """The next pass starts this many samples into its epoch (once)."""
        self.skip = samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: len(self) * self.world_size - self.size]  # pad so every rank gets len(self)
        mine = order[self.rank :: self.world_size]
        seeds = torch.randint(0, 2**62, (len(mine),), generator=generator).tolist()
        start, self.skip = self.skip, 0
        yield from zip(mine[start:], seeds[start:])
