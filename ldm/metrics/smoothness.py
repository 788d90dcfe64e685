"""How smoothly a walk moves: the distance between adjacent frames, and its summary.

The distance is a multi-scale pixel distance: the RMS difference of two frames averaged over an
image pyramid (full size, 1/2, 1/4, 1/8 by 2x2 box averaging). Why this one:

- it needs no weights: LPIPS and CLIP image features would need a download (or a vision tower
  that RUN/pipeline does not hold), and the walk must be measurable offline for any pipeline;
- the coarse levels measure what a viewer reads as motion (shapes moving, colours changing) and
  are blind to the pixel-level flicker that dominates a plain full-size RMS on diffusion samples;
  the full-size level still counts texture changes;
- it is cheap, deterministic and symmetric, so even-motion re-spacing can call it on every pair
  of probe frames, and the same number is what the smoothness report states.

With a CLIP folder (RUN/clip, or a local pretrained CLIP), `clip_distance` measures instead the
chord distance between unit-length CLIP image embeddings: closer to what the picture shows than
to its pixels, at the price of loading a vision model.

The coefficient of variation (std / mean) of adjacent-frame distances is the report's headline:
0 means every frame moves as much as the next; a walk that crawls and then jumps scores high.
A walk to music is meant to move unevenly, as much as its audio target says at each step:
`against_target` measures how closely it did (the correlation of distance and target, and the CV
of their ratio, which is 0 when every step moved in exact proportion to its target).

`perceptual_smoothness` is the figure AID (Attention Interpolation of Text-to-Image Diffusion,
NeurIPS 2024) reports for walks: 1 - the Gini coefficient of the adjacent-frame distances, 1 when
every step is as long as the next, towards 0 when one step holds all the motion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ldm.components.clip import clip_image_features, load_clip
from ldm.core.images import frames_to_tensor

PYRAMID_LEVELS = 4
DISTANCE_NAME = f"multi-scale RMS pixel distance ({PYRAMID_LEVELS}-level 2x2 pyramid, pixels in [0, 1])"


def _pyramid(frame: np.ndarray) -> list[np.ndarray]:
    image = frame.astype(np.float64) / 255.0
    levels = [image]
    for _ in range(PYRAMID_LEVELS - 1):
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        if h < 2 or w < 2:
            break
        image = image[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
        levels.append(image)
    return levels


def frame_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale RMS distance between two uint8 frames (H, W, 3); 0 for identical frames."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} and {b.shape}")
    return float(np.mean([np.sqrt(np.mean((x - y) ** 2)) for x, y in zip(_pyramid(a), _pyramid(b))]))


@dataclass(frozen=True)
class FrameDistance:
    """A way to measure motion: its name (for reports) and the distances along a frame sequence."""

    name: str
    consecutive: Callable[[Sequence[np.ndarray]], list[float]]  # frames -> len(frames) - 1 distances


def _pixel_consecutive(frames: Sequence[np.ndarray]) -> list[float]:
    return [frame_distance(a, b) for a, b in zip(frames[:-1], frames[1:])]


PIXEL_DISTANCE = FrameDistance(DISTANCE_NAME, _pixel_consecutive)


@lru_cache(maxsize=2)
def clip_distance(clip_folder: str) -> FrameDistance:
    """Chord distance |f(a) - f(b)| between unit CLIP image embeddings (0 to 2), model loaded once."""
    clip, processor = load_clip(clip_folder)

    def consecutive(frames: Sequence[np.ndarray]) -> list[float]:
        pixels = frames_to_tensor(np.stack(frames))
        features = torch.cat([clip_image_features(clip, chunk, processor) for chunk in pixels.split(32)])
        return (features[1:] - features[:-1]).norm(dim=-1).tolist()

    return FrameDistance(f"CLIP image-feature chord distance ({clip_folder})", consecutive)


def adjacent_distances(frames: Sequence[np.ndarray], loop: bool,
                       distance: FrameDistance = PIXEL_DISTANCE) -> list[float]:
    """Distances between consecutive frames; a loop adds the closing last -> first step."""
    return distance.consecutive(list(frames) + ([frames[0]] if loop else []))


def summarize(distances: Sequence[float]) -> dict[str, float]:
    """Mean, max and coefficient of variation (std / mean) of adjacent-frame distances."""
    d = np.asarray(distances, dtype=np.float64)
    mean = float(d.mean())
    return {"steps": len(d), "mean": mean, "max": float(d.max()), "min": float(d.min()),
            "cv": float(d.std() / mean) if mean > 0 else 0.0}


def gini(values: Sequence[float]) -> float:
    """The Gini coefficient of non-negative values: mean absolute difference of all pairs over twice
    the mean (0: all equal). Written out because numpy and scipy have none; a walk has at most a
    few thousand steps, so the all-pairs form is cheap."""
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean() if v.size else 0.0
    if mean <= 0:
        return 0.0
    return float(np.abs(v[:, None] - v[None, :]).mean() / (2 * mean))


def perceptual_smoothness(distances: Sequence[float]) -> float:
    """1 - Gini of the adjacent-frame distances (AID's smoothness): 1 for a walk of equal steps."""
    return 1.0 - gini(distances)


def against_target(distances: Sequence[float], target: Sequence[float]) -> dict[str, float]:
    """How closely adjacent-frame distances followed a target (one value per step): Pearson
    correlation (1: in step; 0 when either is constant) and the CV of distance / target."""
    d, t = np.asarray(distances, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if d.shape != t.shape:
        raise ValueError(f"{len(d)} distances but {len(t)} target values")
    correlation = float(np.corrcoef(d, t)[0, 1]) if d.std() > 0 and t.std() > 0 else 0.0
    ratio = d / t
    return {"correlation": correlation, "cv": float(ratio.std() / ratio.mean()) if ratio.mean() > 0 else 0.0}
