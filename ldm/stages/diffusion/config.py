"""The diffusion stage's config: where stages 1 and 1b are, and one section per part of the engine
(`unet:`, `noise:`, `loss:`, `ema:`) and for the validation samples (`samples:`)."""

from __future__ import annotations

from dataclasses import field
from typing import ClassVar, Literal

from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, require_divides
from ldm.stages.trainer import RunConfig


@dataclass(config=SECTION)
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


@dataclass(config=SECTION)
class NoiseConfig:
    num_train_timesteps: int = 1000
    # "squaredcos_cap_v2" is the cosine schedule of Nichol & Dhariwal (beta_start/end unused).
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"


@dataclass(config=SECTION)
class LossConfig:
    snr_gamma: float | None = 5.0  # min-SNR weighting; null trains on the plain MSE
    noise_offset: float = 0.0


@dataclass(config=SECTION)
class EmaConfig:
    enabled: bool = True
    decay: float = 0.9999  # the ceiling; with warmup the decay grows towards it as 1 - (1 + step)^-power
    warmup: bool = True
    power: float = 2 / 3


@dataclass(config=SECTION)
class SamplesConfig:
    prompts: list[str] = field(default_factory=list)  # none: no sample grids
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    steps: int = 20
    guidance_scale: float = 4.0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"samples.steps must be at least 1, got {self.steps}")
        if self.prompts and not self.seeds:
            raise ValueError("samples.seeds must name at least one seed")


@dataclass(config=SECTION, kw_only=True)
class Config(RunConfig):
    STAGE: ClassVar[str] = "diffusion"

    stage: str = "diffusion"
    vae: str  # RUN/vae of stage 1 (or any folder an AutoencoderKL / VQModel loads from)
    text_encoder: str  # RUN of stage 1b (text_encoder/ + tokenizer/), a pipeline or a CLIP folder
    cache: bool = True  # false: encode images and captions at every step (streamed data)
    # Whether the machines of a multi-machine run see RUN on one file system (they build one latent
    # cache between them) or each its own disk (each builds its own); auto finds out
    # (ldm/data/cache_share.py).
    cache_shared_filesystem: bool | Literal["auto"] = "auto"
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
