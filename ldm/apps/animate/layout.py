"""What a walk folder (`ldm animate --out OUT`) holds, by name, and its JSON records written whole.

    OUT/settings.json          what the frames depend on; a rerun with other settings is an error
    OUT/timeline.json          frame count, fps, the keyframes' frames, the audio target per step
    OUT/frames/frame_00000.png the walk's frames (plus times.json: each frame's timeline position)
    OUT/even-motion/pass-N/    even or audio motion: the probe renders that placed the frames
    OUT/even-motion/jumps/     the frames the jump search rendered, and jumps.json: what it found;
                               flashes.json: the flashes found in the walk's frames, dissolved
    OUT/walk.gif, walk.mp4     assembled from frames/ at the end of every run (the MP4 with the audio)
    OUT/smoothness.json        adjacent-frame distance: mean, max, coefficient of variation; with
                               audio, how closely it followed the audio target
    OUT/motion.png             with audio: frame-to-frame distance against the audio target

Every file is written under a temporary name and renamed, so a killed render leaves whole files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ldm.apps.animate.jumps import Jump
from ldm.core.atomic import atomic_write_bytes

SETTINGS_FILE = "settings.json"
TIMELINE_FILE = "timeline.json"
FRAMES_DIR = "frames"
TIMES_FILE = "times.json"  # in each folder of frames
PASSES_DIR = "even-motion"
JUMPS_DIR = "jumps"  # in PASSES_DIR
JUMPS_FILE = "jumps.json"  # in JUMPS_DIR
FLASHES_FILE = "flashes.json"  # in JUMPS_DIR
GIF_NAME = "walk.gif"
MP4_NAME = "walk.mp4"
REPORT_FILE = "smoothness.json"
MOTION_PLOT = "motion.png"


def pass_folder(out: Path, index: int) -> Path:
    """The frames of probe pass `index` (pass 0: linear spacing, the report's baseline)."""
    return out / PASSES_DIR / f"pass-{index}"


def jumps_folder(out: Path) -> Path:
    return out / PASSES_DIR / JUMPS_DIR


def write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def write_jumps(path: Path, jumps: list[Jump], **more) -> None:
    write_json(path, {"jumps": [jump.as_dict() for jump in jumps], **more})


def read_jumps(path: Path) -> list[Jump]:
    """The jumps a record written by `write_jumps` holds; none if there is no record."""
    return [Jump(**jump) for jump in json.loads(path.read_text())["jumps"]] if path.is_file() else []
