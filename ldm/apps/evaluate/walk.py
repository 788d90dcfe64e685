"""`ldm evaluate walk`: how smoothly a rendered walk moves, from the frames on disk.

    evaluate_walk("walks/demo")

The figures are those of the walk's own smoothness report (`ldm.apps.animate.smoothness_report`,
what `ldm animate` wrote in OUT/smoothness.json), recomputed from its folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from ldm.apps.animate import video
from ldm.apps.animate.layout import FRAMES_DIR
from ldm.apps.animate.saved_settings import saved_walk_settings
from ldm.apps.animate.smoothness_report import smoothness_report
from ldm.apps.animate.timeline import saved_plan
from ldm.core.errors import LdmError
from ldm.metrics.results import Evaluation, Metric


def evaluate_walk(folder: str | Path) -> Evaluation:
    """Smoothness of a rendered walk. With audio, unevenness is measured against the audio target
    (the motion is meant to follow it, not to be constant), beside the correlation of distance and
    target."""
    start = time.perf_counter()
    folder = Path(folder)
    s = saved_walk_settings(folder)
    plan = saved_plan(s, folder)
    frames_dir = folder / FRAMES_DIR
    missing = set(range(plan.frames)) - video.existing_frames(frames_dir)
    if missing:
        raise LdmError(f"{frames_dir} lacks {len(missing)} of its {plan.frames} frames: finish the render "
                       "first (rerun the same ldm animate command)")
    report = smoothness_report(s, plan, folder, video.read_frames(frames_dir, plan.frames))
    settings = {"kind": s.kind, "frames": report["frames"], "fps": plan.fps, "loop": s.loop,
                "motion": s.motion, "audio": s.audio, "distance": report["distance"]}
    return Evaluation("walk", str(folder), settings, walk_metrics(report), time.perf_counter() - start)


def walk_metrics(report: dict) -> list[Metric]:
    """A smoothness report's figures as metrics."""
    walk = report["walk"]
    distance = f"adjacent-frame {report['distance']}"
    if "audio" in report:
        metrics = [
            Metric("walk_cv", "Motion unevenness against the audio (CV of distance / audio target)",
                   report["audio"]["cv"], "", "lower", f"std / mean of the {distance} over the audio target"),
            Metric("walk_audio_correlation", "Correlation of frame-to-frame distance and audio target",
                   report["audio"]["correlation"], "", "higher", "Pearson, over the walk's steps"),
            Metric("walk_distance_cv", "CV of frame-to-frame distance", walk["cv"], "", "",
                   "uneven by design: the motion follows the audio"),
        ]
    else:
        metrics = [Metric("walk_cv", "Motion unevenness (CV of frame-to-frame distance)", walk["cv"], "",
                          "lower", f"std / mean of the {distance}")]
    metrics += [
        Metric("walk_mean_step", "Mean frame-to-frame distance", walk["mean"], "", ""),
        Metric("walk_max_step", "Largest frame-to-frame distance", walk["max"], "", "lower"),
        Metric("walk_frames", "Frames", report["frames"], "", ""),
    ]
    if "closing" in walk:
        metrics.append(Metric("walk_closing_step", "Loop closing step (last to first frame)", walk["closing"],
                              "", "lower"))
    if "linear" in report:
        metrics += [Metric("walk_linear_cv", "Motion unevenness with linear spacing", report["linear"]["cv"],
                           "", "lower", "the same walk with frames evenly spaced in latent space"),
                    Metric("walk_cv_ratio", "Re-spaced CV / linear CV", report["cv_ratio"], "", "lower")]
    return metrics
