"""Exact resume: a run restarted from a checkpoint continues as if it had never stopped.

Lightning restores weights, optimizers, schedulers and loop counters, but not where the data was
within the epoch, nor the random number generators. This callback adds both to each checkpoint:
  - how many batches of the current epoch were done, so the training sampler (ResumableShuffleSampler,
    or BucketBatchSampler with aspect-ratio buckets) skips them (each of several training loaders,
    as prior preservation has, as far as its own length cycles);
  - the RNG states (torch, CUDA, numpy, python) of every process as of the checkpoint, each process's
    own restored before its next step (they differ: each process draws its own noise).
Every training batch starts from the RNG states that the previous one ended with, so nothing that
runs between batches (validation and its sample images, its data loader drawing a base seed, logging)
changes what training draws next: a run validated at step N and one resumed from step N agree.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ldm.core.distributed import gather
from ldm.data.sampler import resumable_sampler


def rng_states() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's state holds an array; kept as a tensor so the checkpoint loads with weights_only
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    state = states["python"]
    random.setstate((state[0], tuple(state[1]), state[2]))


class ExactResume(Callback):
    def __init__(self):
        self.epoch = 0
        self.batches_done = 0  # in self.epoch
        self.restored: dict | None = None
        self.between_batches: dict | None = None  # RNG states as the last training batch left them
        self.trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.trainer = trainer

    def on_train_start(self, trainer, pl_module):
        # Runs after the checkpoint is loaded and before the epoch's data iterator is created.
        # (Lightning does not call on_train_epoch_start when it resumes mid-epoch.)
        if self.restored is None or self.restored["epoch"] != trainer.current_epoch:
            return
        self.epoch, self.batches_done = self.restored["epoch"], self.restored["batches_done"]
        loaders = trainer.train_dataloader
        if not isinstance(loaders, dict):
            loaders = {"train": loaders}
        for loader in loaders.values():
            sampler = resumable_sampler(loader)
            if sampler is not None:
                # Several loaders (prior preservation's) are walked in Lightning's "max_size_cycle":
                # a shorter one starts over, in the same order, each time it runs out.
                sampler.skip_batches(self.batches_done % len(loader) if len(loaders) > 1 else self.batches_done)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.restored is not None:
            set_rng_states(self.restored["rng"][trainer.global_rank])  # each process its own states
            self.restored = None
        elif self.between_batches is not None:
            set_rng_states(self.between_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch != self.epoch:
            self.epoch, self.batches_done = trainer.current_epoch, 0
        self.batches_done += 1
        self.between_batches = rng_states()

    def state_dict(self) -> dict:
        # Lightning builds a checkpoint on every process (and rank 0 writes it), so gathering here
        # is a collective call that every process makes.
        states = self.between_batches or rng_states()
        return {"epoch": self.epoch, "batches_done": self.batches_done, "rng": gather(states, self.trainer)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict
