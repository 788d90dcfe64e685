"""Batches that mix the user's images with class images (DreamBooth's prior preservation).

    PriorPreservationDataModule(instance=<the run's datamodule>, prior=<the same kind, on the class images>)

Each training batch is a dict {"instance": batch, "class": batch}: `data.batch_size` of the user's
images and `data.prior_preservation.batch_size` class images, each batch as its own datamodule makes
it (the latent cache's or images and captions). The two DataLoaders are handed to Lightning as a
dict, which it walks with its `CombinedLoader` in "max_size_cycle" mode: an epoch is as long as the
longer of the two, and the shorter one starts over when it runs out (a few subject images against a
hundred class images, as diffusers' DreamBooth dataset cycles the shorter set). Each keeps its own
ResumableShuffleSampler, so a resumed run picks both up where they were (ldm/stages/resume.py).
Validation is on the user's images only.
"""

from __future__ import annotations

import lightning as L

INSTANCE = "instance"  # the keys of a mixed training batch
CLASS = "class"


class PriorPreservationDataModule(L.LightningDataModule):
    def __init__(self, instance: L.LightningDataModule, prior: L.LightningDataModule):
        super().__init__()
        self.instance, self.prior = instance, prior

    def setup(self, stage: str | None = None) -> None:
        for part in (self.instance, self.prior):
            part.trainer = self.trainer  # the parts shard by the trainer's processes
            part.setup(stage)

    def train_dataloader(self) -> dict:
        return {INSTANCE: self.instance.train_dataloader(), CLASS: self.prior.train_dataloader()}

    def val_dataloader(self):
        return self.instance.val_dataloader()

    def state_dict(self) -> dict:
        return self.instance.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.instance.load_state_dict(state)
