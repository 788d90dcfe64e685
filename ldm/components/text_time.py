"""SDXL's conditioning ("text_time"), as one tensor a prompt, and the size and crop "time ids".

An SDXL-style UNet (`addition_embed_type: text_time`) takes, besides the latents and the timestep:

    encoder_hidden_states   (B, 77, W)  the text encoders' penultimate hidden states, concatenated
    text_embeds             (B, P)      the last encoder's pooled, projected embedding
    time_ids                (B, 6)      original size (h, w), crop top-left (top, left), target size (h, w)

The two text parts travel through ldm as one tensor a prompt, the *packed* embedding: the pooled
embedding zero-padded to whole rows of width W and appended after the 77 token rows, (B, 77 + k, W).
Then everything that handles prompt embeddings (the latent cache, caption dropout, guidance's
[negative; positive] batch, every walk's lerp, row indexing and concatenation) handles the pooled
embedding with them, and nothing needs a second code path; `unet_inputs` unpacks it where the UNet
is called. For an SD 1.x/2.x UNet the embedding is the hidden states as before, passed as they are.

Time ids are not text: they come from each training image's size and crop (the latent cache stores
them) and, when sampling, from the image size asked for (original = target, no crop, as diffusers'
StableDiffusionXLPipeline defaults them).
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel

TEXT_TIME = "text_time"  # diffusers' addition_embed_type of SDXL's UNet
TIME_IDS = 6  # original (h, w), crop (top, left), target (h, w)


def is_text_time(unet: UNet2DConditionModel) -> bool:
    config = getattr(unet, "config", None)  # a bare denoising function (tests) has none: not SDXL-style
    return config is not None and config.get("addition_embed_type") == TEXT_TIME


def pooled_width(unet: UNet2DConditionModel) -> int:
    """The pooled embedding's width the UNet takes (its added embedding less the time ids' part)."""
    config = unet.config
    return config.projection_class_embeddings_input_dim - TIME_IDS * config.addition_time_embed_dim


def pooled_rows(pooled: int, width: int) -> int:
    """Rows of `width` that a pooled embedding of `pooled` values takes in a packed embedding."""
    return math.ceil(pooled / width)


def pack(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(B, T, W) hidden states and (B, P) pooled -> (B, T + ceil(P / W), W)."""
    batch, _, width = hidden.shape
    rows = pooled_rows(pooled.shape[-1], width)
    padded = torch.nn.functional.pad(pooled, (0, rows * width - pooled.shape[-1]))
    return torch.cat([hidden, padded.reshape(batch, rows, width).to(hidden)], dim=1)


def unpack(packed: torch.Tensor, pooled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pack`'s inverse: (hidden states, pooled embedding of `pooled` values)."""
    rows = pooled_rows(pooled, packed.shape[-1])
    return packed[:, :-rows], packed[:, -rows:].flatten(1)[:, :pooled]


def time_ids(original_size: tuple[int, int], crop_top_left: tuple[int, int],
             target_size: tuple[int, int]) -> torch.Tensor:
    """(6,) SDXL's micro-conditioning: sizes as (height, width), the crop as (top, left), in pixels."""
    return torch.tensor([*original_size, *crop_top_left, *target_size], dtype=torch.float32)


def unet_inputs(unet: UNet2DConditionModel, embeddings: torch.Tensor,
                times: torch.Tensor | None = None) -> dict:
    """The UNet's conditioning keyword arguments from (packed) embeddings and (B, 6) time ids."""
    if not is_text_time(unet):
        return {"encoder_hidden_states": embeddings}
    if times is None:
        raise ValueError("an SDXL-style (text_time) UNet needs time ids")
    hidden, pooled = unpack(embeddings, pooled_width(unet))
    return {"encoder_hidden_states": hidden,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": times.to(hidden)}}
