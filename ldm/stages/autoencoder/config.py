"""The autoencoder stage's config: the model's shape (or the pretrained model to start from), each
loss term's weight, codebook care (VQ), how the latent scale is measured, and what trains."""

from __future__ import annotations

import math
from dataclasses import field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, Count, Fraction, NonNegative, NonNegativeInt, Positive, require_divides
from ldm.data.datamodule import require_divisible_sizes
from ldm.stages.run_config import RunConfig, TrainConfig


@dataclass(config=SECTION)
class ModelConfig:
    # An AutoencoderKL / VQModel folder to start from (RUN/vae, a pipeline folder with vae/, or a
    # hub id); the kind and sizes below are then the loaded model's, and ignored.
    pretrained: str | None = None
    kind: Literal["kl", "vq"] = "kl"
    # f: each latent cell covers f x f pixels. One encoder level per entry of `channels`, each but
    # the last halving the resolution, so len(channels) must be log2(f) + 1.
    downsampling_factor: int = 4
    channels: list[Count] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: Count = 1
    latent_channels: Count = 4  # for VQ, also the codebook vectors' size
    norm_num_groups: Count = 32  # must divide every entry of `channels`
    mid_block_attention: bool = False  # self-attention at the lowest resolution (slow on CPU)
    num_codes: Count = 512  # VQ codebook size

    def __post_init__(self):
        f = self.downsampling_factor
        if f < 1 or f & (f - 1):
            raise ValueError(f"model.downsampling_factor must be a power of 2, got {f}")
        if len(self.channels) != int(math.log2(f)) + 1:
            raise ValueError(f"model.channels must have log2(f) + 1 = {int(math.log2(f)) + 1} entries for "
                             f"downsampling_factor={f}, got {len(self.channels)}: {self.channels}")
        require_divides(self.norm_num_groups, self.channels, "model.norm_num_groups", "model.channels")


@dataclass(config=SECTION)
class LossConfig:
    """Each term's weight; 0 turns it off."""

    l1: NonNegative = 1.0
    l2: NonNegative = 0.0
    # Perceptual loss: LPIPS (VGG16) when `lpips_weights` names a local file (see
    # tools/make_lpips_weights.py), otherwise 1 - SSIM, which needs no pretrained weights.
    perceptual: NonNegative = 0.0
    # L1 between the two images' gradients (x and y differences): per-pixel losses let an edge
    # spread over two pixels for little cost, which is the blur samples showed; this term prices it.
    edge: NonNegative = 0.0
    # The share of the run's steps (the planned steps under train.max_minutes, else max_steps) after
    # which the edge term counts: it prices edges, not flat colour, and from the first step it slowed
    # the colours (1007 steps: red drawn orange, 27.9 dB); l1 and l2 settle them first.
    edge_start: Fraction = 0.0
    lpips_weights: str | None = None
    # KL term per pixel (the KL summed over a latent, divided by the image's pixel count), so
    # 1e-6 weighs it against the reconstruction as latent-diffusion's kl_weight does.
    kl: NonNegative = 1e-6
    codebook: NonNegative = 1.0  # pulls the chosen codes towards the encoder outputs (VQ)
    commitment: NonNegative = 0.25  # pulls the encoder outputs towards their codes (VQ's beta)
    disc: NonNegative = 0.5  # GAN term, times taming's adaptive weight; 0: no discriminator at all
    disc_start: NonNegativeInt = 50001  # step from which the discriminator trains and the GAN term counts
    disc_layers: Count = 3
    disc_channels: Count = 64
    disc_lr: Positive | None = None  # null: train.lr
    # Adam's betas for both optimizers; taming's GAN setting (0.5, 0.9) by default.
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])

    def __post_init__(self):
        if self.l1 == self.l2 == self.perceptual == self.edge == 0:
            raise ValueError("loss: at least one of l1, l2, perceptual, edge must be positive")
        if len(self.betas) != 2:
            raise ValueError(f"loss.betas must be two numbers, got {self.betas}")
        if self.lpips_weights and not Path(self.lpips_weights).is_file():
            raise ValueError(f"loss.lpips_weights: file not found: {self.lpips_weights!r} (make it with "
                             "tools/make_lpips_weights.py, or leave it unset for the SSIM loss)")


@dataclass(config=SECTION)
class CodebookConfig:
    """VQ only: how dead codes are revived (see ldm/stages/autoencoder/codebook.py)."""

    revive_every: int = 100  # steps between checks; 0 never revives
    recent_vectors: int = 4096  # encoder outputs kept to draw new codes from


@dataclass(config=SECTION)
class LatentScaleConfig:
    samples: int = 512  # training images encoded to measure the latents' std
    shift: bool = False  # KL only: also centre the latents (shift_factor = their mean)


@dataclass(config=SECTION)
class AutoencoderTrainConfig(TrainConfig):
    """The shared `train:` section, plus what only this stage can do (other stages reject the key)."""

    # Train only the decoder (and post_quant_conv); the encoder, quant_conv and a VQ codebook stay
    # frozen, so the latent space, and any diffusion model trained on it, stays valid: this is how
    # Stable Diffusion's VAE decoders were improved. The loaded scaling factor is kept, not re-measured.
    decoder_only: bool = False


@dataclass(config=SECTION)
class Config(RunConfig):
    STAGE: ClassVar[str] = "autoencoder"

    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    latent_scale: LatentScaleConfig = field(default_factory=LatentScaleConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.model.pretrained is None:  # a pretrained model's factor is checked once it is loaded
            require_divisible_sizes(self.data, self.model.downsampling_factor, "model.downsampling_factor")
        if self.train.decoder_only and self.model.pretrained is None:
            raise ValueError("train.decoder_only needs model.pretrained: a new encoder frozen at random "
                             "would give the decoder nothing to learn from")
        if self.latent_scale.shift and self.model.kind == "vq":
            raise ValueError("latent_scale.shift is for KL only: VQModel's config has no shift_factor")


