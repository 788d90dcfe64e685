"""The datamodule for training on the latent cache (see `ldm.data.latent_cache`).

`prepare_data` builds the cache if it does not exist yet. Lightning calls it on one process per
node, before any process calls `setup`, with the others waiting at a barrier, so the encoders run
once and every process then reads the same finished folder (the folder appears whole or not at
all, through `ldm.core.atomic.atomic_folder`). `setup` opens the cache and holds out
`data.val_fraction` of it for validation, split by `data.seed`. With aspect-ratio buckets the cache
has one part per bucket and every batch comes from one (BucketBatchSampler).

Batches are dicts of `mean` (and `std` for KL) latent moments and `embeddings`, one caption's
embedding per image; the diffusion module draws the latent and applies caption dropout.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import lightning as L
from torch.utils.data import DataLoader

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import make_loader, validation_rows
from ldm.data.latent_cache import (
    LatentCacheDataset,
    already_batched,
    build_cache,
    cached,
    fingerprint,
    load_cache,
)
from ldm.data.sources import drop_unusable, load_source


def check_cacheable(cfg: DataConfig) -> None:
    """What a cache cannot do, said before any work: fixed latents allow no per-epoch augmentation."""
    if cfg.streaming:
        raise LdmError("data.streaming needs cache: false (a stream is encoded as it arrives)")
    if cfg.random_flip:
        raise LdmError("data.random_flip needs cache: false (cached latents are of unflipped images)")
    if not cfg.center_crop:
        raise LdmError("data.center_crop: false (random crops) needs cache: false "
                       "(cached latents are of centre crops)")


class LatentCacheDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, cache_root: str | Path, autoencoder: FrozenAutoencoder,
                 conditioner: TextConditioner):
        super().__init__()
        check_cacheable(cfg)
        self.cfg, self.cache_root = cfg, Path(cache_root)
        self.autoencoder, self.conditioner = autoencoder, conditioner
        self.folder: Path | None = None
        self.reused: bool | None = None  # after prepare_data: whether an existing cache was found
        self.train_set = self.val_set = None

    def _source(self) -> datasets.Dataset:
        return drop_unusable(load_source(self.cfg), self.cfg)

    def cache_folder(self, ds: datasets.Dataset | None = None) -> Path:
        if self.folder is None:
            ds = self._source() if ds is None else ds
            self.folder = self.cache_root / fingerprint(ds, self.cfg, self.autoencoder, self.conditioner)
        return self.folder

    def prepare_data(self) -> None:
        ds = self._source()
        folder = self.cache_folder(ds)
        self.reused = cached(folder)
        if self.reused:
            return
        device = self.trainer.strategy.root_device if self.trainer else None
        home = self.autoencoder.device
        if device is not None:  # encode on the accelerator, then hand the models back where they were
            self.autoencoder.to(device), self.conditioner.to(device)
        try:
            build_cache(ds, self.cfg, self.autoencoder, self.conditioner, folder, folder.name)
        finally:
            self.autoencoder.to(home), self.conditioner.to(home)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        parts = load_cache(self.cache_folder())
        train, val = validation_rows(sum(len(part) for part in parts), self.cfg)
        self.train_set = LatentCacheDataset(parts, train, train=True)
        self.val_set = LatentCacheDataset(parts, val, train=False) if val is not None else None

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.cfg, already_batched, self.trainer, train=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return make_loader(self.val_set, self.cfg, already_batched, self.trainer, train=False)
