"""Attention interpolation (AID: He et al., "AID: Attention Interpolation of Text-to-Image Diffusion",
NeurIPS 2024, training-free): an image between two others, made by the UNet's attention layers.

Rows of one UNet batch are either plain (the two endpoint images, and anything else) or mixes
`Mix(a, b, alpha)` of the endpoint rows a and b. In a mix row, while the interpolation is active:

- cross-attention is *inner* interpolated: its keys and values are the lerp of the endpoint rows'
  text keys and values, K = (1 - alpha) K_a + alpha K_b (and V alike);
- self-attention is *outer* interpolated and *fused*: the row attends to its own keys and values
  joined with each endpoint's, and the two results are mixed,
      (1 - alpha) Attn(Q, [K; K_a], [V; V_a]) + alpha Attn(Q, [K; K_b], [V; V_b]),
  so the image keeps borrowing the endpoints' features rather than drawing a third picture.

As in AID's code, the interpolation acts on the conditional rows only (the unconditional ones of
classifier-free guidance stay plain) and in the early steps only (`active_steps`), where the
layout forms; later steps refine each row with plain attention.

    with interpolated_attention(unet, rows, active_steps=10) as callback:
        pipe(..., callback_on_step_end=callback)

diffusers has no such processor (its processors attend one row to its own keys), so it is written
here, installed through the UNet's public `set_attn_processor` for the length of one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from ldm.sampling.attention_cache import split_heads


@dataclass(frozen=True)
class Mix:
    """A UNet batch row interpolated between rows `a` and `b` of the same batch, at `alpha`."""

    a: int
    b: int
    alpha: float


@dataclass
class _Plan:
    rows: Sequence[Mix | None]  # one per UNet batch row
    active: bool = True


class InterpolatedAttentionProcessor(AttnProcessor2_0):
    """`AttnProcessor2_0` for plain rows; AID's inner (cross) and fused outer (self) attention for
    the rows of `plan` that are mixes, while the plan is active."""

    def __init__(self, plan: _Plan):
        super().__init__()
        self.plan = plan

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        mixes = [(row, mix) for row, mix in enumerate(self.plan.rows) if mix is not None]
        if (not self.plan.active or not mixes or not _is_plain(attn, hidden_states, attention_mask)
                or len(self.plan.rows) != hidden_states.shape[0]):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                    *args, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = split_heads(attn, attn.to_q(hidden_states))
        key, value = split_heads(attn, attn.to_k(context)), split_heads(attn, attn.to_v(context))
        out = _attend(attn, query, key, value)
        rows = torch.tensor([row for row, _ in mixes], device=query.device)
        a = torch.tensor([mix.a for _, mix in mixes], device=query.device)
        b = torch.tensor([mix.b for _, mix in mixes], device=query.device)
        alpha = torch.tensor([mix.alpha for _, mix in mixes], dtype=query.dtype, device=query.device).view(-1, 1, 1, 1)
        q = query[rows]
        if encoder_hidden_states is not None:  # cross-attention: inner interpolation of the text's keys/values
            mixed = _attend(attn, q, torch.lerp(key[a], key[b], alpha), torch.lerp(value[a], value[b], alpha))
        else:  # self-attention: fused with each endpoint's, outer interpolation of the two results
            own_k, own_v = key[rows], value[rows]
            with_a = _attend(attn, q, torch.cat([own_k, key[a]], dim=2), torch.cat([own_v, value[a]], dim=2))
            with_b = _attend(attn, q, torch.cat([own_k, key[b]], dim=2), torch.cat([own_v, value[b]], dim=2))
            mixed = torch.lerp(with_a, with_b, alpha)
        out = out.index_copy(0, rows, mixed)
        batch, heads, length, head_dim = out.shape
        out = out.transpose(1, 2).reshape(batch, length, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout
        return out / attn.rescale_output_factor


def _attend(attn: Attention, query, key, value) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=attn.scale)


def _is_plain(attn: Attention, hidden_states, attention_mask) -> bool:
    """The layer options the UNet's transformer blocks do not use are left to the parent class."""
    return (attention_mask is None and hidden_states.ndim == 3 and attn.spatial_norm is None
            and attn.group_norm is None and not attn.norm_cross and attn.norm_q is None
            and attn.norm_k is None and not attn.residual_connection)


def guided_rows(mixes: Sequence[Mix | None], guided: bool) -> list[Mix | None]:
    """The rows of the UNet batch for image rows `mixes`: with guidance, the batch is [negative
    rows; positive rows] (`ldm.sampling.guidance`), and only the positive ones interpolate."""
    if not guided:
        return list(mixes)
    n = len(mixes)
    return [None] * n + [None if mix is None else Mix(mix.a + n, mix.b + n, mix.alpha) for mix in mixes]


@contextmanager
def interpolated_attention(unet, rows: Sequence[Mix | None], active_steps: int):
    """Install the interpolating processor in every attention layer of `unet` for the UNet batch
    `rows`; yields the pipeline callback that ends the interpolation after `active_steps` steps.
    The old processors are put back after."""
    plan = _Plan(rows, active=active_steps > 0)

    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        plan.active = step + 1 < active_steps
        return {}

    previous = unet.attn_processors
    unet.set_attn_processor({name: InterpolatedAttentionProcessor(plan) for name in previous})
    try:
        yield callback
    finally:
        unet.set_attn_processor(previous)
