"""The trainable parts of stage 2, each built from its own config section.

    unet:   the denoising network, a diffusers `UNet2DConditionModel`; its input size, channels and
            cross-attention width come from the autoencoder and the text encoder, not the config
    noise:  the training noise schedule, a diffusers `DDPMScheduler`
    loss:   prediction target, min-SNR weighting, noise offset (`ldm.stages.diffusion.losses`)
    ema:    the exponential moving average of the UNet's weights (diffusers' `EMAModel`)
"""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.errors import LdmError
from ldm.stages.diffusion.config import EmaConfig, LossConfig, NoiseConfig, UNetConfig
from ldm.stages.diffusion.losses import DiffusionLoss


def build_unet(cfg: UNetConfig, autoencoder: FrozenAutoencoder, conditioner: TextConditioner,
               resolution: int) -> UNet2DConditionModel:
    try:
        return UNet2DConditionModel(
            sample_size=resolution // autoencoder.factor,
            in_channels=autoencoder.latent_channels,
            out_channels=autoencoder.latent_channels,
            cross_attention_dim=conditioner.hidden_size,  # the text encoder's width, read from it
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            transformer_layers_per_block=cfg.transformer_layers_per_block,
            norm_num_groups=cfg.norm_num_groups,
        )
    except ValueError as err:  # diffusers checks block names and sizes
        raise LdmError(f"unet: {err}") from None


def build_noise_scheduler(cfg: NoiseConfig) -> DDPMScheduler:
    # clip_sample off: latents are not bounded to [-1, 1] as pixels are.
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                         prediction_type=cfg.prediction_type, clip_sample=False)


def build_loss(cfg: LossConfig, scheduler: DDPMScheduler) -> DiffusionLoss:
    return DiffusionLoss(scheduler, scheduler.config.prediction_type, cfg.snr_gamma, cfg.noise_offset)


def build_ema(cfg: EmaConfig, unet: UNet2DConditionModel) -> EMAModel | None:
    if not cfg.enabled:
        return None
    # foreach: one multi-tensor update instead of a Python loop over the parameters, whose overhead
    # is a visible share of a small UNet's step on a CPU (docs/benchmarks.md).
    return EMAModel(unet.parameters(), decay=cfg.decay, use_ema_warmup=cfg.warmup, power=cfg.power,
                    foreach=True)
