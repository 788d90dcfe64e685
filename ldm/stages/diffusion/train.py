"""Stage 2, start to end: `ldm train configs/diffusion/ldm_shapes.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core import layout
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible_sizes
from ldm.data.latent_datamodule import LatentCacheDataModule, check_cacheable
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.export import export
from ldm.stages.diffusion.module import LatentDiffusion
from ldm.stages.diffusion.parts import (
    build_ema,
    build_loss,
    build_noise_scheduler,
    build_unet,
)
from ldm.stages.trainer import TrainedStage, begin, fit


def build_module(cfg: Config) -> LatentDiffusion:
    """The engine and its parts, from the config (stage 1 and 1b are read from their folders)."""
    autoencoder = FrozenAutoencoder.load(cfg.vae)
    require_divisible_sizes(cfg.data, autoencoder.factor, "the autoencoder's downsampling factor")
    conditioner = TextConditioner.load(cfg.text_encoder, cfg.caption_dropout)
    unet = build_unet(cfg.unet, autoencoder, conditioner, cfg.data.resolution)
    scheduler = build_noise_scheduler(cfg.noise)
    return LatentDiffusion(unet, scheduler, build_loss(cfg.loss, scheduler), autoencoder, conditioner,
                           cfg.train, ema=build_ema(cfg.ema, unet), samples=cfg.samples,
                           samples_dir=cfg.stage_dir / "samples")


def build_datamodule(cfg: Config, module: LatentDiffusion) -> L.LightningDataModule:
    if not cfg.cache:
        return ImageCaptionDataModule(cfg.data)
    return LatentCacheDataModule(cfg.data, cfg.stage_dir / "cache", module.autoencoder, module.conditioner,
                                 cfg.cache_shared_filesystem)


def train(cfg: Config) -> TrainedStage:
    """Train the UNet on the frozen stage-1 and stage-1b models, then export RUN/pipeline."""
    with begin(cfg):
        if cfg.cache:
            check_cacheable(cfg.data)  # before loading any model
        module = build_module(cfg)
        trainer = fit(cfg, module, build_datamodule(cfg, module))
        out = Path(cfg.run_dir) / layout.PIPELINE
        if trainer.is_global_zero:
            export(module, out)
    return TrainedStage(out, module, trainer)
