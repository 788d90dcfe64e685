"""The trainable parts of stage 2, each built from its own config section.

    unet:   the denoising network, a diffusers `UNet2DConditionModel`; its input size, channels and
            cross-attention width come from the autoencoder and the text encoder, not the config
    noise:  the training noise schedule, a diffusers `DDPMScheduler`
    loss:   prediction target, min-SNR weighting, noise offset (`ldm.stages.diffusion.losses`)
    ema:    the exponential moving average of the UNet's weights (diffusers' `EMAModel`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel

from ldm.components.conditioner import TextConditioner
from ldm.components.frozen_autoencoder import FrozenAutoencoder
from ldm.core.config import require_divides
from ldm.core.errors import LdmError
from ldm.stages.diffusion.losses import DiffusionLoss


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    down_block_types: list[str] = field(default_factory=lambda: [
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
    up_block_types: list[str] = field(default_factory=lambda: [
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    layers_per_block: int = 2
    # Named as diffusers names it; UNet2DConditionModel uses it as the number of attention heads.
    attention_head_dim: int = 8
    transformer_layers_per_block: int = 1
    norm_num_groups: int = 32

    def __post_init__(self):
        if not len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types):
            raise ValueError("unet.block_out_channels, unet.down_block_types and unet.up_block_types "
                             f"must have the same length, got {len(self.block_out_channels)}, "
                             f"{len(self.down_block_types)} and {len(self.up_block_types)}")
        require_divides(self.norm_num_groups, self.block_out_channels, "unet.norm_num_groups",
                        "unet.block_out_channels")


@dataclass
class NoiseConfig:
    num_train_timesteps: int = 1000
    # "squaredcos_cap_v2" is the cosine schedule of Nichol & Dhariwal (beta_start/end unused).
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"


@dataclass
class LossConfig:
    snr_gamma: float | None = 5.0  # min-SNR weighting; null trains on the plain MSE
    noise_offset: float = 0.0


@dataclass
class EmaConfig:
    enabled: bool = True
    decay: float = 0.9999  # the ceiling; with warmup the decay grows towards it as 1 - (1 + step)^-power
    warmup: bool = True
    power: float = 2 / 3


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
    # foreach: one multi-tensor update instead of a Python loop over the parameters (2x faster
    # for the shapes UNet on a CPU, where the loop's overhead is a visible share of a step).
    return EMAModel(unet.parameters(), decay=cfg.decay, use_ema_warmup=cfg.warmup, power=cfg.power,
                    foreach=True)
