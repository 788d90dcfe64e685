"""The diffusion engine, a LightningModule that receives its parts, each built from its own config
section (`parts.py`), as Stability AI's generative-models composes its diffusion engine:

    network       UNet2DConditionModel                (trained; `unet:`)
    noise         DDPMScheduler                       (`noise:`)
    loss          DiffusionLoss: target, min-SNR, noise offset                 (`loss:`)
    conditioner   frozen CLIP text encoder of stage 1b, caption dropout  (`text_encoder:`)
    autoencoder   frozen autoencoder of stage 1                          (`vae:`)
    ema           EMAModel of the UNet weights, used for validation and export   (`ema:`)

Data arrive either from the latent cache (`cache: true`, the default: latent moments and caption
embeddings computed once, see `ldm.data.latent_cache`) or as images and captions, encoded at every
step (`cache: false`, for streamed data)."""

from __future__ import annotations

from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from lightning.pytorch.loggers import TensorBoardLogger

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.stages.diffusion.losses import DiffusionLoss
from ldm.stages.diffusion.samples import (
    SamplesConfig,
    inference_scheduler,
    sample_grid,
    save_grid,
)
from ldm.stages.trainer import TrainConfig, lr_scheduler

PIPELINE = "pipeline"


EMA_KEY = "ema"  # where the EMA weights live in a Lightning checkpoint

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
        # The fused kernel updates every parameter in one call, several times faster than the
        # per-parameter loop for a small UNet (docs/benchmarks.md). PyTorch has it for CPU and CUDA
        # tensors. Full precision
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


