"""Exact resume: a run restarted from a checkpoint continues as if it had never stopped.

Lightning restores weights, optimizers, schedulers and loop counters, but not where the data was
within the epoch, nor the random number generators. This callback adds both to each checkpoint:
  - how many batches of the current epoch were done, so ResumableShuffleSampler skips them;
  - the RNG states (torch, CUDA, numpy, python) as of the checkpoint, restored before the next step.
Validation leaves the RNG as the last training step left it (restored at its end), so sampling
validation images never changes what training draws next: a run validated at step N and resumed
from step N agree. The state is taken at the end of the training batch, not at the start of
validation: Lightning draws the validation loader's base seed from the global RNG before any
validation hook runs.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from ldm.data.sampler import ResumableShuffleSampler


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


def _sampler(trainer):
    loader = trainer.train_dataloader
    return getattr(loader, "sampler", None)


class ExactResume(Callback):
    def __init__(self):
        self.epoch = 0
        self.batches_done = 0  # in self.epoch
        self.restored: dict | None = None
        self.after_training_batch: dict | None = None  # RNG states as the last training batch left them

    def on_train_start(self, trainer, pl_module):
        # Runs after the checkpoint is loaded and before the epoch's data iterator is created.
        # (Lightning does not call on_train_epoch_start when it resumes mid-epoch.)
        if self.restored is None or self.restored["epoch"] != trainer.current_epoch:
            return
        self.epoch, self.batches_done = self.restored["epoch"], self.restored["batches_done"]
        sampler = _sampler(trainer)
        if isinstance(sampler, ResumableShuffleSampler):
            sampler.skip_next(self.batches_done * trainer.train_dataloader.batch_size)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.restored is not None:
            set_rng_states(self.restored["rng"])
            self.restored = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch != self.epoch:
            self.epoch, self.batches_done = trainer.current_epoch, 0
        self.batches_done += 1
        self.after_training_batch = rng_states()

    def on_validation_end(self, trainer, pl_module):
        # `trainer.training` is False while validating inside fit; the function tells fit apart.
        if trainer.state.fn == TrainerFn.FITTING and self.after_training_batch is not None:
            set_rng_states(self.after_training_batch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored = state_dict
