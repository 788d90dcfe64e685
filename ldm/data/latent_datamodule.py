"""The datamodule for training on the latent cache (see `ldm.data.latent_cache`).

`setup` scans the source (once per machine first: `node_first`, the others then find the scan
cached) and builds the cache if it does not exist yet, on every process at once: each process encodes
its own shard of the data (ldm/data/cache_share.py says which, and which processes share a cache
folder), then polls until the others' shards are marked done, and logs what it encoded and how
long it waited. No process sits in a collective call while the others encode (Lightning's
`prepare_data` would have one process per node encode everything while the others wait at a barrier
whose timeout the encoding can outlast). A run killed while building keeps the finished shards and
the next one redoes the rest. `setup` then opens the cache and holds out `data.val_fraction` of it
for validation, split by `data.seed`. With aspect-ratio buckets the cache has one part per bucket
and every batch comes from one (BucketBatchSampler).

Batches are dicts of `mean` (and `std` for KL) latent moments and `embeddings`, one caption's
embedding per image (and `mask`, the loss masks at the latent grid, with data.mask); the diffusion
module draws the latent and applies caption dropout.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import datasets
import lightning as L
from torch.utils.data import DataLoader

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.errors import LdmError
from ldm.data.cache_share import Share, SharedSetting, cache_share, node_first
from ldm.data.config import DataConfig
from ldm.data.datamodule import make_loader, validation_rows
from ldm.data.latent_cache.build import ShardReport, build_shard, finish_cache, plan_parts, wait_for_shards
from ldm.data.latent_cache.key import fingerprint
from ldm.data.latent_cache.read import LatentCacheDataset, already_batched, cached, load_cache
from ldm.data.masks import warn_unmasked
from ldm.data.sources import load_source
from ldm.data.sources.scan import MODE, drop_unusable

SCANS = ".scanned"  # in the cache root: a marker per source and machine whose scan is done


def check_cacheable(cfg: DataConfig) -> None:
    """What a cache cannot do, said before any work: fixed latents allow no per-epoch augmentation."""
    if cfg.streaming:
        raise LdmError("data.streaming needs cache: false (a stream is encoded as it arrives)")
    if cfg.random_flip:
        raise LdmError("data.random_flip needs cache: false (cached latents are of unflipped images)")
    if not cfg.center_crop:
        raise LdmError("data.center_crop: false (random crops) needs cache: false "
                       "(cached latents are of centre crops)")
    # The cache holds one text embedding per caption as written, encoded once: a caption whose tags
    # are shuffled per sample would need the text encoder at every step, which is what cache: false
    # does (its latents then too). Refused, as kohya's sd-scripts refuses cache_text_encoder_outputs
    # with shuffle_caption, rather than silently training on the unshuffled embeddings.
    if cfg.caption_tags is not None:
        raise LdmError("data.caption_tags needs cache: false (the latent cache encodes each caption once, "
                       "as written, so its tags cannot be shuffled or dropped per sample)")


class LatentCacheDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, cache_root: str | Path, autoencoder: FrozenAutoencoder,
                 conditioner: TextConditioner, shared_filesystem: SharedSetting = "auto"):
        super().__init__()
        check_cacheable(cfg)
        self.cfg, self.cache_root, self.shared_filesystem = cfg, Path(cache_root), shared_filesystem
        self.autoencoder, self.conditioner = autoencoder, conditioner
        self.folder: Path | None = None
        self.reused: bool | None = None  # after setup: whether the cache was complete already
        self.built: ShardReport | None = None  # after setup, when this process built a share
        self.waited: float | None = None  # seconds this process waited for the others' shards
        self.train_set = self.val_set = None

    def _source(self) -> datasets.Dataset:
        source = load_source(self.cfg)
        marker = self.cache_root / SCANS / source._fingerprint  # orders the scans: one per machine first
        usable = node_first(self.trainer, marker, lambda: drop_unusable(source, self.cfg))
        warn_unmasked(usable, self.cfg, usable[MODE] if self.cfg.mask == "alpha" else None)
        return usable

    def cache_folder(self, ds: datasets.Dataset | None = None) -> Path:
        if self.folder is None:
            ds = self._source() if ds is None else ds
            self.folder = self.cache_root / fingerprint(ds, self.cfg, self.autoencoder, self.conditioner)
        return self.folder

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        ds = self._source()
        folder = self.cache_folder(ds)
        share = cache_share(self.trainer, folder, self.shared_filesystem)  # every process, built or not
        self.reused = cached(folder)
        if not self.reused:
            self._build(ds, folder, share)
        parts = load_cache(folder)
        train, val = validation_rows(sum(len(part) for part in parts), self.cfg)
        self.train_set = LatentCacheDataset(parts, train, train=True)
        self.val_set = LatentCacheDataset(parts, val, train=False) if val is not None else None

    def _build(self, ds: datasets.Dataset, folder: Path, share: Share) -> None:
        """Encode this process's shard, then wait for the others' and finish the cache."""
        plan = plan_parts(ds, self.cfg)
        with self._on_accelerator():
            self.built = build_shard(ds, plan, self.cfg, self.autoencoder, self.conditioner, folder,
                                     share.index, share.count, progress=share.index == 0)
        self.waited = wait_for_shards(folder, [size for size, _ in plan], share.count)
        finish_cache(folder, plan, share.count)
        rank = self.trainer.global_rank if self.trainer else 0
        print(f"[cache] process {rank}, shard {share.index + 1} of {share.count}: encoded {self.built.rows} of "
              f"{len(ds)} images in {self.built.seconds:.1f} s ({self.built.reused} finished shard(s) of an "
              f"earlier build reused), then waited {self.waited:.1f} s for the other shards", flush=True)

    @contextmanager
    def _on_accelerator(self):
        """Encode on the process's accelerator, then hand the models back where they were."""
        device = self.trainer.strategy.root_device if self.trainer else None
        home = self.autoencoder.device
        if device is not None:
            self.autoencoder.to(device), self.conditioner.to(device)
        try:
            yield
        finally:
            self.autoencoder.to(home), self.conditioner.to(home)

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.cfg, already_batched, self.trainer, train=True)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return make_loader(self.val_set, self.cfg, already_batched, self.trainer, train=False)
