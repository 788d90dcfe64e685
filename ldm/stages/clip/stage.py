"""Stage 1b: a small CLIP trained contrastively on the user's own image-caption pairs.

The tokenizer is learned from the training captions first (`ldm.components.text_encoder.train_tokenizer`), then a
small CLIP is trained with CLIP's symmetric contrastive loss and learned temperature: transformers'
`CLIPModel` (a ViT and a text transformer, sizes from the config), or, with
`model.vision.kind: resnet`, transformers' `VisionTextDualEncoderModel` with the same CLIP text
transformer and a small ResNet image tower (ldm/components/conv_vision.py), which learns the shapes in
small images far faster than a small ViT does. When the config lists groups of interchangeable
words (`hard_negatives.words`), each caption also brings hard negatives: itself with one word
swapped for another of its group (see ldm.stages.clip.losses), which makes the model learn every
attribute the groups name, not only the ones that tell a batch apart.
Images go in as the data layer gives them, in [-1, 1] at data.resolution.

Validation logs image-to-text and text-to-image top-1 retrieval within each batch and, when the
data has attribute columns (the shapes data does), zero-shot colour / shape / position accuracy
from prompts like "a red circle in the top left".

Export (RUN = run_dir), all with save_pretrained in safetensors:
    RUN/text_encoder/   CLIPTextModel: what the diffusion stage and the pipeline condition on
    RUN/tokenizer/      the CLIP tokenizer learned from the captions
    RUN/clip/           the whole model and a CLIPProcessor, for CLIP score and walk metrics
                        (ldm.components.clip.load_clip reads either kind)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)

from ldm.components.clip import (
    ClipModel,
    load_labelled_images,
    retrieval_top1,
    shapes_zero_shot,
    shapes_zero_shot_prompts,
)
from ldm.components.conv_vision import ConvVisionConfig
from ldm.components.text_encoder import (
    MAX_LENGTH,
    TEXT_ENCODER,
    TOKENIZER,
    train_tokenizer,
)
from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible
from ldm.data.sources import load_source
from ldm.stages.clip.losses import WordSwapper, contrastive_loss
from ldm.stages.trainer import RunConfig, fit, lr_scheduler, resolve_checkpoint

CLIP = "clip"
# Where this stage's checkpoints and logs go. Not RUN/clip, as for other stages (RUN/<stage>):
# that name is the full model's export, which is replaced whole when the stage ends.
TRAINING_DIR = "clip_training"
TOKENIZER_CAPTIONS = 100_000  # captions read to learn the tokenizer (streamed data has no end)
# Image towers (model.vision.kind). VIT is CLIPModel's own; RESNET, see ldm/components/conv_vision.py.
VIT, RESNET = "vit", "resnet"
VISION_KINDS = (VIT, RESNET)


@dataclass
class TowerConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")


@dataclass
class VisionTowerConfig(TowerConfig):
    kind: str = VIT
    # ViT sizes (kind: vit)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    patch_size: int = 4
    # ResNet sizes (kind: resnet): stem width, then one width and block count per stage; every
    # stage after the first halves the resolution, as does the stem (twice).
    embedding_size: int = 32
    hidden_sizes: list[int] = field(default_factory=lambda: [32, 64, 128])
    depths: list[int] = field(default_factory=lambda: [1, 1, 1])

    def __post_init__(self):
        if self.kind not in VISION_KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {', '.join(VISION_KINDS)}")
        if self.kind == VIT:
            super().__post_init__()
        elif len(self.hidden_sizes) != len(self.depths) or not self.depths:
            raise ValueError(f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must name the "
                             "same number of stages, at least one")


@dataclass
class TextTowerConfig(TowerConfig):
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512


@dataclass
class ClipModelConfig:
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    projection_dim: int = 128
    # ln(1/0.07), CLIP's initial temperature; learned from there, capped at max_logit_scale.
    logit_scale_init: float = 2.6592
    max_logit_scale: float = 100.0  # CLIP clips exp(logit_scale) at 100 to keep training stable


@dataclass
class TokenizerConfig:
    vocab_size: int = 1000
    max_length: int = MAX_LENGTH  # prompts are padded / cut to this many tokens


@dataclass
class ValidationConfig:
    # A split of data.source with attribute columns (colour, shape, position), e.g. the shapes
    # data's held-out "test" split; null skips zero-shot evaluation.
    zero_shot_split: str | None = None
    zero_shot_images: int = 256


@dataclass
class HardNegativesConfig:
    # Groups of interchangeable words or phrases, e.g. [[circle, square, triangle], [red, green]]:
    # each caption gets one negative per group it mentions, with that word swapped. Empty: none.
    words: list[list[str]] = field(default_factory=list)


@dataclass
class Config(RunConfig):
    STAGE: ClassVar[str] = CLIP

    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    hard_negatives: HardNegativesConfig = field(default_factory=HardNegativesConfig)

    @property
    def stage_dir(self) -> Path:
        """RUN/clip_training: checkpoints and logs, kept apart from the RUN/clip export."""
        return Path(self.run_dir) / TRAINING_DIR


def text_config(cfg: Config, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """The text tower's config for the sizes in `cfg.model.text`, tied to the tokenizer's ids."""
    m = cfg.model
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=m.text.hidden_size,
                          num_hidden_layers=m.text.num_layers, num_attention_heads=m.text.num_heads,
                          intermediate_size=m.text.intermediate_size,
                          max_position_embeddings=cfg.tokenizer.max_length,
                          projection_dim=m.projection_dim, hidden_act="gelu",
                          # The pooled text feature is read at the end token: its id must be the tokenizer's.
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def build_clip(cfg: Config, tokenizer: CLIPTokenizer) -> ClipModel:
    """A freshly initialised CLIP of the configured kind and sizes."""
    m, text = cfg.model, text_config(cfg, tokenizer)
    if m.vision.kind == VIT:
        vision = dict(hidden_size=m.vision.hidden_size, num_hidden_layers=m.vision.num_layers,
                      num_attention_heads=m.vision.num_heads, intermediate_size=m.vision.intermediate_size,
                      image_size=cfg.data.resolution, patch_size=m.vision.patch_size,
                      projection_dim=m.projection_dim, hidden_act="gelu")
        return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision,
                                    projection_dim=m.projection_dim, logit_scale_init_value=m.logit_scale_init))
    vision = ConvVisionConfig(embedding_size=m.vision.embedding_size, hidden_sizes=m.vision.hidden_sizes,
                              depths=m.vision.depths, layer_type="basic", image_size=cfg.data.resolution)
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        vision, text, projection_dim=m.projection_dim, logit_scale_init_value=m.logit_scale_init)
    return VisionTextDualEncoderModel(config)


def image_processor(resolution: int) -> CLIPImageProcessorPil:
    """Maps 0-255 images to [-1, 1] (mean = std = 0.5) at `resolution`: what the model trained on.

    The PIL backend, because transformers' default one needs torchvision.
    """
    return CLIPImageProcessorPil(size={"shortest_edge": resolution},
                                 crop_size={"height": resolution, "width": resolution},
                                 image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


class ClipModule(L.LightningModule):
    def __init__(self, cfg: Config, tokenizer: CLIPTokenizer):
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.clip = build_clip(cfg, tokenizer)
        self.swapper = WordSwapper(cfg.hard_negatives.words, seed=cfg.train.seed)
        self.zero_shot = None  # (pixels, labels), loaded in setup when configured

    def setup(self, stage: str) -> None:
        split = self.cfg.validation.zero_shot_split
        if split is not None and self.zero_shot is None:
            data = dataclasses.replace(self.cfg.data, split=split, streaming=False, max_samples=None)
            attributes, _ = shapes_zero_shot_prompts()
            self.zero_shot = load_labelled_images(data, list(attributes),
                                                  self.cfg.validation.zero_shot_images)

    def tokenize(self, captions: list[str]) -> dict:
        return self.tokenizer(captions, padding=True, truncation=True,
                              max_length=self.cfg.tokenizer.max_length, return_tensors="pt").to(self.device)

    def forward(self, batch: dict):
        """The CLIP's output for the batch's images against its captions, then their hard negatives.

        `logits_per_image` is (B, B + N) and `text_embeds` (B + N, dim); the loss is left to
        `contrastive_loss`, since transformers' own needs one caption per image and no more.
        """
        captions = list(batch["caption"])
        tokens = self.tokenize(captions + self.swapper.negatives(captions))
        return self.clip(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                         pixel_values=batch["pixel_values"])

    def training_step(self, batch: dict, batch_idx: int):
        loss = contrastive_loss(self(batch).logits_per_image)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.clip.logit_scale.exp())
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # CLIP's cap on the learned temperature; transformers leaves logit_scale unbounded.
        with torch.no_grad():
            self.clip.logit_scale.clamp_(0, math.log(self.cfg.model.max_logit_scale))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch)
        size = len(batch["caption"])
        # Retrieval among the batch's own captions; the hard negatives count only in the loss.
        image_to_text, text_to_image = retrieval_top1(out.image_embeds, out.text_embeds[:size])
        self.log("val/loss", contrastive_loss(out.logits_per_image), batch_size=size, sync_dist=True)
        self.log("val/image_to_text_top1", image_to_text, batch_size=size, sync_dist=True, prog_bar=True)
        self.log("val/text_to_image_top1", text_to_image, batch_size=size, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.zero_shot is None:
            return
        for name, value in self.zero_shot_accuracy().items():
            self.log(f"val/zero_shot_{name}", value, prog_bar=name != "position", sync_dist=True)

    def zero_shot_accuracy(self) -> dict[str, float]:
        pixels, labels = self.zero_shot
        return shapes_zero_shot(self.clip, self.tokenizer, pixels, labels,
                                batch_size=self.cfg.data.batch_size)

    def configure_optimizers(self):
        train = self.cfg.train
        # No weight decay on biases, norms, embeddings and the temperature, as in CLIP.
        decay = [p for n, p in self.clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        rest = [p for n, p in self.clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=train.lr)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler(optimizer, train)}


def caption_iterator(data: DataConfig):
    """Every training caption (each of a list of captions), for learning the tokenizer."""
    ds = load_source(data)
    column = ds.select_columns([data.caption_column])
    for i, row in enumerate(column):
        if i >= TOKENIZER_CAPTIONS:
            return
        value = row[data.caption_column]
        for text in value if isinstance(value, (list, tuple)) else [value]:
            if text:
                yield str(text)


def prepare_tokenizer(cfg: Config) -> CLIPTokenizer:
    """The run's tokenizer: learned from the captions, or the one saved when this run began."""
    saved = cfg.stage_dir / TOKENIZER
    if cfg.train.ckpt_path is not None and saved.is_dir():
        return CLIPTokenizer.from_pretrained(saved)
    tokenizer = train_tokenizer(caption_iterator(cfg.data), cfg.tokenizer.vocab_size,
                                model_max_length=cfg.tokenizer.max_length)
    save_tokenizer(tokenizer, saved)
    return tokenizer


