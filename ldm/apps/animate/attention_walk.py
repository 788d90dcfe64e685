"""Attention interpolation (AID, NeurIPS 2024, github QY-H00/attention-interpolation-diffusion) as a
walk's method: each frame between keyframes i and j is sampled in one UNet batch with the two
keyframes, and its attention layers interpolate theirs (`ldm.sampling.attention_interpolation`).

A frame at position u of its segment takes the coefficient alpha = the Beta(BETA_PRIOR) quantile of
u (AID's prior: its `generate_beta_tensor` spreads coefficients by the Beta inverse CDF), so that
frames gather mid-segment, where the picture changes most, and move less per frame near the
keyframes, whose features the fused self-attention holds on to. AID's default is Beta(3, 3) (and a
Bayesian fit of it to measured distances, which even motion does here without a parametric form);
(2, 2) here: on the tiny test pipeline an even walk's CV was 0.05 / 0.22 / 0.49 with (1, 1) /
(2, 2) / (3, 3), and on the quickstart's pipeline 1.65 / 1.40 / 1.38 (a jump in all three). The frame's
noise is the slerp and its text embedding the lerp of the keyframes' at alpha (AID starts from
the same two), and for the first ACTIVE_SHARE of the steps (AID's warm-up ratio) its cross- and
self-attention interpolate the keyframes' rows; later steps are plain.

The keyframes ride along in each batch (two rows more per segment it touches, one UNet batch per
sampler step as before): their rows are plain, so they are the keyframe images, and a frame's
batch is fixed by its index (`ldm.apps.animate.passes.render_pass`), so resumed and split renders
make the same bytes. Frames at the keyframes are plain rows too: `ldm generate`'s images.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ldm.apps.animate import spacing
from ldm.sampling.attention_interpolation import Mix, guided_rows, interpolated_attention

if TYPE_CHECKING:
    from ldm.apps.animate.renderers import DiffusionWalk

BETA_PRIOR = (2, 2)  # AID's Beta prior over the coefficients (whole numbers: see beta_cdf)
ACTIVE_SHARE = 0.5  # share of the steps, from the first, whose attention is interpolated


def beta_cdf(x: float, a: int, b: int) -> float:
    """The Beta(a, b) CDF for whole a and b: P(at least a of a + b - 1 uniform draws fall below x).
    Written here because neither torch nor the project's dependencies have the incomplete beta
    function (scipy is not one of them)."""
    n = a + b - 1
    return sum(math.comb(n, k) * x ** k * (1 - x) ** (n - k) for k in range(a, n + 1))


def beta_quantile(p: float, a: int = BETA_PRIOR[0], b: int = BETA_PRIOR[1]) -> float:
    """The x with beta_cdf(x) = p, by bisection (the CDF increases); 0 and 1 are exact."""
    if p <= 0 or p >= 1:
        return float(min(max(p, 0), 1))
    low, high = 0.0, 1.0
    for _ in range(60):  # 2**-60: below float resolution
        middle = (low + high) / 2
        low, high = (middle, high) if beta_cdf(middle, a, b) < p else (low, middle)
    return (low + high) / 2


def coefficient_positions(times: list[float], num_keyframes: int, loop: bool) -> list[float]:
    """Each position with its place u in its segment replaced by the coefficient beta_quantile(u)."""
    located = [spacing.locate(t, num_keyframes, loop) for t in times]
    return [t if u in (0, 1) else i + beta_quantile(u) for t, (i, _, u) in zip(times, located)]


class AttentionPath:
    """Method "attention" of `DiffusionWalk`."""

    def sample(self, walk: DiffusionWalk, times: list[float]) -> torch.Tensor:
        positions = coefficient_positions(times, walk.num_keyframes, walk.loop)
        embeddings, noises, scales = walk.at(positions)
        return walk.by_scale(scales, lambda rows, scale: self.batch(
            walk, [positions[r] for r in rows], embeddings[rows], noises[rows], scale))

    def batch(self, walk: DiffusionWalk, positions: list[float], embeddings: torch.Tensor, noises: torch.Tensor,
              scale: float) -> torch.Tensor:
        """One pipeline call: the frames at `positions`, then the keyframes they interpolate."""
        located = [spacing.locate(t, walk.num_keyframes, walk.loop) for t in positions]
        ends = sorted({k for i, j, u in located if 0 < u < 1 for k in (i, j)})
        n = len(positions)
        rows = [Mix(n + ends.index(i), n + ends.index(j), u) if 0 < u < 1 else None for i, j, u in located]
        rows += [None] * len(ends)
        active = round(walk.steps * ACTIVE_SHARE)
        with interpolated_attention(walk.pipe.unet, guided_rows(rows, scale > 1.0), active) as callback:
            latents = walk.denoise(torch.cat([embeddings, walk.embeddings[ends]]),
                                   torch.cat([noises, walk.noises[ends]]), scale, callback_on_step_end=callback)
        return latents[:n]
