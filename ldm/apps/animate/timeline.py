"""The walk's clock: keyframes at times in seconds, frames at a frame rate, and the audio target
that says how far each frame should move.

    keyframes = read_timeline("walk.yaml")          # the keyframes of a --timeline file
    plan = plan_walk(settings)                      # frame count, keyframe frames, audio target
    positions = linear_positions(plan.keyframe_frames, loop=False)

Frame i of a walk is shown at i / fps seconds. Keyframe k sits on frame round(t_k * fps), so it
is still exactly one rendered frame (position k on the path, see `ldm.apps.animate.spacing`); a plain
walk ends on its last keyframe, a loop stops one frame before it is back at its first. With
`--on-beats`, the keyframes between the walk's two ends first move to the nearest onset of the
audio.

The audio target is one number per step between consecutive frames: the audio's onset strength
(or RMS energy), smoothed, averaged over the step's span of time, scaled to a peak of 1, with a
floor (TARGET_FLOOR) so that quiet passages still move a little. With motion "audio", the
re-spacing makes each step's distance proportional to it (`spacing.paced_times`), and the
smoothness report says how closely the frames followed it.

The plan is saved as OUT/timeline.json: what the report, the plot and `ldm evaluate walk` read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydantic.dataclasses
from pydantic import ConfigDict

from ldm.apps.animate import audio as sound
from ldm.apps.animate import spacing
from ldm.apps.animate.layout import TIMELINE_FILE, write_json
from ldm.apps.animate.resolve import resolve
from ldm.apps.animate.settings import WalkSettings
from ldm.apps.options import PathText, read_entry
from ldm.core.config import SECTION, load_yaml
from ldm.core.errors import LdmError

TARGET_FLOOR = 0.1  # the quietest step moves this share of the loudest one
SAMPLES_PER_STEP = 8  # points of the envelope averaged over each step's span of time


# ---- the --timeline file -------------------------------------------------------------------------

# A prompt YAML reads as a number ("1984") is still the prompt's text.
ENTRY = ConfigDict(**SECTION, coerce_numbers_to_str=True)


@pydantic.dataclasses.dataclass(config=ENTRY)
class TimelineEntry:
    """One entry of a --timeline file: a keyframe at `time` seconds (a time alone: a loop's
    closing time), each value checked as WalkSettings checks its own (`ldm.apps.options`)."""

    time: float
    prompt: str | None = None
    seed: int | None = None
    image: PathText | None = None  # relative to the timeline file
    caption: str | None = None  # an image keyframe's prompt (image walks)
    guidance: float | None = None

    def __post_init__(self):
        if self.prompt is not None and self.image is not None:
            raise ValueError("has both a prompt and an image: a keyframe is one or the other")
        if self.prompt is not None and self.caption is not None:
            raise ValueError("a caption goes with an image, not a prompt")

    @property
    def kind(self) -> str | None:
        """The walk kind this keyframe belongs to; None for a time alone."""
        if self.image is not None:
            return "image"
        if self.prompt is not None:
            return "prompt"
        return "seed" if self.seed is not None else None


@dataclass
class TimelineKeyframes:
    """The keyframes of a --timeline file, in the shape WalkSettings takes them."""

    kind: str  # "prompt", "seed" or "image"
    times: list[float]  # one per keyframe, plus a loop's closing time if the file gives one
    prompts: list[str]
    seeds: list[int]
    images: list[str]  # relative paths are relative to the timeline file
    captions: list[str]
    guidances: list[float | None]


def read_timeline(path: str | Path) -> TimelineKeyframes:
    """Keyframes from a YAML list of {time, prompt | image | seed, guidance?}:

        - {time: 0, prompt: a red circle, seed: 1}
        - {time: 4.5, prompt: a blue square, seed: 2, guidance: 6}
        - {time: 9}                  # a loop's last entry may be a time alone: back at the first

    A prompt keyframe may carry a seed; an image keyframe takes a caption (image walks); seed
    keyframes alone make a seed walk (its prompt comes from --prompt). Raises LdmError."""
    path = Path(path)
    data = load_yaml(path, "timeline file")
    if not isinstance(data, list) or not data:
        raise LdmError(f"timeline {path} must be a YAML list of keyframes like {{time: 0, prompt: a red circle}}")
    entries = [read_entry(TimelineEntry, entry, f"timeline {path}, entry {number}")
               for number, entry in enumerate(data, 1)]
    closing = entries.pop() if len(entries) > 1 and entries[-1] == TimelineEntry(entries[-1].time) else None
    for number, entry in enumerate(entries, 1):
        if entry.kind is None:
            raise LdmError(f"timeline {path}, entry {number} has no prompt, image or seed (only a loop's last "
                           "entry may be a time alone)")
    kinds = {entry.kind for entry in entries}
    if len(kinds) > 1:
        raise LdmError(f"timeline {path} mixes {' and '.join(sorted(kinds))} keyframes: a walk is one kind")
    return TimelineKeyframes(
        kind=kinds.pop(), times=[e.time for e in entries] + ([closing.time] if closing else []),
        prompts=[e.prompt for e in entries if e.prompt is not None],
        seeds=[e.seed for e in entries if e.seed is not None],
        images=[str(path.parent / e.image) for e in entries if e.image is not None],
        captions=[e.caption for e in entries if e.caption is not None],
        guidances=[e.guidance for e in entries])


# ---- the plan of a walk --------------------------------------------------------------------------

@dataclass
class WalkPlan:
    """How many frames a walk has, where its keyframes fall, and how far each step should move."""

    fps: float
    frames: int  # frames in the walk
    keyframe_frames: list[int]  # frame of each keyframe; a loop ends with its closing frame (= frames)
    fixed: bool  # keyframes stay on these frames (times were given); else re-spacing may move them
    target: list[float] | None  # per step between frames (a loop's last: closing); None without audio
    audio_start: float | None  # seconds into the audio file where the walk starts

    @property
    def steps(self) -> int:
        """Steps between consecutive frames (a loop's last one closes it)."""
        return self.keyframe_frames[-1]


def plan_walk(s: WalkSettings) -> WalkPlan:
    """The plan of resolved settings; decodes the audio, if any. Raises LdmError for what only the
    audio can tell (a start past its end, a segment too short for the timeline, no onsets)."""
    if not s.timed:
        segments = spacing.segment_count(s.num_keyframes, s.loop)
        keyframe_frames = [k * (s.frames - 1) for k in range(segments + 1)]
        frames = keyframe_frames[-1] + (0 if s.loop else 1)
        return WalkPlan(s.fps, frames, keyframe_frames, fixed=False, target=None, audio_start=None)
    samples = _audio_segment(s) if s.audio is not None else None
    times, frames = _clock(s, samples)
    if s.on_beats:
        times = snap_to_onsets(times, sound.onset_times(sound.onset_strength(samples)))
    keyframe_frames = keyframe_frame_indices(times, s.fps)
    target = None
    if samples is not None:
        envelope = sound.smooth(sound.envelope(samples, s.audio_feature), s.audio_smooth)
        target = step_targets(envelope, sound.ENVELOPE_RATE, keyframe_frames[-1], s.fps).tolist()
    return WalkPlan(s.fps, frames, keyframe_frames, fixed=bool(s.times) or s.on_beats, target=target,
                    audio_start=s.audio_start if s.audio is not None else None)


def _clock(s: WalkSettings, samples: np.ndarray | None) -> tuple[list[float], int]:
    """(keyframe times, frame count): from the times given, or spread evenly over the audio."""
    if s.times:
        frames = round(s.times[-1] * s.fps) + (0 if s.loop else 1)
        if samples is not None and _seconds(samples) < (frames - 0.5) / s.fps:
            until = f" to --audio-end {s.audio_end:g} s" if s.audio_end is not None else ""
            raise LdmError(f"the timeline lasts {frames / s.fps:g} s, longer than the "
                           f"{_seconds(samples):.2f} s of audio from --audio-start {s.audio_start:g} s"
                           f"{until}")
        return s.times, frames
    frames = round(_seconds(samples) * s.fps)
    segments = spacing.segment_count(s.num_keyframes, s.loop)
    last = frames if s.loop else frames - 1  # the frame of the last keyframe (a loop: its closing)
    if last < segments:
        raise LdmError(f"{_seconds(samples):.2f} s of audio at {s.fps:g} fps is {frames} frames: too few for "
                       f"{s.num_keyframes} keyframes")
    return [float(t) for t in np.linspace(0, last / s.fps, segments + 1)], frames


def _seconds(samples: np.ndarray) -> float:
    return len(samples) / sound.ANALYSIS_RATE


def _audio_segment(s: WalkSettings) -> np.ndarray:
    samples = sound.read_audio(s.audio, s.audio_start, s.audio_end)
    if len(samples) == 0:
        raise LdmError(f"--audio-start {s.audio_start:g} s is past the end of {s.audio} "
                       f"({sound.audio_duration(s.audio):.2f} s long)")
    return samples


def snap_to_onsets(times: list[float], onsets: np.ndarray) -> list[float]:
    """Each keyframe time but the first and last moved to the nearest onset; LdmError when there
    are none, or when two keyframes would land on the same one."""
    if len(times) <= 2:
        return list(times)
    inside = onsets[(onsets > times[0]) & (onsets < times[-1])]
    if len(inside) == 0:
        raise LdmError("--on-beats: no onsets (beats) found in the audio between the walk's first and last "
                       "keyframe")
    snapped = [float(inside[np.argmin(np.abs(inside - t))]) for t in times[1:-1]]
    for before, after in zip(snapped[:-1], snapped[1:]):
        if after == before:
            raise LdmError(f"--on-beats: two keyframes snap to the same onset at {after:.2f} s; give fewer "
                           "keyframes, or --times further apart")
    return [times[0], *snapped, times[-1]]


def keyframe_frame_indices(times: list[float], fps: float) -> list[int]:
    """The frame of each keyframe time; LdmError when two fall on the same frame."""
    indices = [round(t * fps) for t in times]
    for k in range(1, len(indices)):
        if indices[k] <= indices[k - 1]:
            raise LdmError(f"keyframes at {times[k - 1]:g} s and {times[k]:g} s fall on the same frame at "
                           f"{fps:g} fps: space them further apart, or raise --fps")
    return indices


def linear_positions(keyframe_frames: list[int], loop: bool) -> list[float]:
    """Each frame's position on the path, moving at a steady pace in time between keyframes."""
    positions: list[float] = []
    for k, (first, last) in enumerate(zip(keyframe_frames[:-1], keyframe_frames[1:])):
        positions += [k + (i - first) / (last - first) for i in range(first, last)]
    if not loop:
        positions.append(float(len(keyframe_frames) - 1))
    return positions


def step_targets(envelope: np.ndarray, rate: float, steps: int, fps: float) -> np.ndarray:
    """Per step i (frame i to i + 1): the envelope averaged over [i / fps, (i + 1) / fps], scaled to
    a peak of 1 over the walk, with TARGET_FLOOR as the least (silence moves a little; an envelope
    of silence everywhere moves evenly)."""
    grid = (np.arange(steps)[:, None] + (np.arange(SAMPLES_PER_STEP) + 0.5) / SAMPLES_PER_STEP) / fps
    values = np.interp(grid, np.arange(len(envelope)) / rate, envelope).mean(axis=1)
    peak = values.max() if len(values) else 0.0
    if peak <= 0:
        return np.ones(steps)
    return TARGET_FLOOR + (1 - TARGET_FLOOR) * values / peak


# ---- OUT/timeline.json ---------------------------------------------------------------------------

def write_plan(plan: WalkPlan, path: str | Path) -> None:
    write_json(Path(path), asdict(plan))


def read_plan(path: str | Path) -> WalkPlan:
    return WalkPlan(**json.loads(Path(path).read_text()))


def saved_plan(s: WalkSettings, out: Path) -> WalkPlan:
    """The plan a walk folder was rendered with (a folder from before timelines: planned anew)."""
    path = out / TIMELINE_FILE
    return read_plan(path) if path.is_file() else plan_walk(resolve(s))