@rank_zero_only
def save_tokenizer(tokenizer: CLIPTokenizer, folder: Path) -> None:
    with atomic_folder(folder) as tmp:
        tokenizer.save_pretrained(tmp)


def export(clip: ClipModel, tokenizer: CLIPTokenizer, run_dir: str | Path, resolution: int) -> None:
    """RUN/text_encoder, RUN/tokenizer and RUN/clip, each written whole or not at all."""
    run_dir = Path(run_dir)
    clip = clip.cpu().eval()
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    with atomic_folder(run_dir / TEXT_ENCODER) as tmp:
        text_encoder.save_pretrained(tmp, safe_serialization=True)
    with atomic_folder(run_dir / TOKENIZER) as tmp:
        tokenizer.save_pretrained(tmp)
    with atomic_folder(run_dir / CLIP) as tmp:
        clip.save_pretrained(tmp, safe_serialization=True)
        CLIPProcessor(image_processor=image_processor(resolution), tokenizer=tokenizer).save_pretrained(tmp)


def check(cfg: Config) -> None:
    """Mistakes that can be known before any work."""
    if cfg.model.vision.kind == VIT:
        require_divisible(cfg.data.resolution, cfg.model.vision.patch_size, "model.vision.patch_size")
    if cfg.validation.zero_shot_split is not None and cfg.data.split == cfg.validation.zero_shot_split:
        raise LdmError(f"validation.zero_shot_split={cfg.validation.zero_shot_split!r} is the training "
                       "split: zero-shot accuracy must be measured on images the model never saw")


def train(cfg: Config) -> ClipModel:
    check(cfg)
    resolve_checkpoint(cfg)  # fails now, not after the tokenizer, when the run_dir holds a run
    tokenizer = prepare_tokenizer(cfg)
    module = ClipModule(cfg, tokenizer)
    trainer = fit(cfg, module, ImageCaptionDataModule(cfg.data))
    if trainer.is_global_zero:
        export(module.clip, tokenizer, cfg.run_dir, cfg.data.resolution)
    return module.clip
