"""The trainable parts of stage 2, each built from its own config section.

    unet:   the denoising network, a diffusers `UNet2DConditionModel`; its input size, channels and
            cross-attention width come from the autoencoder and the text encoder, not the config
    noise:  the training noise schedule, a diffusers `DDPMScheduler`
    loss:   prediction target, min-SNR weighting, noise offset, the masked loss's floor
            (`ldm.stages.diffusion.losses`), and
            the smoothness regulariser (`ldm.stages.diffusion.smoothness_loss`, `loss.smoothness`)
    ema:    the exponential moving average of the trained weights (diffusers' `EMAModel`)
    lora:   adapters on the UNet (and optionally the text encoder), added with peft: LoRA, DoRA,
            LoHa or LoKr (`lora.kind`)

A pretrained start (the UNet and schedule of a pipeline folder) is in `pretrained.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

import peft
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from transformers import CLIPTextModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.dual_text_encoder import TextTimeConditioner
from ldm.components.text_encoder import TextConditioner
from ldm.components.text_time import TEXT_TIME, TIME_IDS
from ldm.core.errors import LdmError, first_line
from ldm.sampling.samplers import GUIDANCE_RESCALE
from ldm.stages.diffusion.config import EmaConfig, LoraConfig, LossConfig, NoiseConfig, UNetConfig
from ldm.stages.diffusion.losses import DiffusionLoss
from ldm.stages.diffusion.smoothness_loss import StepVariationLoss


def build_unet(cfg: UNetConfig, autoencoder: FrozenAutoencoder, conditioner: TextConditioner,
               resolution: int, in_channels: int | None = None) -> UNet2DConditionModel:
    """A new UNet; `in_channels` None: the latent channels (an inpainting UNet takes more)."""
    if cfg.addition_embed_type == "text" and conditioner.hidden_size % cfg.addition_embed_type_num_heads:
        # diffusers would only fail at the first step, in a reshape
        raise LdmError(f"unet.addition_embed_type_num_heads: {cfg.addition_embed_type_num_heads} does not divide "
                       f"the text encoder's width {conditioner.hidden_size}")
    try:
        return UNet2DConditionModel(
            sample_size=resolution // autoencoder.factor,
            in_channels=in_channels or autoencoder.latent_channels,
            out_channels=autoencoder.latent_channels,
            cross_attention_dim=conditioner.hidden_size,  # the text encoder's width, read from it
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=_per_level(cfg.attention_head_dim),
            transformer_layers_per_block=_per_level(cfg.transformer_layers_per_block),
            norm_num_groups=cfg.norm_num_groups,
            **({} if cfg.use_linear_projection is None else {"use_linear_projection": cfg.use_linear_projection}),
            **added_embedding_settings(cfg, conditioner),
        )
    except ValueError as err:  # diffusers checks block names and sizes
        raise LdmError(f"unet: {err}") from None


def _per_level(value: int | list[int]) -> int | tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else value


def added_embedding_settings(cfg: UNetConfig, conditioner: TextConditioner) -> dict:
    """The UNet's added embedding: none; "text" (the prompt pooled by attention); or an SDXL-style
    UNet's "text_time": the pooled text projection and 6 time ids, each embedded in
    `addition_time_embed_dim` (diffusers sizes its input from these, as SDXL's config does)."""
    if cfg.addition_embed_type is None:
        return {}
    if cfg.addition_embed_type == "text":
        return {"addition_embed_type": "text", "addition_embed_type_num_heads": cfg.addition_embed_type_num_heads}
    if not isinstance(conditioner, TextTimeConditioner):
        raise LdmError("unet.addition_embed_type: text_time needs SDXL-style text encoders (an SDXL pipeline "
                       "folder or a CLIP-stage run as text_encoder:)")
    return {"addition_embed_type": TEXT_TIME, "addition_time_embed_dim": cfg.addition_time_embed_dim,
            "projection_class_embeddings_input_dim": TIME_IDS * cfg.addition_time_embed_dim + conditioner.pooled_size}


def build_noise_scheduler(cfg: NoiseConfig) -> DDPMScheduler:
    """The training schedule; its config is what the export's samplers are built from, so what
    sampling needs rides along in it: with `noise.zero_terminal_snr`, diffusers' own rescaled betas
    (`rescale_betas_zero_snr`) and trailing timesteps (the paper's: sampling starts at the last
    training step, the one of SNR 0), and the guidance rescale (GUIDANCE_RESCALE)."""
    # clip_sample off: latents are not bounded to [-1, 1] as pixels are.
    zero_snr = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"} if cfg.zero_terminal_snr else {}
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                              beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                              prediction_type=cfg.prediction_type, clip_sample=False, **zero_snr)
    if cfg.sampling_guidance_rescale:
        scheduler.register_to_config(**{GUIDANCE_RESCALE: cfg.sampling_guidance_rescale})
    return scheduler


