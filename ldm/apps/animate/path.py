"""The maths of a latent walk: where each frame sits on a path through keyframes.

A walk visits K keyframes (a prompt and a seed, an inverted image, an encoded image) in order.
Frame positions are numbers `s` on a timeline: keyframe k sits at s = k, and frames between two
keyframes interpolate them with u = s - floor(s). A plain walk has K - 1 segments and ends on its
last keyframe; a loop has K segments, the last one running from the last keyframe back to the
first, and stops one frame short of it, so that playing the video on repeat never shows a jump
(or a doubled frame).

    times = linear_times(num_keyframes=2, frames=16, loop=False)    # 16 positions in [0, 1]
    noise = interpolate(keyframe_noise, times, loop=False, kind="slerp")

With `frames` per segment, keyframes shared by two segments are one frame, rendered once:
(K - 1) * (frames - 1) + 1 frames for a plain walk, K * (frames - 1) for a loop.

None of this is in diffusers (its community walk pipelines each carry a private slerp), so it is
written here once, for every walk kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

# Above this cosine similarity, two vectors are treated as parallel and lerped: slerp's sin(theta)
# denominator would amplify rounding error (the value the Stable Diffusion walk scripts use).
PARALLEL_DOT = 0.9995
INTERPOLATIONS = ("lerp", "slerp")


def lerp(a: torch.Tensor, b: torch.Tensor, u: float) -> torch.Tensor:
    return a + (b - a) * u


def slerp(a: torch.Tensor, b: torch.Tensor, u: float, parallel_dot: float = PARALLEL_DOT) -> torch.Tensor:
    """Spherical interpolation between two tensors treated as single vectors.

    Gaussian noise lives near a sphere: a straight line between two samples passes through
    low-norm points that the diffusion model never saw (washed-out frames mid-walk); the arc keeps
    the norm. Nearly parallel vectors fall back to lerp, where the two paths coincide anyway.
    """
    a64, b64 = a.double().flatten(), b.double().flatten()
    dot = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-30)
    if abs(dot.item()) > parallel_dot:
        return lerp(a, b, u)
    theta = torch.arccos(dot.clamp(-1.0, 1.0))
    sin_theta = torch.sin(theta)
    wa, wb = torch.sin((1.0 - u) * theta) / sin_theta, torch.sin(u * theta) / sin_theta
    return (wa * a.double() + wb * b.double()).to(a.dtype)


def segment_count(num_keyframes: int, loop: bool) -> int:
    return num_keyframes if loop else num_keyframes - 1


def frame_count(num_keyframes: int, frames: int, loop: bool) -> int:
    """Frames in the whole walk: `frames` per segment, each shared keyframe counted once."""
    segments = segment_count(num_keyframes, loop)
    return segments * (frames - 1) + (0 if loop else 1)


def linear_times(num_keyframes: int, frames: int, loop: bool) -> list[float]:
    """Evenly spaced positions: `frames` per segment, keyframes at the integers."""
    total = frame_count(num_keyframes, frames, loop)
    return [i / (frames - 1) for i in range(total)]


def locate(s: float, num_keyframes: int, loop: bool) -> tuple[int, int, float]:
    """(keyframe before, keyframe after, fraction u in [0, 1]) for timeline position s."""
    segments = segment_count(num_keyframes, loop)
    i = min(int(math.floor(s)), segments - 1)
    return i, (i + 1) % num_keyframes, s - i


def interpolate(keyframes: torch.Tensor, times: Sequence[float], loop: bool,
                kind: str) -> torch.Tensor:
    """(len(times), ...) tensors along the path through `keyframes` (K, ...), by lerp or slerp."""
    if kind not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {kind!r}")
    blend = slerp if kind == "slerp" else lerp
    out = []
    for s in times:
        i, j, u = locate(s, len(keyframes), loop)
        out.append(keyframes[i] if u == 0 else blend(keyframes[i], keyframes[j], u))
    return torch.stack(out)


def even_times(sample_times: Sequence[float], gaps: Sequence[float], num_keyframes: int,
               frames: int, loop: bool) -> list[float]:
    """Frame positions at equal path length ("even motion"), as many as `linear_times` gives.

    `sample_times` are sorted positions where the walk was rendered, spanning the whole timeline
    (for a loop, ending at the closing position, which is keyframe 0 again), and `gaps[k]` is the
    measured distance between the frames at `sample_times[k]` and `sample_times[k + 1]`. Their
    running sum is the path's arc length as seen by the distance. Each segment gets a share of the
    walk's frame intervals in proportion to its arc length (a long segment would otherwise move in
    bigger steps than a short one), and its frames divide its arc length equally (the arc length
    inverted piecewise linearly). Keyframes stay at the integers: each is still exactly one frame.
    """
    s = np.asarray(sample_times, dtype=np.float64)
    if len(gaps) != len(s) - 1:
        raise ValueError(f"{len(s)} sample times need {len(s) - 1} gaps, got {len(gaps)}")
    # A floor on each gap keeps the arc length strictly increasing, so inverting it is defined
    # even where two samples render identically.
    arc = np.concatenate([[0.0], np.cumsum(np.maximum(np.asarray(gaps, dtype=np.float64), 1e-9))])
    segments = segment_count(num_keyframes, loop)
    pieces = []
    for segment in range(segments):
        inside = (s >= segment - 1e-12) & (s <= segment + 1 + 1e-12)
        if s[inside][0] > segment + 1e-9 or s[inside][-1] < segment + 1 - 1e-9:
            raise ValueError(f"samples do not cover segment {segment} of the walk")
        pieces.append((s[inside], arc[inside]))
    intervals = share_intervals([a[-1] - a[0] for _, a in pieces], segments * (frames - 1))
    times: list[float] = []
    for segment, ((seg_s, seg_arc), n) in enumerate(zip(pieces, intervals)):
        positions = np.interp(np.linspace(seg_arc[0], seg_arc[-1], n + 1), seg_arc, seg_s)
        positions[0] = segment  # exact keyframe, free of rounding
        times.extend(float(p) for p in positions[:-1])
    if not loop:
        times.append(float(segments))
    return times


def share_intervals(lengths: Sequence[float], total: int) -> list[int]:
    """`total` frame intervals split in proportion to `lengths`, at least one each (largest
    remainders get the rounding), so every segment moves in about the same step size."""
    lengths = np.asarray(lengths, dtype=np.float64)
    spare = total - len(lengths)
    ideal = lengths / lengths.sum() * total - 1.0  # beyond the one interval each segment must have
    counts = np.floor(np.clip(ideal, 0, None)).astype(int)
    while counts.sum() > spare:  # clipping at zero can overshoot: take back from the largest
        counts[np.argmax(counts)] -= 1
    remainders = ideal - counts
    for i in np.argsort(-remainders, kind="stable")[: spare - counts.sum()]:
        counts[i] += 1
    return [int(c) + 1 for c in counts]
