"""The motion-vs-audio plot of a walk to music: how far each frame moved, against how far the
audio said it should (OUT/motion.png, shown in the quickstart report).

The target is drawn scaled to the distances' mean, so that a walk that follows its audio
exactly draws two coinciding lines; dotted lines mark the keyframes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldm.apps.animate.timeline import WalkPlan
from ldm.stages.plots import plt, save_figure  # pyplot set up to write files only


def plot_motion(distances: list[float], plan: WalkPlan, correlation: float, out_png: str | Path) -> Path:
    """Frame-to-frame distance and the audio target over the walk's time (each step drawn at the
    middle of its span of time); returns the PNG's path."""
    if plan.target is None:
        raise ValueError("a walk without audio has no target to plot against")
    d, target = np.asarray(distances), np.asarray(plan.target)
    seconds = (np.arange(len(d)) + 0.5) / plan.fps
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    ax.plot(seconds, d, label="frame-to-frame distance", marker="o" if len(d) < 60 else None, markersize=3)
    ax.plot(seconds, target * d.mean() / target.mean(), label="audio target (scaled to the same mean)")
    for frame in plan.keyframe_frames:
        ax.axvline(frame / plan.fps, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("distance")
    ax.set_title(f"motion against the audio (correlation {correlation:.2f}; dotted: keyframes)", fontsize=10)
    return save_figure(fig, ax, out_png)
