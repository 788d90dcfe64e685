"""Using a CLIP model to score: image and text features, retrieval, zero-shot attributes.

These work with the CLIP that stage 1b exports to RUN/clip (a CLIPModel, or a
VisionTextDualEncoderModel with a ResNet image tower) and with a pretrained one (e.g. a local copy
of openai/clip-vit-base-patch32). Images come in as the data layer gives them, tensors in
[-1, 1]; `clip_image_features` resizes and normalises them the way the model's processor says
(RUN/clip's processor uses mean = std = 0.5, i.e. exactly the [-1, 1] pixels the stage trained on;
OpenAI's CLIP uses its own mean and std at 224 px).
"""

from __future__ import annotations

import itertools
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

from ldm.components import conv_vision  # noqa: F401  (registers the ResNet tower with AutoModel
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import make_sample
from ldm.data.shapes.generator import COLOURS, POSITIONS, SHAPES
from ldm.data.sources import load_source

# The contrastive image-text models ldm reads: both have get_image_features / get_text_features.
ClipModel = CLIPModel | VisionTextDualEncoderModel


def load_clip(path: str | Path, dtype: torch.dtype | None = None) -> tuple[ClipModel, CLIPProcessor]:
    """RUN/clip (or any CLIP folder with processor files): the model frozen in eval mode."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise LdmError(f"no CLIP model in {path}: config.json is missing (train stage 1b first)")
    try:
        # Built from its parts: CLIPProcessor.from_pretrained would pick transformers' torchvision
        # image processor, warn that torchvision is missing and fall back to this PIL one anyway.
        processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(path),
                                  tokenizer=CLIPTokenizer.from_pretrained(path))
        model = AutoModel.from_pretrained(path, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise LdmError(f"cannot load the CLIP model in {path}: {str(err).splitlines()[0]}") from None
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


def retrieval_top1(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[float, float]:
    """Within one batch of pairs: how often an image's best caption is its own, and the reverse."""
    similarity = image_features @ text_features.T
    target = torch.arange(len(similarity), device=similarity.device)
    image_to_text = (similarity.argmax(dim=1) == target).float().mean().item()
    text_to_image = (similarity.argmax(dim=0) == target).float().mean().item()
    return image_to_text, text_to_image


def zero_shot_attributes(image_features: torch.Tensor, text_features: torch.Tensor,
                         attribute_values: dict[str, list[str]],
                         labels: dict[str, list[str]], logit_scale: float = 100.0) -> dict[str, float]:
    """Zero-shot accuracy for each attribute, from prompts for every combination of values.

    `text_features` holds one prompt per combination of the attributes' values, in the order of
    `itertools.product(*attribute_values.values())` (e.g. "a red circle in the top left", ...).
    Each image's softmax over those prompts is summed over the other attributes, and the most
    probable value of each attribute is compared with `labels[attribute]` (one label per image).
    `logit_scale` is the inverse temperature of that softmax: the model's own `logit_scale.exp()`.
    """
    sizes = [len(values) for values in attribute_values.values()]
    probs = (image_features @ text_features.T * logit_scale).softmax(dim=-1)
    probs = probs.view(len(image_features), *sizes)
    scores = {}
    for axis, (name, values) in enumerate(attribute_values.items()):
        others = [d + 1 for d in range(len(sizes)) if d != axis]
        marginal = probs.sum(dim=others) if others else probs
        predicted = [values[i] for i in marginal.argmax(dim=-1).tolist()]
        scores[name] = sum(p == t for p, t in zip(predicted, labels[name])) / len(predicted)
    return scores


def batched_retrieval_top1(clip: ClipModel, tokenizer, pixels: torch.Tensor, captions: list[str],
                           batch_size: int = 64, processor: CLIPProcessor | None = None
                           ) -> tuple[float, float]:
    """Image-to-text and text-to-image top-1, averaged over the full batches of `batch_size` pairs."""
    if len(captions) < batch_size:
        raise LdmError(f"retrieval in batches of {batch_size} needs at least {batch_size} images, "
                       f"got {len(captions)}")
    scores = []
    for start in range(0, len(captions) - batch_size + 1, batch_size):
        images = clip_image_features(clip, pixels[start:start + batch_size], processor)
        texts = clip_text_features(clip, tokenizer, captions[start:start + batch_size])
        scores.append(retrieval_top1(images, texts))
    return tuple(sum(column) / len(scores) for column in zip(*scores))


def shapes_zero_shot(clip: ClipModel, tokenizer, pixels: torch.Tensor, labels: dict[str, list[str]],
                     processor: CLIPProcessor | None = None, batch_size: int = 64) -> dict[str, float]:
    """Zero-shot colour, shape and position accuracy on shapes images with their attribute labels."""
    attributes, prompts = shapes_zero_shot_prompts()
    images = torch.cat([clip_image_features(clip, chunk, processor) for chunk in pixels.split(batch_size)])
    texts = clip_text_features(clip, tokenizer, prompts)
    return zero_shot_attributes(images, texts, attributes, labels, clip.logit_scale.exp().item())


def shapes_zero_shot_prompts() -> tuple[dict[str, list[str]], list[str]]:
    """The shapes data's attributes and one prompt per combination, e.g. 'a red circle in the center'."""
    attributes = {"colour": list(COLOURS), "shape": list(SHAPES), "position": list(POSITIONS)}
    prompts = [f"a {colour} {shape} {position}"
               for colour, shape, position in itertools.product(*attributes.values())]
    return attributes, prompts


def load_labelled_images(data: DataConfig, columns: list[str], max_images: int | None = None,
                         ds=None) -> tuple[torch.Tensor, dict[str, list[str]]]:
    """Images of `data.split` as [-1, 1] tensors, with the values of `columns` (e.g. colour, shape).

    `ds` is the split when the caller has loaded it already (`load_source(data)`), to pick columns.
    """
    ds = load_source(data) if ds is None else ds
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise LdmError(f"split '{data.split}' of {data.source} has no '{missing[0]}' column, which "
                       "zero-shot evaluation needs (the shapes data has colour, shape and position)")
    if max_images is not None:
        ds = ds.select(range(min(max_images, len(ds))))
    rows = list(ds)
    pixels = torch.stack([make_sample(row, data, train=False)["pixel_values"] for row in rows])
    return pixels, {c: [row[c] for row in rows] for c in columns}
