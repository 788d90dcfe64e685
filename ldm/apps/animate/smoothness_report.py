"""How smoothly a rendered walk moves: OUT/smoothness.json, written at the end of every render and
recomputed from the frames on disk by `ldm evaluate walk`.

    report = smoothness_report(settings, plan, out, frames)
    print(format_report(report))

The report holds the adjacent-frame distances of the walk and their summary (mean, max,
coefficient of variation); with a probe pass, the same for linear spacing (pass 0), so the
re-spacing's gain is one ratio; with dissolved jumps, how many, and how many of them are flashes
found in the walk's frames; with audio, how closely the distances followed the audio target.
Distances are `ldm.metrics.smoothness`'s: a multi-scale pixel distance, or CLIP image features
with `distance_model` (the same measure even motion evens out).
"""

from __future__ import annotations

import json
from pathlib import Path

from ldm.apps.animate import video
from ldm.apps.animate.jumps import jump_at
from ldm.apps.animate.layout import (
    FLASHES_FILE,
    FRAMES_DIR,
    JUMPS_FILE,
    TIMES_FILE,
    jumps_folder,
    pass_folder,
    read_jumps,
)
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.animate.timeline import WalkPlan
from ldm.metrics import smoothness


def frame_distance(s: WalkSettings) -> smoothness.FrameDistance:
    """The distance between frames that a walk's motion is measured in."""
    if s.distance_model is None:
        return smoothness.PIXEL_DISTANCE
    return smoothness.clip_distance(str(Path(s.distance_model).resolve()))


def smoothness_report(s: WalkSettings, plan: WalkPlan, out: Path, frames) -> dict:
    """Adjacent-frame distances of the walk and their summary; with a probe pass, the same for
    linear spacing; with audio, how closely the distances followed the audio target."""
    distance = frame_distance(s)
    distances = smoothness.adjacent_distances(frames, s.loop, distance)
    report = {"distance": distance.name, "frames": len(frames), "fps": plan.fps, "loop": s.loop,
              "motion": s.motion, "walk": smoothness.summarize(distances)}
    if s.loop:
        report["walk"]["closing"] = distances[-1]  # last frame -> first, as the video repeats
    linear_distances = None
    if s.respaced:
        linear_frames = video.read_frames(pass_folder(out, 0), plan.frames)
        linear_distances = smoothness.adjacent_distances(linear_frames, s.loop, distance)
        report["linear"] = smoothness.summarize(linear_distances)
        report["cv_ratio"] = report["walk"]["cv"] / max(report["linear"]["cv"], 1e-12)
    if (jumps_folder(out) / JUMPS_FILE).is_file():  # only there when this walk dissolves jumps
        flashes = read_jumps(jumps_folder(out) / FLASHES_FILE)
        jumps = read_jumps(jumps_folder(out) / JUMPS_FILE) + flashes
        times = json.loads((out / FRAMES_DIR / TIMES_FILE).read_text())
        report["jumps"] = {"found": len(jumps), "flashes": len(flashes),
                           "dissolved_frames": sum(jump_at(jumps, t) is not None for t in times),
                           "intervals": [jump.as_dict() for jump in jumps]}
    if plan.target is not None:
        report["audio"] = smoothness.against_target(distances, plan.target)
        if linear_distances is not None:
            report["audio"]["linear_correlation"] = smoothness.against_target(linear_distances,
                                                                              plan.target)["correlation"]
    report["distances"] = distances  # one per step, in order (a loop's last: the closing step)
    return report


def format_report(report: dict) -> str:
    walk = report["walk"]
    lines = [f"adjacent-frame distance ({report['frames']} frames): mean {walk['mean']:.4f}, "
             f"max {walk['max']:.4f}, CV {walk['cv']:.3f}"]
    if "closing" in walk:
        lines.append(f"  loop closing step (last -> first): {walk['closing']:.4f}")
    if "linear" in report:
        linear = report["linear"]
        lines.append(f"  linear spacing:  mean {linear['mean']:.4f}, max {linear['max']:.4f}, "
                     f"CV {linear['cv']:.3f}   ({report['motion']}-motion CV / linear CV = "
                     f"{report['cv_ratio']:.2f})")
    if "jumps" in report:
        jumps = report["jumps"]
        flashes = f", {jumps['flashes']} of them flashes" if jumps.get("flashes") else ""
        lines.append(f"  jumps dissolved: {jumps['found']}{flashes} ({jumps['dissolved_frames']} frames are "
                     "dissolves)")
    if "audio" in report:
        audio = report["audio"]
        linear = (f" (linear spacing: {audio['linear_correlation']:.2f})" if "linear_correlation" in audio
                  else "")
        lines.append(f"  against the audio target: correlation {audio['correlation']:.2f}{linear}, "
                     f"CV of distance / target {audio['cv']:.3f}")
    return "\n".join(lines)
