"""The CLIP LightningModule, and the CLIP it trains.

The model is transformers' `CLIPModel` (a ViT and a text transformer, sizes from the config), or,
with `model.vision.kind: resnet`, transformers' `VisionTextDualEncoderModel` with the same CLIP text
transformer and a small ResNet image tower (ldm/components/conv_vision.py), which learns the shapes
in small images far faster than a small ViT does. The loss is CLIP's symmetric contrastive loss with
a learned temperature, plus hard negatives when the config lists groups of interchangeable words
(`losses.py`). Images go in as the data layer gives them, in [-1, 1] at data.resolution.

Validation logs image-to-text and text-to-image top-1 retrieval within each batch and, when the
data has attribute columns (the shapes data does), zero-shot colour / shape / position accuracy
from prompts like "a red circle in the top left"."""

from __future__ import annotations

import dataclasses
import math
import random

import lightning as L
import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTextConfig,
    CLIPTokenizer,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)

from ldm.components.clip import ClipModel
from ldm.components.conv_vision import ConvVisionConfig
from ldm.data.labelled import load_labelled_images
from ldm.metrics.clip_accuracy import (
    retrieval_top1,
    shapes_zero_shot,
    shapes_zero_shot_prompts,
)
from ldm.stages.clip.config import VIT, Config
from ldm.stages.clip.losses import WordSwapper, contrastive_loss
from ldm.stages.clip.tokenizer import prepare_tokenizer
from ldm.stages.trainer import lr_scheduler


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
    """The CLIP is built in `configure_model`, once the processes are set up: its vocabulary is the
    tokenizer's, which the main process learns and sends to the others (ldm.stages.clip.tokenizer)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.tokenizer: CLIPTokenizer | None = None
        self.clip: ClipModel | None = None
        self.swapper = WordSwapper(cfg.hard_negatives.words, seed=cfg.train.seed)
        self.zero_shot = None  # (pixels, labels), loaded in setup when configured

    def configure_model(self) -> None:
        if self.clip is not None:
            return
        self.tokenizer = prepare_tokenizer(self.cfg, self.trainer.strategy)
        # The same initial weights in every process, whatever each one's training noise stream.
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.train.seed)
            self.clip = build_clip(self.cfg, self.tokenizer)

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
        # The swapped words are drawn from the seed, the step and the process: the same after a
        # resume as in an uninterrupted run, and different in each process.
        rng = random.Random(f"{self.cfg.train.seed}-{self.global_step}-{self.global_rank}-{self.training}")
        tokens = self.tokenize(captions + self.swapper.negatives(captions, rng))
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


