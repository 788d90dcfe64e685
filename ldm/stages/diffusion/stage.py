"""Stage 2: a text-conditioned latent diffusion UNet, trained with Lightning.

The module is an engine that receives its parts, each built from its own config section
(`ldm.stages.diffusion.parts`), as Stability AI's generative-models composes its diffusion engine:

    network       UNet2DConditionModel                (trained; `unet:`)
    noise         DDPMScheduler                       (`noise:`)
    loss          DiffusionLoss: target, min-SNR, noise offset                 (`loss:`)
    conditioner   frozen CLIP text encoder of stage 1b, caption dropout  (`text_encoder:`)
    autoencoder   frozen autoencoder of stage 1                          (`vae:`)
    ema           EMAModel of the UNet weights, used for validation and export   (`ema:`)

Data arrive either from the latent cache (`cache: true`, the default: latent moments and caption
embeddings computed once, see `ldm.data.latent_cache`) or as images and captions, encoded at every
step (`cache: false`, for streamed data). At the end, rank 0 exports RUN/pipeline with the EMA
weights and a DPM-Solver++ scheduler on the training schedule.

    ldm train configs/diffusion/ldm_shapes.yaml
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from lightning.pytorch.loggers import TensorBoardLogger

from ldm.components.conditioner import TextConditioner
from ldm.components.frozen_autoencoder import FrozenAutoencoder
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible
from ldm.data.latent_datamodule import LatentCacheDataModule, check_cacheable
from ldm.sampling.pipeline_io import export_pipeline
from ldm.stages.diffusion.losses import DiffusionLoss
from ldm.stages.diffusion.parts import (
    EmaConfig,
    LossConfig,
    NoiseConfig,
    UNetConfig,
    build_ema,
    build_loss,
    build_noise_scheduler,
    build_unet,
)
from ldm.stages.diffusion.samples import (
    SamplesConfig,
    inference_scheduler,
    sample_grid,
    save_grid,
)
from ldm.stages.trainer import RunConfig, TrainConfig, fit, lr_scheduler

PIPELINE = "pipeline"
EMA_KEY = "ema"  # where the EMA weights live in a Lightning checkpoint


@dataclass(kw_only=True)
class Config(RunConfig):
    STAGE: ClassVar[str] = "diffusion"

    stage: str = "diffusion"
    vae: str  # RUN/vae of stage 1 (or any folder an AutoencoderKL / VQModel loads from)
    text_encoder: str  # RUN of stage 1b (text_encoder/ + tokenizer/), a pipeline or a CLIP folder
    cache: bool = True  # false: encode images and captions at every step (streamed data)
    caption_dropout: float = 0.1  # share of captions replaced by "" to learn unconditional denoising
    unet: UNetConfig = field(default_factory=UNetConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


class LatentDiffusion(L.LightningModule):
    def __init__(self, unet: UNet2DConditionModel, noise_scheduler: DDPMScheduler, loss: DiffusionLoss,
                 autoencoder: FrozenAutoencoder, conditioner: TextConditioner, train_cfg: TrainConfig,
                 ema: EMAModel | None = None, samples: SamplesConfig | None = None,
                 samples_dir=None):
        super().__init__()
        self.unet = unet  # the only child module: what the optimizer trains and checkpoints hold
        self.noise_scheduler, self.loss = noise_scheduler, loss
        self.autoencoder, self.conditioner = autoencoder, conditioner
        self.train_cfg, self.ema = train_cfg, ema
        self.samples, self.samples_dir = samples, samples_dir

    # ---- data in, loss out ------------------------------------------------------------------------

    def latents_and_embeddings(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents drawn from each image's posterior, and one caption embedding per image."""
        if "pixel_values" in batch:  # not cached: encode now
            mean, std = self.autoencoder.moments(batch["pixel_values"])
            embeddings = self.conditioner.encode(batch["caption"])
        else:
            mean, std, embeddings = batch["mean"], batch.get("std"), batch["embeddings"]
        return self.autoencoder.sample_latents(mean, std), embeddings

    def diffusion_loss(self, latents: torch.Tensor, embeddings: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        noise = self.loss.sample_noise(latents, generator)
        timesteps = self.loss.sample_timesteps(latents, generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=embeddings).sample
        return self.loss(prediction, latents, noise, timesteps)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        latents, embeddings = self.latents_and_embeddings(batch)
        embeddings = self.conditioner.drop_captions(embeddings)
        loss = self.diffusion_loss(latents, embeddings)
        self.log("train/loss", loss, prog_bar=True, batch_size=latents.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The same noise and timesteps at every validation, so the curve shows the model, not the dice.
        generator = torch.Generator(self.device).manual_seed(batch_idx)
        latents, embeddings = self.latents_and_embeddings(batch)
        loss = self.diffusion_loss(latents, embeddings, generator)
        self.log("val/loss", loss, sync_dist=True, batch_size=latents.shape[0])

    # ---- optimizer --------------------------------------------------------------------------------

    def configure_optimizers(self):
        # The fused kernel updates every parameter in one call: measured 1.4 ms against 5.4 ms a step
        # for the shapes UNet on 2 CPU cores. PyTorch has it for CPU and CUDA tensors. Full precision
        # only: Lightning's mixed-precision plugin refuses to clip a fused optimizer's gradients (it
        # takes the optimizer to unscale them itself).
        full_precision = "mixed" not in str(self.trainer.precision)
        fused = full_precision and next(self.unet.parameters()).device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(self.unet.parameters(), lr=self.train_cfg.lr,
                                      weight_decay=self.train_cfg.weight_decay, fused=fused)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler(optimizer, self.train_cfg)}

    # ---- frozen parts and EMA follow the module ---------------------------------------------------

    def on_fit_start(self) -> None:
        self.autoencoder.to(self.device)
        self.conditioner.to(self.device)
        if self.ema is not None:
            self.ema.to(self.device)

    def optimizer_step(self, *args, **kwargs) -> None:
        # Called once per optimizer step (not per micro-batch under gradient accumulation), before
        # the step's checkpoint is written: so the EMA follows every update and a checkpoint holds it.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.step(self.unet.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:
            checkpoint[EMA_KEY] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and EMA_KEY in checkpoint:
            self.ema.load_state_dict(checkpoint[EMA_KEY])
            self.ema.to(self.device)  # the checkpoint's tensors arrive where it was loaded

    def swap_in_ema(self) -> None:
        """Put the EMA weights into the UNet, keeping its own to come back to."""
        if self.ema is not None:
            self.ema.store(self.unet.parameters())
            self.ema.copy_to(self.unet.parameters())

    def swap_out_ema(self) -> None:
        if self.ema is not None:
            self.ema.restore(self.unet.parameters())

    @contextmanager
    def ema_weights(self):
        """The UNet holds the EMA weights inside the block, its own again after it."""
        self.swap_in_ema()
        try:
            yield
        finally:
            self.swap_out_ema()

    # ---- validation: loss and samples from the EMA weights ----------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.swap_in_ema()

    def on_validation_epoch_end(self) -> None:
        try:
            if self.trainer.is_global_zero and self.samples and self.samples.prompts:
                self.log_samples()
        finally:
            self.swap_out_ema()

    @torch.no_grad()
    def log_samples(self) -> None:
        step = self.trainer.global_step
        # Sampling in fp32 whatever the training precision: the frozen parts are fp32.
        with torch.autocast(self.device.type, enabled=False):
            grid = sample_grid(self.samples, self.unet, self.autoencoder, self.conditioner,
                               self.noise_scheduler)
        if self.samples_dir is not None:
            save_grid(grid, self.samples_dir / f"step{step:08d}.png", self.samples, step,
                      type(inference_scheduler(self.noise_scheduler)).__name__)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", np.asarray(grid), step, dataformats="HWC")


def build_module(cfg: Config) -> LatentDiffusion:
    """The engine and its parts, from the config (stage 1 and 1b are read from their folders)."""
    autoencoder = FrozenAutoencoder.load(cfg.vae)
    require_divisible(cfg.data.resolution, autoencoder.factor, "the autoencoder's downsampling factor")
    conditioner = TextConditioner.load(cfg.text_encoder, cfg.caption_dropout)
    unet = build_unet(cfg.unet, autoencoder, conditioner, cfg.data.resolution)
    scheduler = build_noise_scheduler(cfg.noise)
    return LatentDiffusion(unet, scheduler, build_loss(cfg.loss, scheduler), autoencoder, conditioner,
                           cfg.train, ema=build_ema(cfg.ema, unet), samples=cfg.samples,
                           samples_dir=cfg.stage_dir / "samples")


def build_datamodule(cfg: Config, module: LatentDiffusion) -> L.LightningDataModule:
    if not cfg.cache:
        return ImageCaptionDataModule(cfg.data)
    return LatentCacheDataModule(cfg.data, cfg.stage_dir / "cache", module.autoencoder, module.conditioner)


def export(module: LatentDiffusion, out_dir) -> None:
    """RUN/pipeline with the EMA weights (the training weights when EMA is off)."""
    with module.ema_weights():
        unet = module.unet.to("cpu")
        export_pipeline(out_dir, vae=module.autoencoder.vae.to("cpu"),
                        text_encoder=module.conditioner.text_encoder.to("cpu"),
                        tokenizer=module.conditioner.tokenizer, unet=unet,
                        scheduler=inference_scheduler(module.noise_scheduler))


def train(cfg: Config) -> L.Trainer:
    if cfg.cache:
        check_cacheable(cfg.data)  # before loading any model
    module = build_module(cfg)
    trainer = fit(cfg, module, build_datamodule(cfg, module))
    if trainer.is_global_zero:
        export(module, Path(cfg.run_dir) / PIPELINE)
    return trainer
