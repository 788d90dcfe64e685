"""The CLIP stage's config: the two towers' sizes, the tokenizer, zero-shot validation and hard negatives."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import ClassVar

from pydantic.dataclasses import dataclass

from ldm.components.text_encoder import MAX_LENGTH
from ldm.core import layout
from ldm.core.config import SECTION, Count
from ldm.data.datamodule import require_divisible_sizes
from ldm.stages.run_config import RunConfig

# Image towers (model.vision.kind). VIT is CLIPModel's own; RESNET, see ldm/components/conv_vision.py.
VIT, RESNET = "vit", "resnet"
VISION_KINDS = (VIT, RESNET)


@dataclass(config=SECTION)
class TowerConfig:
    hidden_size: Count
    num_layers: Count
    num_heads: Count
    intermediate_size: Count

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")


@dataclass(config=SECTION)
class VisionTowerConfig(TowerConfig):
    kind: str = VIT
    # ViT sizes (kind: vit)
    hidden_size: Count = 128
    num_layers: Count = 4
    num_heads: Count = 4
    intermediate_size: Count = 512
    patch_size: Count = 4
    # ResNet sizes (kind: resnet): stem width, then one width and block count per stage; every
    # stage after the first halves the resolution, as does the stem (twice).
    embedding_size: Count = 32
    hidden_sizes: list[Count] = field(default_factory=lambda: [32, 64, 128])
    depths: list[Count] = field(default_factory=lambda: [1, 1, 1])

    def __post_init__(self):
        if self.kind not in VISION_KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {', '.join(VISION_KINDS)}")
        if self.kind == VIT:
            super().__post_init__()
        elif len(self.hidden_sizes) != len(self.depths) or not self.depths:
            raise ValueError(f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must name the "
                             "same number of stages, at least one")


@dataclass(config=SECTION)
class TextTowerConfig(TowerConfig):
    hidden_size: Count = 128
    num_layers: Count = 2
    num_heads: Count = 4
    intermediate_size: Count = 512


@dataclass(config=SECTION)
class ClipModelConfig:
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    projection_dim: Count = 128
    # ln(1/0.07), CLIP's initial temperature; learned from there, capped at max_logit_scale.
    logit_scale_init: float = 2.6592
    max_logit_scale: float = 100.0  # CLIP clips exp(logit_scale) at 100 to keep training stable


@dataclass(config=SECTION)
class TokenizerConfig:
    vocab_size: Count = 1000
    max_length: Count = MAX_LENGTH  # prompts are padded / cut to this many tokens


@dataclass(config=SECTION)
class ValidationConfig:
    # A split of data.source with attribute columns (colour, shape, position), e.g. the shapes
    # data's held-out "test" split; null skips zero-shot evaluation.
    zero_shot_split: str | None = None
    zero_shot_images: Count = 256


@dataclass(config=SECTION)
class HardNegativesConfig:
    # Groups of interchangeable words or phrases, e.g. [[circle, square, triangle], [red, green]]:
    # each caption gets one negative per group it mentions, with that word swapped. Empty: none.
    words: list[list[str]] = field(default_factory=list)


@dataclass(config=SECTION)
class Config(RunConfig):
    STAGE: ClassVar[str] = "clip"

    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    hard_negatives: HardNegativesConfig = field(default_factory=HardNegativesConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.model.vision.kind == VIT:
            require_divisible_sizes(self.data, self.model.vision.patch_size, "model.vision.patch_size")
            if self.data.buckets is not None:
                raise ValueError("data.buckets needs model.vision.kind: resnet (a ViT's position "
                                 "embeddings fix the size of its images)")
        split = self.validation.zero_shot_split
        if split is not None and self.data.split == split:
            raise ValueError(f"validation.zero_shot_split={split!r} is the training split: zero-shot "
                             "accuracy must be measured on images the model never saw")
        if self.train.optimizer != "adamw" or self.train.gradient_checkpointing:
            raise ValueError("train.optimizer and train.gradient_checkpointing are for the autoencoder and "
                             "diffusion stages: the CLIP stage trains a small model with AdamW")

    @property
    def stage_dir(self) -> Path:
        """RUN/clip_training: checkpoints and logs, kept apart from the RUN/clip export."""
        return Path(self.run_dir) / layout.CLIP_TRAINING


