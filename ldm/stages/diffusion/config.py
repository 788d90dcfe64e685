"""The diffusion stage's config: where stages 1 and 1b are (or the pretrained pipeline to start
from), one section per part of the engine (`unet:`, `noise:`, `loss:`, `ema:`, `lora:`) and one for
the validation samples (`samples:`)."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from ldm.core.config import (
    SECTION,
    Count,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PromptChunks,
    require_divides,
)
from ldm.stages.run_config import RunConfig

# 1: no guidance; below 1 samples as 1 does (diffusers' pipelines), so it is refused rather than ignored
Guidance = Annotated[float, Field(ge=1)]


@dataclass(config=SECTION)
class UNetConfig:
    # A UNet folder (or a pipeline folder with unet/, or a hub id) to start from: only the UNet is
    # loaded, and the sizes below are then ignored (they are the loaded UNet's).
    pretrained: str | None = None
    block_out_channels: list[Count] = field(default_factory=lambda: [320, 640, 1280, 1280])
    down_block_types: list[str] = field(default_factory=lambda: [
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
    up_block_types: list[str] = field(default_factory=lambda: [
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    layers_per_block: Count = 2
    # Named as diffusers names it; UNet2DConditionModel uses it as the number of attention heads.
    # One for every level, or a list with one per level (SDXL: [5, 10, 20]).
    attention_head_dim: Count | list[Count] = 8
    transformer_layers_per_block: Count | list[Count] = 1  # one, or one per level (SDXL: [1, 2, 10])
    norm_num_groups: Count = 32
    # Linear (not 1x1 convolution) projections into and out of the transformer blocks, as SD 2.x and
    # SDXL have them; null: diffusers' default (false).
    use_linear_projection: bool | None = None
    # "text": the prompt also enters through the time embedding, pooled from its token embeddings by
    # attention (diffusers' TextTimeEmbedding, as in Kandinsky and unCLIP), so every ResNet block sees
    # it, not only the blocks that cross-attend. For a small UNet that cross-attends only at its
    # lowest resolution this pays many times its cost (docs/benchmarks.md, session 12). Plain
    # diffusers pipelines load and run such a UNet unchanged.
    # "text_time": an SDXL-style UNet, conditioned on two text encoders' hidden states, the pooled
    # projection of the last, and each image's original size and crop (ldm.components.text_time);
    # `text_encoder:` is then an SDXL-layout folder or a CLIP-stage run (ldm.components.dual_text_encoder).
    addition_embed_type: Literal["text", "text_time"] | None = None
    addition_embed_type_num_heads: Count = 64  # heads of "text"'s attention pooling (diffusers' name)
    addition_time_embed_dim: Count = 256  # "text_time": each of the 6 time ids' embedding width (SDXL: 256)

    def __post_init__(self):
        if not len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types):
            raise ValueError("unet.block_out_channels, unet.down_block_types and unet.up_block_types "
                             f"must have the same length, got {len(self.block_out_channels)}, "
                             f"{len(self.down_block_types)} and {len(self.up_block_types)}")
        require_divides(self.norm_num_groups, self.block_out_channels, "unet.norm_num_groups",
                        "unet.block_out_channels")
        for key in ("attention_head_dim", "transformer_layers_per_block"):
            value = getattr(self, key)
            if isinstance(value, list) and len(value) != len(self.block_out_channels):
                raise ValueError(f"unet.{key} must be one number or one per level ({len(self.block_out_channels)}), "
                                 f"got {len(value)}")


@dataclass(config=SECTION)
class NoiseConfig:
    num_train_timesteps: Count = 1000
    # "squaredcos_cap_v2" is the cosine schedule of Nichol & Dhariwal (beta_start/end unused).
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: Positive = 0.00085
    beta_end: Positive = 0.012
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps Are Flawed"): the betas
    # rescaled (diffusers' `rescale_betas_zero_snr`) so that the last step is pure noise (SNR 0), as
    # sampling starts from; the model then learns to set an image's overall brightness, so samples
    # can be really dark or bright. Needs v_prediction; the export samples with trailing timesteps.
    zero_terminal_snr: bool = False
    # Guidance rescale (the paper's section 3.4, diffusers' `guidance_rescale`): 0 is plain guidance.
    # null: 0.7 with zero_terminal_snr (the paper's value), else 0. Saved in the export's scheduler
    # config, which `ldm generate` and the validation grids read.
    guidance_rescale: Annotated[float, Field(ge=0, le=1)] | None = None

    def __post_init__(self):
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError("noise.zero_terminal_snr needs noise.prediction_type: v_prediction (at SNR 0 the "
                             "noisy latent is pure noise, so epsilon-prediction learns nothing there)")

    @property
    def sampling_guidance_rescale(self) -> float:
        """The guidance rescale the export samples with."""
        if self.guidance_rescale is not None:
            return self.guidance_rescale
        return 0.7 if self.zero_terminal_snr else 0.0


@dataclass(config=SECTION)
class LossConfig:
    snr_gamma: Positive | None = 5.0  # min-SNR weighting; null trains on the plain MSE
    noise_offset: NonNegative = 0.0
    # Weight of Smooth Diffusion's step-wise variation regulariser (ldm/stages/diffusion/
    # smoothness_loss.py): the output moves in proportion to the noise's move, for smoother walks.
    # 0: off (the default: it costs about 2x a step, and has not yet been shown to pay here, see
    # docs/benchmarks.md); the paper trains with 1.
    smoothness: Annotated[float, Field(ge=0, le=100)] = 0.0
    # With data.mask: the weight of the masked-out part of each image (OneTrainer's "unmasked
    # weight"): each latent pixel weighs mask_floor + (1 - mask_floor) * mask. 0 trains on the mask only.
    mask_floor: Annotated[float, Field(ge=0, le=1)] = 0.0


@dataclass(config=SECTION)
class EmaConfig:
    enabled: bool = True
    decay: Fraction = 0.9999  # the ceiling; with warmup the decay grows towards it as 1 - (1 + step)^-power
    warmup: bool = True
    power: Positive = 2 / 3


# The UNet's attention projections (self- and cross-attention), as diffusers' LoRA script targets.
UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # CLIP's attention projections


# The adapter kinds, all through peft: LoRA (two low-rank factors), DoRA (LoRA whose update is
# split into a direction and a trained magnitude per output, Liu et al. 2024), LoHa (the Hadamard
# product of two low-rank products) and LoKr (a Kronecker product), the last two from LyCORIS.
AdapterKind = Literal["lora", "dora", "loha", "lokr"]
LYCORIS_KINDS = ("loha", "lokr")  # exported as a peft adapter folder: diffusers' LoRA loader cannot read them
LYCORIS_OPTIONS = ("rank_dropout", "module_dropout")  # LoHa's and LoKr's own dropouts
LOKR_OPTIONS = ("decompose_both", "decompose_factor")


@dataclass(config=SECTION)
class LoraConfig:
    """Train adapters (peft's) instead of the UNet's weights; needs a pretrained UNet. `kind` picks
    which; the options of one kind are refused with another, so that a setting never goes unused."""

    kind: AdapterKind = "lora"
    rank: Count = 8
    alpha: Positive | None = None  # the adapters' output is scaled by alpha / rank; null: alpha = rank
    dropout: Fraction = 0.0  # lora and dora: dropout on the adapter's input
    # loha and lokr: the share of the rank's components (rank_dropout) or of whole adapted layers
    # (module_dropout) left out at each training step; null: 0.
    rank_dropout: Fraction | None = None
    module_dropout: Fraction | None = None
    # lokr: also split the smaller Kronecker factor into two low-rank ones (decompose_both), and the
    # size of the first factor's dimensions (decompose_factor; -1: as near the square root as divides).
    decompose_both: bool | None = None
    decompose_factor: Annotated[int, Field(ge=-1, le=4096)] | None = None
    target_modules: list[str] = field(default_factory=lambda: list(UNET_LORA_TARGETS))
    train_text_encoder: bool = False  # also adapters on the text encoder's attention (needs cache: false)
    text_encoder_target_modules: list[str] = field(default_factory=lambda: list(TEXT_ENCODER_LORA_TARGETS))

    def __post_init__(self):
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module (e.g. to_q)")
        if self.decompose_factor == 0:
            raise ValueError("lora.decompose_factor must be -1 (automatic) or a factor of at least 1, got 0")
        lycoris = self.kind in LYCORIS_KINDS
        if lycoris and self.dropout:
            raise ValueError(f"lora.dropout is for lora.kind lora and dora; {self.kind} takes lora.rank_dropout "
                             "and lora.module_dropout")
        for option in (() if lycoris else LYCORIS_OPTIONS) + (() if self.kind == "lokr" else LOKR_OPTIONS):
            if getattr(self, option) is not None:
                owner = "lokr" if option in LOKR_OPTIONS else "loha and lokr"
                raise ValueError(f"lora.{option} is an option of lora.kind {owner}, not of {self.kind}")
        if lycoris and self.train_text_encoder:
            raise ValueError(f"lora.train_text_encoder works with lora.kind lora and dora (whose export "
                             f"diffusers loads), not with {self.kind}")


Share = Annotated[float, Field(ge=0, le=1)]


@dataclass(config=SECTION)
class InpaintingConfig:
    """Train the inpainting layout (SD-inpainting's): the UNet also takes a mask and the masked
    image's latents (2C+1 input channels), with random masks drawn at every step
    (`ldm.data.random_masks`); each kind drawn with probability proportional to its share."""

    box: Share = 0.4
    strokes: Share = 0.4
    whole: Share = 0.2  # the whole image masked: the model also learns to draw from the text alone

    def __post_init__(self):
        if self.box + self.strokes + self.whole <= 0:
            raise ValueError("inpainting: at least one of box, strokes and whole must have a share above 0")

    @property
    def shares(self) -> dict[str, float]:
        return {"box": self.box, "strokes": self.strokes, "whole": self.whole}


@dataclass(config=SECTION)
class TextualInversionConfig:
    """Learn a new word as an embedding (textual inversion, Gal et al. 2022; diffusers'
    examples/textual_inversion): only its vectors train, the UNet and the text encoder stay frozen.
    Needs a pretrained pipeline and cache: false (captions are encoded at every step)."""

    # The new word, e.g. "<pink>": the captions name it, and prompts then use it. Required (checked
    # below, so that a section given without it is one line naming the section).
    token: str | None = None
    initializer: str | None = None  # a word whose embedding the vectors start from; null: the vocabulary's mean
    vectors: Annotated[int, Field(ge=1, le=16)] = 1  # embedding vectors (tokens) the word stands for

    def __post_init__(self):
        if self.token is None:
            raise ValueError("textual_inversion: give token, the new word to learn (e.g. token: <pink>)")
        if not self.token.strip() or any(c.isspace() for c in self.token):
            raise ValueError(f"textual_inversion.token must be one word without spaces, got {self.token!r}")


@dataclass(config=SECTION)
class SamplesConfig:
    prompts: list[str] = field(default_factory=list)  # none: no sample grids
    seeds: list[NonNegativeInt] = field(default_factory=lambda: [0, 1, 2, 3])
    steps: Count = 20
    guidance_scale: Guidance = 4.0

    def __post_init__(self):
        if self.prompts and not self.seeds:
            raise ValueError("samples.seeds must name at least one seed")


@dataclass(config=SECTION, kw_only=True)
class Config(RunConfig):
    STAGE: ClassVar[str] = "diffusion"
    MASKED_LOSS: ClassVar[bool] = True
    PRIOR_PRESERVATION: ClassVar[bool] = True

    stage: str = "diffusion"
    # A diffusers pipeline folder (RUN/pipeline, a Stable Diffusion 1.x/2.x folder) or hub id to
    # start from: its UNet, autoencoder, text encoder, tokenizer and noise schedule. `vae:`,
    # `text_encoder:` and `noise:` override their part; `unet.pretrained` overrides the UNet.
    pretrained: str | None = None
    vae: str | None = None  # RUN/vae of stage 1 (or any AutoencoderKL / VQModel folder)
    text_encoder: str | None = None  # RUN of stage 1b (text_encoder/, tokenizer/), a pipeline or CLIP folder
    cache: bool = True  # false: encode images and captions at every step (streamed data)
    # Whether the machines of a multi-machine run see RUN on one file system (they build one latent
    # cache between them) or each its own disk (each builds its own); auto finds out
    # (ldm/data/cache_share.py).
    cache_shared_filesystem: bool | Literal["auto"] = "auto"
    caption_dropout: Fraction = 0.1  # share of captions replaced by "" to learn unconditional denoising
    # Windows of 75 tokens a caption may take, each encoded on its own and the embeddings
    # concatenated (ldm.components.prompt_tokens): 1 is CLIP's 77 tokens, a longer caption cut with a
    # warning; above 1 a longer caption is an error. Saved in the export for ldm generate / animate.
    prompt_chunks: PromptChunks = 1
    unet: UNetConfig = field(default_factory=UNetConfig)
    noise: NoiseConfig | None = None  # null: the pretrained pipeline's schedule, else the defaults
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    lora: LoraConfig | None = None  # null: train the UNet's own weights
    textual_inversion: TextualInversionConfig | None = None  # null: no new word; else only its embedding trains
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    # null: a text-to-image UNet. A section (`inpainting: {}` for the defaults): an inpainting UNet,
    # new or from a pretrained one (a text-to-image UNet's new input channels start at zero), exported
    # as a `StableDiffusionInpaintPipeline` folder (ldm/stages/diffusion/inpainting.py).
    inpainting: InpaintingConfig | None = None

    def __post_init__(self):
        super().__post_init__()
        for part in ("vae", "text_encoder"):
            if self.pretrained is None and getattr(self, part) is None:
                raise ValueError(f"{part}: say where the {part.replace('_', ' ')} is, or give `pretrained:` "
                                 "(a pipeline folder) to take it from")
        if self.lora is not None and self.unet_source is None:
            raise ValueError("lora: adapters train on top of pretrained weights: give `pretrained:` or "
                             "`unet.pretrained:`")
        if self.unet.addition_embed_type == "text_time" and not self.cache:
            raise ValueError("unet.addition_embed_type: text_time trains from the latent cache (cache: true), "
                             "which stores each image's original size and crop")
        if self.unet.addition_embed_type == "text_time" and self.inpainting is not None:
            raise ValueError("inpainting: an SDXL-style UNet (unet.addition_embed_type: text_time) does not train "
                             "the inpainting layout yet (SD 1.x/2.x-style UNets do)")
        if self.textual_inversion is not None:
            if self.unet_source is None:
                raise ValueError("textual_inversion: a new word is learned for pretrained weights: give "
                                 "`pretrained:` (a pipeline folder)")
            if self.lora is not None:
                raise ValueError("textual_inversion and lora: choose one (textual inversion trains only the "
                                 "new word's embedding)")
            if self.cache:
                raise ValueError("textual_inversion needs cache: false (the latent cache holds caption "
                                 "embeddings made before the new word exists)")
        if self.data.prior_preservation is not None and self.pretrained is None:
            raise ValueError("data.prior_preservation needs `pretrained:` (a pipeline folder): its class images "
                             "are made by the base pipeline, as it was before fine-tuning")
        if self.lora is not None and self.lora.train_text_encoder and self.cache:
            raise ValueError("lora.train_text_encoder needs cache: false (the latent cache holds caption "
                             "embeddings of the frozen text encoder)")

    @property
    def unet_source(self) -> str | None:
        """Where the UNet's starting weights come from (None: a new, randomly initialised UNet)."""
        return self.unet.pretrained or self.pretrained