def build_loss(cfg: LossConfig, scheduler: DDPMScheduler) -> DiffusionLoss:
    return DiffusionLoss(scheduler, scheduler.config.prediction_type, cfg.snr_gamma, cfg.noise_offset,
                         cfg.mask_floor)


def build_smoothness_loss(cfg: LossConfig, scheduler: DDPMScheduler) -> StepVariationLoss | None:
    """The step-wise variation regulariser, or None when `loss.smoothness` is 0 (the default)."""
    return StepVariationLoss(scheduler, cfg.smoothness) if cfg.smoothness > 0 else None


def trained_parameters(*models: torch.nn.Module | None) -> list[torch.nn.Parameter]:
    """The parameters that train, in a fixed order: all of a UNet trained whole, only the adapters
    of a LoRA run (peft freezes the rest)."""
    return [p for model in models if model is not None for p in model.parameters() if p.requires_grad]


def build_ema(cfg: EmaConfig, trained: Iterable[torch.nn.Parameter]) -> EMAModel | None:
    """The EMA of the weights that train: the whole UNet, or only the LoRA adapters."""
    if not cfg.enabled:
        return None
    # foreach: one multi-tensor update instead of a Python loop over the parameters, whose overhead
    # is a visible share of a small UNet's step on a CPU (docs/benchmarks.md).
    return EMAModel(list(trained), decay=cfg.decay, use_ema_warmup=cfg.warmup, power=cfg.power,
                    foreach=True)


def _peft_config(cfg: LoraConfig, targets: list[str]) -> peft.PeftConfig:
    """The peft config of `lora.kind`; every kind starts as no change at all (its second factor zero)."""
    alpha = cfg.alpha or cfg.rank
    if cfg.kind in ("lora", "dora"):
        # Gaussian A and zero B, as diffusers' LoRA script; DoRA's magnitudes start as the weights' norms.
        return peft.LoraConfig(r=cfg.rank, lora_alpha=alpha, lora_dropout=cfg.dropout,
                               init_lora_weights="gaussian", target_modules=list(targets),
                               use_dora=cfg.kind == "dora")
    dropouts = dict(rank_dropout=cfg.rank_dropout or 0.0, module_dropout=cfg.module_dropout or 0.0)
    if cfg.kind == "loha":
        return peft.LoHaConfig(r=cfg.rank, alpha=alpha, target_modules=list(targets), **dropouts)
    lokr = dict(decompose_both=bool(cfg.decompose_both),
                decompose_factor=-1 if cfg.decompose_factor is None else cfg.decompose_factor)
    return peft.LoKrConfig(r=cfg.rank, alpha=alpha, target_modules=list(targets), **dropouts, **lokr)


def add_unet_lora(unet: UNet2DConditionModel, cfg: LoraConfig) -> None:
    """Adapters of `lora.kind` on `lora.target_modules`; peft freezes every other weight of the UNet."""
    try:
        unet.add_adapter(_peft_config(cfg, cfg.target_modules))
    except ValueError as err:  # peft names the targets it did not find
        raise LdmError(f"lora.target_modules: {first_line(err)}") from None


def add_text_encoder_lora(text_encoder: CLIPTextModel, cfg: LoraConfig) -> None:
    """Adapters on the text encoder's attention. Injected with peft itself: transformers' own
    `add_adapter` asks for a newer peft than diffusers does, and the result is the same layers."""
    try:
        peft.inject_adapter_in_model(_peft_config(cfg, cfg.text_encoder_target_modules), text_encoder)
    except ValueError as err:
        raise LdmError(f"lora.text_encoder_target_modules: {first_line(err)}") from None


def enable_gradient_checkpointing(unet: UNet2DConditionModel, text_encoder: CLIPTextModel | None) -> None:
    """Recompute activations in the backward pass (`train.gradient_checkpointing`)."""
    unet.enable_gradient_checkpointing()
    if text_encoder is not None:
        text_encoder.activation_checkpointing_enable()
