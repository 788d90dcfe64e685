"""Stage 2, start to end: `ldm train configs/diffusion/ldm_shapes.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from diffusers import DDPMScheduler, UNet2DConditionModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.dual_text_encoder import TextTimeConditioner
from ldm.components.text_encoder import TextConditioner
from ldm.core import layout
from ldm.core.errors import LdmError
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible_sizes
from ldm.data.latent_datamodule import LatentCacheDataModule, check_cacheable
from ldm.stages.diffusion.config import Config, NoiseConfig
from ldm.stages.diffusion.export import export, export_lora
from ldm.stages.diffusion.module import LatentDiffusion
from ldm.stages.diffusion.parts import (
    add_text_encoder_lora,
    add_unet_lora,
    build_ema,
    build_loss,
    build_noise_scheduler,
    build_smoothness_loss,
    build_unet,
    enable_gradient_checkpointing,
    trained_parameters,
)
from ldm.stages.diffusion.pretrained import (
    Sources,
    base_model,
    check_unet_fits,
    load_unet,
    pipeline_noise_scheduler,
    resolve_sources,
    wants_text_time,
)
from ldm.stages.trainer import TrainedStage, begin, fit


def build_network(cfg: Config, sources: Sources, autoencoder: FrozenAutoencoder,
                  conditioner: TextConditioner) -> UNet2DConditionModel:
    """The pretrained UNet (checked to fit the other parts), or a new one sized by `unet:`."""
    if sources.unet is None:
        return build_unet(cfg.unet, autoencoder, conditioner, cfg.data.resolution)
    unet = load_unet(sources.unet)
    check_unet_fits(unet, sources, autoencoder, conditioner)
    return unet


def load_conditioner(cfg: Config, sources: Sources) -> TextConditioner:
    """The frozen text encoder(s): SDXL's kind for a text_time UNet (new or pretrained), else SD's."""
    if not wants_text_time(cfg, sources):
        return TextConditioner.load(str(sources.text_encoder), cfg.caption_dropout)
    if not cfg.cache:
        raise LdmError(f"the UNet of {sources.unet_name} is SDXL-style (text_time): it trains from the latent "
                       "cache (cache: true), which stores each image's original size and crop")
    return TextTimeConditioner.load(str(sources.text_encoder), cfg.caption_dropout)


def build_schedule(cfg: Config, sources: Sources) -> DDPMScheduler:
    """`noise:` when given, else the pretrained pipeline's schedule, else the defaults."""
    if cfg.noise is None and sources.pipeline is not None:
        return pipeline_noise_scheduler(sources.pipeline)
    return build_noise_scheduler(cfg.noise or NoiseConfig())


def build_module(cfg: Config) -> LatentDiffusion:
    """The engine and its parts, from the config (stage 1 and 1b, or a pipeline, read from their folders)."""
    sources = resolve_sources(cfg)
    autoencoder = FrozenAutoencoder.load(str(sources.vae))
    require_divisible_sizes(cfg.data, autoencoder.factor, "the autoencoder's downsampling factor")
    conditioner = load_conditioner(cfg, sources)
    unet = build_network(cfg, sources, autoencoder, conditioner)
    scheduler = build_schedule(cfg, sources)
    lora = cfg.lora
    trained_text_encoder = conditioner.text_encoder if lora is not None and lora.train_text_encoder else None
    if lora is not None:
        add_unet_lora(unet, lora)
    if trained_text_encoder is not None:
        add_text_encoder_lora(trained_text_encoder, lora)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(unet, trained_text_encoder)
    ema = build_ema(cfg.ema, trained_parameters(unet, trained_text_encoder))
    return LatentDiffusion(unet, scheduler, build_loss(cfg.loss, scheduler), autoencoder, conditioner,
                           cfg.train, ema=ema, samples=cfg.samples,
                           samples_dir=cfg.stage_dir / layout.SAMPLE_GRIDS,
                           train_text_encoder=trained_text_encoder is not None,
                           base=base_model(sources) if lora is not None else None,
                           smoothness=build_smoothness_loss(cfg.loss, scheduler))


def build_datamodule(cfg: Config, module: LatentDiffusion) -> L.LightningDataModule:
    if not cfg.cache:
        return ImageCaptionDataModule(cfg.data)
    return LatentCacheDataModule(cfg.data, cfg.stage_dir / layout.LATENT_CACHE, module.autoencoder,
                                 module.conditioner, cfg.cache_shared_filesystem)


def train(cfg: Config) -> TrainedStage:
    """Train the UNet (or its LoRA adapters) on the frozen autoencoder and text encoder, then export
    RUN/pipeline (or RUN/lora)."""
    with begin(cfg):  # seeds before building: the same config starts from the same weights (a new
        # UNet's, or a LoRA's randomly initialised down-projections)
        if cfg.cache:
            check_cacheable(cfg.data)  # before loading any model
        module = build_module(cfg)
        trainer = fit(cfg, module, build_datamodule(cfg, module))
        lora = cfg.lora is not None
        out = Path(cfg.run_dir) / (layout.LORA if lora else layout.PIPELINE)
        if trainer.is_global_zero:
            (export_lora if lora else export)(module, out)
    return TrainedStage(out, module, trainer)
