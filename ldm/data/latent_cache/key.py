"""The cache key: a fingerprint of everything that decides a cache's content, so that the same inputs
find the same folder and any changed input gives a new one."""

from __future__ import annotations

import hashlib
import json

import datasets
import torch

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.dual_text_encoder import TextTimeConditioner
from ldm.components.text_encoder import TextConditioner
from ldm.core.config import to_dict
from ldm.data.config import DataConfig
from ldm.data.latent_cache.layout import CACHE_VERSION
from ldm.data.masks import mask_key

# The data settings that change a cache's pixels or captions (center_crop and random_flip cannot
# differ: a cache refuses random crops and flips).
CACHED_SETTINGS = ("source", "split", "image_column", "caption_column", "resolution", "max_samples",
                   "background", "max_pixels", "empty_captions")


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a model's config and weights: identical for the same model, whatever its path."""
    digest = hashlib.sha256(json.dumps(_plain(module.config), sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a tokenizer's vocabulary: what decides the token ids a caption becomes."""
    return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()


def _plain(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def fingerprint(ds: datasets.Dataset, cfg: DataConfig, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner) -> str:
    """The cache key: data, data settings (loss masks included), autoencoder and text encoder
    (tokenizer and the windows a caption may take included)."""
    parts = {
        "version": CACHE_VERSION,
        "data": ds._fingerprint,  # datasets' own hash of the files and every transform applied
        "settings": {key: getattr(cfg, key) for key in CACHED_SETTINGS},
        "buckets": to_dict(cfg.buckets) if cfg.buckets is not None else None,
        "autoencoder": module_digest(autoencoder.vae),
        "text_encoder": module_digest(conditioner.text_encoder),
        "tokenizer": tokenizer_digest(conditioner.tokenizer),
        "max_length": conditioner.tokenizer.model_max_length,
    }
    if conditioner.max_chunks > 1:  # only then: a one-window cache keeps the key it always had
        parts["prompt_chunks"] = conditioner.max_chunks
    if isinstance(conditioner, TextTimeConditioner):  # only then: an SD model's cache keeps its key
        parts["text_time"] = True  # packed embeddings (ldm.components.text_time), not SD's
        if conditioner.first is not None:
            parts["text_encoder_first"] = module_digest(conditioner.first[1])
            parts["tokenizer_first"] = tokenizer_digest(conditioner.first[0])
    masks = mask_key(ds, cfg)
    if masks is not None:  # only then: a cache without masks keeps the key it had before masks existed
        parts["masks"] = masks
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
