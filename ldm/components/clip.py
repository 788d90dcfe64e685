"""Using a CLIP model to score: image and text features, retrieval, zero-shot attributes.

These work with the CLIP that stage 1b exports to RUN/clip (a CLIPModel, or a
VisionTextDualEncoderModel with a ResNet image tower) and with a pretrained one (e.g. a local copy
of openai/clip-vit-base-patch32). Images come in as the data layer gives them, tensors in
[-1, 1]; `clip_image_features` resizes and normalises them the way the model's processor says
(RUN/clip's processor uses mean = std = 0.5, i.e. exactly the [-1, 1] pixels the stage trained on;
OpenAI's CLIP uses its own mean and std at 224 px).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    VisionTextDualEncoderModel,
)

from ldm.components import conv_vision  # noqa: F401  (registers the ResNet tower with AutoModel)
from ldm.core.errors import LdmError, first_line
from ldm.core.layout import MODEL_CONFIG
from ldm.core.trust import check_no_code

# The contrastive image-text models ldm reads: both have get_image_features / get_text_features.
ClipModel = CLIPModel | VisionTextDualEncoderModel


def load_clip(path: str | Path, dtype: torch.dtype | None = None) -> tuple[ClipModel, CLIPProcessor]:
    """RUN/clip (or any CLIP folder with processor files): the model frozen in eval mode."""
    path = Path(path)
    if not (path / MODEL_CONFIG).is_file():
        raise LdmError(f"no CLIP model in {path}: config.json is missing (train stage 1b first)")
    try:
        # Built from its parts: CLIPProcessor.from_pretrained would pick transformers' torchvision
        # image processor, warn that torchvision is missing and fall back to this PIL one anyway.
        processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(path),
                                  tokenizer=CLIPTokenizer.from_pretrained(path))
        model = AutoModel.from_pretrained(check_no_code(path), dtype=dtype, use_safetensors=True,
                                          trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise LdmError(f"cannot load the CLIP model in {path}: {first_line(err)}") from None
    if not isinstance(model, ClipModel):
        raise LdmError(f"{path} holds a {type(model).__name__}, not a CLIP image-text model")
    model.requires_grad_(False)
    return model.eval(), processor


def _normalise(clip: ClipModel, pixels: torch.Tensor, processor: CLIPProcessor | None) -> torch.Tensor:
    """[-1, 1] images -> the model's input: resized to its image size, its mean and std applied.

    Without a processor, mean = std = 0.5 (the [-1, 1] pixels as they are), as stage 1b trains.
    """
    size = clip.config.vision_config.image_size
    images = pixels.to(clip.device, clip.dtype)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True,
                               align_corners=False)
    if processor is None:
        return images
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(ip.image_std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return ((images + 1) / 2 - mean) / std


@torch.no_grad()
def clip_image_features(clip: ClipModel, pixels: torch.Tensor,
                        processor: CLIPProcessor | None = None) -> torch.Tensor:
    """Unit-length image embeddings (B, projection_dim) for images in [-1, 1] of any size."""
    inputs = _normalise(clip, pixels, processor)
    features = clip.get_image_features(pixel_values=inputs).pooler_output
    return F.normalize(features.float(), dim=-1)


@torch.no_grad()
def clip_text_features(clip: ClipModel, tokenizer, texts: list[str]) -> torch.Tensor:
    """Unit-length text embeddings (B, projection_dim); texts longer than the model are cut."""
    max_length = min(tokenizer.model_max_length, clip.config.text_config.max_position_embeddings)
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                       return_tensors="pt").to(clip.device)
    features = clip.get_text_features(input_ids=tokens["input_ids"],
                                      attention_mask=tokens["attention_mask"]).pooler_output
    return F.normalize(features.float(), dim=-1)
