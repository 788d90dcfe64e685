"""The diffusion engine, a LightningModule that receives its parts, each built from its own config
section (`parts.py`), as Stability AI's generative-models composes its diffusion engine:

    network       UNet2DConditionModel                (trained; `unet:`, or `pretrained:`)
    noise         DDPMScheduler                       (`noise:`)
    loss          DiffusionLoss: target, min-SNR, noise offset, mask weights   (`loss:`)
    smoothness    StepVariationLoss, Smooth Diffusion's regulariser; None when off (`loss.smoothness`)
    conditioner   frozen CLIP text encoder of stage 1b, caption dropout  (`text_encoder:`)
    autoencoder   frozen autoencoder of stage 1                          (`vae:`)
    ema           EMAModel of the trained weights, used for validation and export   (`ema:`)
    inpainting    InpaintingInputs: random masks and masked-image latents, None for text-to-image
                  (`inpainting:`, ldm/stages/diffusion/inpainting.py)

What trains is every parameter that requires a gradient: the whole UNet, or with `lora:` only the
adapters peft added to it (and to the text encoder, which then becomes a child module too). The
optimizer, the EMA and the checkpoints hold exactly those; the frozen base weights are not written
into every checkpoint but put back from the pretrained model on resume, after checking (by the
fingerprint of its weights) that it is the same base.

Data arrive either from the latent cache (`cache: true`, the default: latent moments and caption
embeddings computed once, see `ldm.data.latent_cache`) or as images and captions, encoded at every
step (`cache: false`, for streamed data and a text encoder that trains). With `data.mask` the batches
also carry loss masks, and the loss weighs each latent pixel by its mask (`loss_weights`). With
`data.prior_preservation` each batch is the user's images and class images side by side
(`ldm.data.prior_datamodule`), and the loss is theirs plus the weighted loss of the class images."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import lightning as L
import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.components.text_time import unet_inputs
from ldm.core.errors import LdmError
from ldm.data.latent_cache.layout import TIME_IDS
from ldm.data.masks import MASK, to_latent_grid
from ldm.data.prior_datamodule import CLASS, INSTANCE
from ldm.sampling.lora import BaseModel
from ldm.sampling.samplers import inference_scheduler
from ldm.stages.diffusion.config import SamplesConfig
from ldm.stages.diffusion.inpainting import InpaintingInputs
from ldm.stages.diffusion.losses import DiffusionLoss
from ldm.stages.diffusion.parts import trained_parameters
from ldm.stages.diffusion.smoothness_loss import StepVariationLoss, twice_differentiable
from ldm.stages.diffusion.validation_grid import sample_grid, save_grid
from ldm.stages.optimizers import build_optimizer
from ldm.stages.run_config import TrainConfig
from ldm.stages.trainer import lr_scheduler

EMA_KEY = "ema"  # where the EMA weights live in a Lightning checkpoint
BASE_KEY = "lora_base"  # the base model a LoRA run's checkpoint was trained on


class LatentDiffusion(L.LightningModule):
    def __init__(self, unet: UNet2DConditionModel, noise_scheduler: DDPMScheduler, loss: DiffusionLoss,
                 autoencoder: FrozenAutoencoder, conditioner: TextConditioner, train_cfg: TrainConfig,
                 ema: EMAModel | None = None, samples: SamplesConfig | None = None,
                 samples_dir=None, train_text_encoder: bool = False, base: BaseModel | None = None,
                 smoothness: StepVariationLoss | None = None, learned_tokens: torch.nn.Module | None = None,
                 inpainting: InpaintingInputs | None = None, prior_loss_weight: float | None = None):
        super().__init__()
        # Children in training mode (a pretrained model loads in eval mode, and Lightning keeps the
        # mode it finds): dropout, the LoRA adapters' included, applies while training.
        self.unet = unet.train()  # a child module: what the optimizer trains and checkpoints hold
        # The text encoder is a child only when (its adapters) train; otherwise it stays outside,
        # with the conditioner, out of the optimizer and the checkpoints.
        self.text_encoder = conditioner.text_encoder.train() if train_text_encoder else None
        self.noise_scheduler, self.loss = noise_scheduler, loss
        self.autoencoder, self.conditioner = autoencoder, conditioner
        self.train_cfg, self.ema = train_cfg, ema
        self.samples, self.samples_dir = samples, samples_dir
        self.base = base  # a LoRA run's pretrained base (its frozen weights are not checkpointed)
        # A child module when on, so that checkpoints hold its running mean; absent when off, so
        # that a default run's checkpoints are as they were.
        self.smoothness = smoothness
        # Textual inversion's new word (its vectors, hooked into the frozen text encoder): a child,
        # so that the optimizer, the EMA and the checkpoints hold it; None otherwise.
        self.learned_tokens = learned_tokens
        self.inpainting = inpainting
        # With prior preservation (data.prior_preservation): batches are {"instance": ..., "class": ...}
        # and the loss is the instance loss + this weight * the class loss.
        self.prior_loss_weight = prior_loss_weight

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer and the EMA update, in the order `build_ema` was given them."""
        return trained_parameters(self.unet, self.text_encoder, self.learned_tokens)

    @property
    def text_trains(self) -> bool:
        """Whether caption embeddings need gradients: text-encoder adapters or a learned word."""
        return self.text_encoder is not None or self.learned_tokens is not None

    # ---- data in, loss out ------------------------------------------------------------------------

    def latents_and_embeddings(self, batch: dict, drop_captions: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents drawn from each image's posterior, and one caption embedding per image
        (`drop_captions`: a share of them the empty prompt's, for classifier-free guidance)."""
        if "pixel_values" not in batch:  # from the latent cache
            embeddings = batch["embeddings"]
            if drop_captions:
                embeddings = self.conditioner.drop_captions(embeddings)
            return self.autoencoder.sample_latents(batch["mean"], batch.get("std")), embeddings
        mean, std = self.autoencoder.moments(batch["pixel_values"])
        if not self.text_trains:
            embeddings = self.conditioner.encode(batch["caption"])
            if drop_captions:
                embeddings = self.conditioner.drop_captions(embeddings)
        else:  # a training encoder or word: captions dropped as text, then encoded with gradients
            captions = batch["caption"]
            if drop_captions:
                captions = self.conditioner.drop_caption_texts(captions)
            embeddings = self.conditioner.embed(captions)
        return self.autoencoder.sample_latents(mean, std), embeddings

    def denoise(self, latents: torch.Tensor, embeddings: torch.Tensor, generator: torch.Generator | None = None,
                track_noise: bool = False, times: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """One training denoising: (prediction, noisy latents, noise, timesteps). `track_noise`: the
        noise requires a gradient (the smoothness loss differentiates through it). `times`: an
        SDXL-style UNet's time ids (`time_ids_of`)."""
        noise = self.loss.sample_noise(latents, generator)
        if track_noise:
            noise.requires_grad_(True)
        timesteps = self.loss.sample_timesteps(latents, generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        model_input = noisy
        if self.inpainting is not None:  # the inpainting UNet also takes a mask and the masked image
            model_input = torch.cat([noisy, self.inpainting(latents, generator)], dim=1)
        with twice_differentiable() if track_noise else nullcontext():
            prediction = self.unet(model_input, timesteps, **unet_inputs(self.unet, embeddings, times)).sample
        return prediction, noisy, noise, timesteps

    def loss_weights(self, batch: dict, latents: torch.Tensor) -> torch.Tensor | None:
        """Per-latent-pixel loss weights from the batch's masks (data.mask), or None without masks."""
        mask = batch.get(MASK)
        if mask is None:
            return None
        return self.loss.mask_weights(to_latent_grid(mask.to(latents.device), latents.shape[-2:]))

    def time_ids_of(self, batch: dict) -> torch.Tensor | None:
        """The batch's SDXL time ids (original size, crop, target size; the latent cache stores them),
        or None for an SD UNet."""
        times = batch.get(TIME_IDS)
        return None if times is None else times.to(self.device)

    def diffusion_loss(self, latents: torch.Tensor, embeddings: torch.Tensor,
                       generator: torch.Generator | None = None, weight: torch.Tensor | None = None,
                       times: torch.Tensor | None = None) -> torch.Tensor:
        prediction, _, noise, timesteps = self.denoise(latents, embeddings, generator, times=times)
        return self.loss(prediction, latents, noise, timesteps, weight)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if CLASS in batch:  # DreamBooth's prior preservation, as diffusers' train_dreambooth.py adds it up
            loss, size = self.batch_loss(batch[INSTANCE])
            prior, _ = self.batch_loss(batch[CLASS])
            self.log("train/instance_loss", loss, batch_size=size)
            self.log("train/prior_loss", prior, batch_size=size)
            loss = loss + self.prior_loss_weight * prior
        else:
            loss, size = self.batch_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def batch_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """The training loss of one batch of images and captions (or cached latents), and its size."""
        latents, embeddings = self.latents_and_embeddings(batch, drop_captions=True)
        weight = self.loss_weights(batch, latents)
        times = self.time_ids_of(batch)
        if self.smoothness is None:
            return self.diffusion_loss(latents, embeddings, weight=weight, times=times), latents.shape[0]
        return self.smoothed_diffusion_loss(latents, embeddings, weight, times), latents.shape[0]

    def smoothed_diffusion_loss(self, latents: torch.Tensor, embeddings: torch.Tensor,
                                weight: torch.Tensor | None = None, times: torch.Tensor | None = None
                                ) -> torch.Tensor:
        """The diffusion loss (masked by `weight`, if given) plus the weighted smoothness penalty (logged
        on its own as train/smoothness; a property of the whole output, so unmasked), both from one
        UNet call."""
        prediction, noisy, noise, timesteps = self.denoise(latents, embeddings, track_noise=True, times=times)
        penalty = self.smoothness(prediction, noisy, noise, timesteps)
        self.log("train/smoothness", penalty, batch_size=latents.shape[0])
        return self.loss(prediction, latents, noise.detach(), timesteps, weight) + self.smoothness.weight * penalty

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The same noise and timesteps at every validation, so the curve shows the model, not the dice.
        generator = torch.Generator(self.device).manual_seed(batch_idx)
        latents, embeddings = self.latents_and_embeddings(batch)
        loss = self.diffusion_loss(latents, embeddings, generator, self.loss_weights(batch, latents),
                                   self.time_ids_of(batch))
        self.log("val/loss", loss, sync_dist=True, batch_size=latents.shape[0])

    # ---- optimizer --------------------------------------------------------------------------------

    def configure_optimizers(self):
        # The fused kernel updates every parameter in one call, several times faster than the
        # per-parameter loop for a small UNet (docs/benchmarks.md). PyTorch has it for CPU and CUDA
        # tensors. Full precision
        # only: Lightning's mixed-precision plugin refuses to clip a fused optimizer's gradients (it
        # takes the optimizer to unscale them itself).
        train = self.train_cfg
        full_precision = "mixed" not in str(self.trainer.precision)
        fused = (train.optimizer == "adamw" and full_precision
                 and next(self.unet.parameters()).device.type in ("cpu", "cuda"))
        optimizer = build_optimizer(self.trained_parameters(), train.optimizer, lr=train.lr,
                                    weight_decay=train.weight_decay, fused=fused)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler(optimizer, train)}

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
            self.ema.step(self.trained_parameters())

    def frozen_names(self) -> set[str]:
        return {name for name, parameter in self.named_parameters() if not parameter.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning has put the whole state_dict in; a LoRA run keeps the adapters only (megabytes,
        # not the gigabytes of a frozen Stable Diffusion UNet in every checkpoint).
        frozen = self.frozen_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        if self.base is not None:
            checkpoint[BASE_KEY] = self.base.unet_sha256
        if self.ema is not None:
            checkpoint[EMA_KEY] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before Lightning loads the state_dict: the frozen weights it lacks are the ones
        # this module holds already (from the same base, checked here), so the load stays strict
        # for everything that trains.
        saved_base = checkpoint.get(BASE_KEY)
        if self.base is not None and saved_base is not None and saved_base != self.base.unet_sha256:
            raise LdmError(f"this checkpoint trained adapters on another base model than {self.base.name}: "
                           f"its UNet weights differ (sha256 {saved_base[:12]}... vs "
                           f"{self.base.unet_sha256[:12]}...)")
        state, own = checkpoint["state_dict"], self.state_dict()
        state.update({name: own[name] for name in self.frozen_names() if name not in state})
        if self.ema is not None and EMA_KEY in checkpoint:
            self.ema.load_state_dict(checkpoint[EMA_KEY])
            self.ema.to(self.device)  # the checkpoint's tensors arrive where it was loaded

    def swap_in_ema(self) -> None:
        """Put the EMA weights into the trained parameters, keeping their own to come back to."""
        if self.ema is not None:
            self.ema.store(self.trained_parameters())
            self.ema.copy_to(self.trained_parameters())

    def swap_out_ema(self) -> None:
        if self.ema is not None:
            self.ema.restore(self.trained_parameters())

    @contextmanager
    def ema_weights(self):
        """The UNet holds the EMA weights inside the block, its own again after it."""
        self.swap_in_ema()
        try:
            yield
        finally:
            self.swap_out_ema()

    def sampling_scheduler(self):
        """The sampler the validation grids draw with and the export carries: DPM-Solver++ on the
        training schedule (`inference_scheduler`)."""
        return inference_scheduler(self.noise_scheduler)

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
        scheduler = self.sampling_scheduler()
        with torch.autocast(self.device.type, enabled=False):
            grid = sample_grid(self.samples, self.unet, self.autoencoder, self.conditioner, scheduler)
        if self.samples_dir is not None:
            save_grid(grid, self.samples_dir / f"step{step:08d}.png", self.samples, step,
                      type(scheduler).__name__)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", np.asarray(grid), step, dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                logger.log_image("samples", [grid], step=step)


