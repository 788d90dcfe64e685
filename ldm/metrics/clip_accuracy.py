"""How well a CLIP matches images with captions: retrieval within batches of pairs, and zero-shot
attribute accuracy (on the shapes data: colour, shape and position read from prompts such as
"a red circle in the top left"). Stage 1b validates with these and `python -m benchmarks clip`
reports them."""

from __future__ import annotations

import itertools

import torch
from transformers import (
    CLIPProcessor,
)

from ldm.components.clip import ClipModel, clip_image_features, clip_text_features
from ldm.core.errors import LdmError
from ldm.data.shapes.generator import COLOURS, POSITIONS, SHAPES, plain_prompt


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
    prompts = [plain_prompt(colour, shape, position)
               for colour, shape, position in itertools.product(*attributes.values())]
    return attributes, prompts

