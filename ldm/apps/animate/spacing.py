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
(K - 1) * (frames - 1) + 1 frames for a plain walk, K * (frames - 1) for a loop. (A walk on a clock,
`ldm.apps.animate.timeline`, puts its keyframes on the frames its times say.)

Positions need not be evenly spaced: `even_times` and `paced_times` re-space them from a probe
render's measured distances, so that each step moves equally far, or as far as a weight (the
audio target) says.

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
    steps = segment_count(num_keyframes, loop) * (frames - 1)
    return paced_times(sample_times, gaps, num_keyframes, loop, steps)


def paced_times(sample_times: Sequence[float], gaps: Sequence[float], num_keyframes: int, loop: bool,
                steps: int, intervals: Sequence[int] | None = None,
                weights: Sequence[float] | None = None) -> list[float]:
    """Frame positions whose steps along the path's arc length follow `weights` (one per step
    between consecutive frames, `steps` in all; None: equal steps, which is `even_times`).

    `sample_times` and `gaps` measure the arc length as in `even_times`. `intervals` fixes how
    many steps each segment has (a timeline's keyframes sit on given frames); None shares the
    steps out so that the pace (arc length per unit of weight) is the same in every segment.
    Within a segment, the arc length covered by each step is proportional to its weight; the
    segment's ends stay on its keyframes, so the path is the same, only the pace changes.
    """
    pieces = segment_arcs(sample_times, gaps, num_keyframes, loop)
    lengths = [arc[-1] - arc[0] for _, arc in pieces]
    if weights is None:
        weights = np.ones(steps)
        intervals = share_intervals(lengths, steps) if intervals is None else intervals
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != steps or np.any(weights <= 0):
        raise ValueError(f"need {steps} positive step weights, got {len(weights)}")
    if intervals is None:
        intervals = share_by_weights(lengths, weights)
    if sum(intervals) != steps or min(intervals) < 1:
        raise ValueError(f"segment intervals {list(intervals)} must each be >= 1 and sum to {steps}")
    times: list[float] = []
    first = 0
    for segment, ((seg_s, seg_arc), n) in enumerate(zip(pieces, intervals)):
        covered = np.concatenate([[0.0], np.cumsum(weights[first: first + n])])
        targets = seg_arc[0] + covered / covered[-1] * (seg_arc[-1] - seg_arc[0])
        positions = np.interp(targets, seg_arc, seg_s)
        positions[0] = segment  # exact keyframe, free of rounding
        times.extend(float(p) for p in positions[:-1])
        first += n
    if not loop:
        times.append(float(len(pieces)))
    return times


def segment_arcs(sample_times: Sequence[float], gaps: Sequence[float], num_keyframes: int,
                 loop: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(positions, arc length at them) of the samples in each segment, both ends included."""
    s = np.asarray(sample_times, dtype=np.float64)
    if len(gaps) != len(s) - 1:
        raise ValueError(f"{len(s)} sample times need {len(s) - 1} gaps, got {len(gaps)}")
    # A floor on each gap keeps the arc length strictly increasing, so inverting it is defined
    # even where two samples render identically.
    arc = np.concatenate([[0.0], np.cumsum(np.maximum(np.asarray(gaps, dtype=np.float64), 1e-9))])
    pieces = []
    for segment in range(segment_count(num_keyframes, loop)):
        inside = (s >= segment - 1e-12) & (s <= segment + 1 + 1e-12)
        if not inside.any() or s[inside][0] > segment + 1e-9 or s[inside][-1] < segment + 1 - 1e-9:
            raise ValueError(f"samples do not cover segment {segment} of the walk")
        pieces.append((s[inside], arc[inside]))
    return pieces


def share_by_weights(lengths: Sequence[float], weights: Sequence[float]) -> list[int]:
    """Steps per segment such that the path moves at one pace in proportion to `weights` (one per
    step): keyframe k lands on the step where the running sum of weights reaches the share of
    the arc length before it. At least one step per segment."""
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    covered = np.concatenate([[0.0], np.cumsum(weights)])
    steps, segments = len(weights), len(lengths)
    ends = [0]
    for k in range(1, segments):
        wanted = arc[k] / arc[-1] * covered[-1]
        nearest = int(np.argmin(np.abs(covered - wanted)))
        ends.append(min(max(nearest, ends[-1] + 1), steps - (segments - k)))
    ends.append(steps)
    return [int(b - a) for a, b in zip(ends[:-1], ends[1:])]


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
