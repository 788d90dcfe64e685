"""Stage 2, start to end: `ldm train configs/diffusion/ldm_shapes.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
from diffusers import DDPMScheduler, UNet2DConditionModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.dual_text_encoder import TextTimeConditioner
from ldm.components.text_encoder import TextConditioner
from ldm.core import layout
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible_sizes
from ldm.data.latent_datamodule import LatentCacheDataModule, check_cacheable
from ldm.data.prior_datamodule import PriorPreservationDataModule
from ldm.stages.diffusion.class_images import prepare_class_images
from ldm.stages.diffusion.config import Config, NoiseConfig
from ldm.stages.diffusion.export import export, export_lora
from ldm.stages.diffusion.inpainting import InpaintingInputs, inpainting_channels, widen_conv_in
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
from ldm.stages.diffusion.textual_inversion import LearnedTokens, export_embedding
from ldm.stages.trainer import TrainedStage, begin, fit


def build_network(cfg: Config, sources: Sources, autoencoder: FrozenAutoencoder,
                  conditioner: TextConditioner) -> UNet2DConditionModel:
    """The pretrained UNet (checked to fit the other parts), or a new one sized by `unet:`; with
    `inpainting:`, of the inpainting layout (a text-to-image UNet widened to it)."""
    inputs = inpainting_channels(autoencoder.latent_channels) if cfg.inpainting is not None else None
    if sources.unet is None:
        return build_unet(cfg.unet, autoencoder, conditioner, cfg.data.resolution, inputs)
    unet = load_unet(sources.unet)
    check_unet_fits(unet, sources, autoencoder, conditioner, inpainting=inputs is not None)
    if inputs is not None and unet.config.in_channels != inputs:
        if cfg.lora is not None:  # the new input channels must train, and LoRA freezes the first conv
            raise LdmError(f"inpainting with lora: needs an inpainting UNet to start from; {sources.unet_name}'s "
                           "takes text-to-image latents only (train it whole first, without lora:)")
        widen_conv_in(unet, inputs)
    return unet


def load_conditioner(cfg: Config, sources: Sources) -> TextConditioner:
    """The frozen text encoder(s): SDXL's kind for a text_time UNet (new or pretrained), else SD's."""
    if not wants_text_time(cfg, sources):
        return TextConditioner.load(str(sources.text_encoder), cfg.caption_dropout, cfg.prompt_chunks)
    for section in ("textual_inversion", "inpainting"):
        if getattr(cfg, section) is not None:
            raise LdmError(f"{section}: the UNet of {sources.unet_name} is SDXL-style (text_time), which "
                           f"{section.replace('_', ' ')} does not train yet (SD 1.x/2.x-style UNets do)")
    if not cfg.cache:
        raise LdmError(f"the UNet of {sources.unet_name} is SDXL-style (text_time): it trains from the latent "
                       "cache (cache: true), which stores each image's original size and crop")
    return TextTimeConditioner.load(str(sources.text_encoder), cfg.caption_dropout, cfg.prompt_chunks)


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
    lora, prior = cfg.lora, cfg.data.prior_preservation
    trained_text_encoder = conditioner.text_encoder if lora is not None and lora.train_text_encoder else None
    if lora is not None:
        add_unet_lora(unet, lora)
    if trained_text_encoder is not None:
        add_text_encoder_lora(trained_text_encoder, lora)
    learned = None
    if cfg.textual_inversion is not None:  # only the new word trains
        unet.requires_grad_(False)
        learned = LearnedTokens(conditioner.tokenizer, conditioner.text_encoder, cfg.textual_inversion)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(unet, trained_text_encoder)
    ema = build_ema(cfg.ema, trained_parameters(unet, trained_text_encoder, learned))
    inpainting = InpaintingInputs(cfg.inpainting, autoencoder) if cfg.inpainting is not None else None
    return LatentDiffusion(unet, scheduler, build_loss(cfg.loss, scheduler), autoencoder, conditioner,
                           cfg.train, ema=ema, samples=cfg.samples,
                           samples_dir=cfg.stage_dir / layout.SAMPLE_GRIDS,
                           train_text_encoder=trained_text_encoder is not None,
                           base=base_model(sources) if lora is not None or learned is not None else None,
                           smoothness=build_smoothness_loss(cfg.loss, scheduler), learned_tokens=learned,
                           inpainting=inpainting,
                           prior_loss_weight=prior.loss_weight if prior is not None else None)


def build_datamodule(cfg: Config, module: LatentDiffusion, class_images: Path | None = None
                     ) -> L.LightningDataModule:
    """The run's data; with `class_images` (prior preservation) mixed with the class images, which
    are read and cached the same way as the user's images."""
    instance = _datamodule(cfg, cfg.data, module)
    if class_images is None:
        return instance
    return PriorPreservationDataModule(instance, _datamodule(cfg, class_data(cfg.data, class_images), module))


def _datamodule(cfg: Config, data: DataConfig, module: LatentDiffusion) -> L.LightningDataModule:
    if not cfg.cache:
        return ImageCaptionDataModule(data)
    return LatentCacheDataModule(data, cfg.stage_dir / layout.LATENT_CACHE, module.autoencoder,
                                 module.conditioner, cfg.cache_shared_filesystem)


def class_data(data: DataConfig, folder: Path) -> DataConfig:
    """The `data:` section for the class images: the run's own resizing and flips, none held out
    for validation, no masks or tag shuffling (the class prompt is not tags), their own batch size."""
    prior = data.prior_preservation
    return dataclasses.replace(data, source=str(folder), split="train", image_column="image",
                               caption_column="text", max_samples=None, val_fraction=0.0,
                               batch_size=prior.batch_size or data.batch_size, buckets=None,
                               caption_tags=None, mask="none", prior_preservation=None)


def train(cfg: Config) -> TrainedStage:
    """Train the UNet (or its LoRA adapters, or a new word's embedding) on the frozen autoencoder and
    text encoder, then export RUN/pipeline (or RUN/lora, or RUN/embeddings)."""
    with begin(cfg):  # seeds before building: the same config starts from the same weights (a new
        # UNet's, or a LoRA's randomly initialised down-projections)
        if cfg.cache:
            check_cacheable(cfg.data)  # before loading any model
        class_images = None
        if cfg.data.prior_preservation is not None:  # made (or found) before the models load
            class_images = prepare_class_images(cfg, resolve_sources(cfg).pipeline)
        module = build_module(cfg)
        trainer = fit(cfg, module, build_datamodule(cfg, module, class_images))
        out = Path(cfg.run_dir) / export_folder(cfg)
        if trainer.is_global_zero:
            if cfg.textual_inversion is not None:
                with module.ema_weights():
                    export_embedding(module.learned_tokens, out)
            else:
                (export_lora if cfg.lora is not None else export)(module, out)
    return TrainedStage(out, module, trainer)


def export_folder(cfg: Config) -> str:
    """RUN/embeddings (a new word), RUN/lora (adapters) or RUN/pipeline (the whole UNet)."""
    if cfg.textual_inversion is not None:
        return layout.EMBEDDINGS
    return layout.LORA if cfg.lora is not None else layout.PIPELINE
