"""Cross-attention that projects the prompt's keys and values once per generation, not once per step.

The prompt embeddings are the same at every denoising step, so the `to_k` / `to_v` projections of
the UNet's cross-attention layers give the same keys and values 20 or 50 times over; diffusers'
`AttnProcessor2_0` recomputes them at every call (it cannot know the text did not change). With
small latents these projections of 77 text tokens are a large share of the UNet's work. diffusers
has no processor that keeps them (its caching hooks, such as FasterCache, skip whole attention
computations and so change the images), hence this one, installed through the UNet's public
`set_attn_processor` and only for the length of one pipeline call:

    with text_keys_values_cached(unet):
        for t in timesteps: unet(latents, t, encoder_hidden_states=embeds)

The result is the same computation, so the images match diffusers' to float rounding.

On a CPU the cached attention itself is also computed as two matrix products and a softmax rather
than with `F.scaled_dot_product_attention`, whose fused CPU kernel is slower on the short
sequences of small latents (docs/benchmarks.md; the text keys are few, so the (positions x 77)
weights are small at any image size). On GPUs the fused kernel stays.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class TextKeyValueCacheProcessor(AttnProcessor2_0):
    """`AttnProcessor2_0`, except that cross-attention reuses the keys and values of the last text seen.

    The cache is keyed by the identity of the `encoder_hidden_states` tensor: the pipeline passes the
    same tensor object at every step. Self-attention, masks and the layer options the UNet's
    cross-attention does not use (group/spatial norms, q/k norms, residual inside the layer) go
    through the parent class unchanged.
    """

    def __init__(self):
        super().__init__()
        self.text: torch.Tensor | None = None
        self.keys_values: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        if not _is_plain_cross_attention(attn, hidden_states, encoder_hidden_states, attention_mask):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                    *args, **kwargs)
        if encoder_hidden_states is not self.text:
            self.text = encoder_hidden_states
            self.keys_values = (split_heads(attn, attn.to_k(encoder_hidden_states)),
                                split_heads(attn, attn.to_v(encoder_hidden_states)))
        key, value = self.keys_values
        query = split_heads(attn, attn.to_q(hidden_states))
        if query.device.type == "cpu":
            weights = torch.softmax(query @ key.transpose(-1, -2) * attn.scale, dim=-1)
            out = weights @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False,
                                                 scale=attn.scale)
        batch, heads, length, head_dim = out.shape
        out = out.transpose(1, 2).reshape(batch, length, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))  # linear projection, dropout
        return out / attn.rescale_output_factor


def _is_plain_cross_attention(attn: Attention, hidden_states, encoder_hidden_states, attention_mask) -> bool:
    return (encoder_hidden_states is not None and attention_mask is None and hidden_states.ndim == 3
            and attn.spatial_norm is None and attn.group_norm is None and not attn.norm_cross
            and attn.norm_q is None and attn.norm_k is None and not attn.residual_connection)


def split_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim)."""
    batch, tokens, width = x.shape
    return x.view(batch, tokens, attn.heads, width // attn.heads).transpose(1, 2)


@contextmanager
def text_keys_values_cached(unet):
    """Install a fresh cache in every attention layer of `unet`; put the old processors back after."""
    previous = unet.attn_processors
    if not all(type(processor) is AttnProcessor2_0 for processor in previous.values()):
        yield  # custom processors (LoRA, IP-adapter, ...) are the user's: leave them alone
        return
    unet.set_attn_processor({name: TextKeyValueCacheProcessor() for name in previous})
    try:
        yield
    finally:
        unet.set_attn_processor(previous)
