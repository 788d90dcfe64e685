"""Frames on disk: numbered PNGs written atomically, then assembled into a GIF and an MP4.

imageio writes both formats (Pillow for GIF, the ffmpeg binary that imageio-ffmpeg ships for
MP4), so no system ffmpeg is needed. Each file is written under a temporary name and renamed,
so an interrupted render leaves whole frames or none, never a truncated PNG that resume would
take for a finished frame.

GIF stores frame durations in hundredths of a second: 12 fps is written as 80 ms frames (12.5
fps on playback); the MP4 keeps the exact rate.

A walk to music carries its audio in the MP4 (AAC, cut to the walk's span of the audio file and
padded with silence should it end early, so both streams last frames / fps); the GIF stays
silent. The muxing runs in the same ffmpeg call as the video encoding, with ffmpeg's bitexact
flags and no metadata, so the same frames and audio give a byte-identical MP4 (a resumed render
matches one that was never interrupted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
from PIL import Image

from ldm.core.atomic import atomic_file, atomic_write_bytes
from ldm.core.images import read_rgb, write_png

FRAME_NAME = "frame_{:05d}.png"
AUDIO_CODEC = "aac"  # ffmpeg's own AAC encoder: in every ffmpeg build, plays everywhere
# No encoder version strings, creation times or copied tags: the same input, the same bytes.
BITEXACT = ["-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1"]
FRAME_PATTERN = re.compile(r"frame_(\d{5})\.png")


def frame_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / FRAME_NAME.format(index)


def save_frame(folder: str | Path, index: int, frame: np.ndarray, metadata: dict[str, str]) -> Path:
    """Write one uint8 (H, W, 3) frame as a PNG with text metadata (prompt, seed, ...)."""
    return write_png(frame_path(folder, index), Image.fromarray(frame), metadata)


def existing_frames(folder: str | Path) -> set[int]:
    """Indices of the frames already written in `folder` (temporary files are not frames)."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for p in folder.iterdir() if (m := FRAME_PATTERN.fullmatch(p.name))}


def remove_temporaries(folder: str | Path) -> int:
    """Delete the half-written files a killed render left (".frame_00012.png.tmp-PID"); returns how many."""
    stale = list(Path(folder).glob(".*.tmp-*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read_frame(path: str | Path) -> np.ndarray:
    return np.asarray(read_rgb(path))


def read_frames(folder: str | Path, count: int) -> list[np.ndarray]:
    return [read_frame(frame_path(folder, i)) for i in range(count)]


def enlarge(frames: list[np.ndarray], factor: int) -> list[np.ndarray]:
    """Nearest-neighbour enlargement, so 32-pixel walks are watchable without blurring them."""
    if factor == 1:
        return frames
    return [f.repeat(factor, axis=0).repeat(factor, axis=1) for f in frames]


def write_gif(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """A looping GIF (loop=0 is "forever")."""
    data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    atomic_write_bytes(path, data)
    return Path(path)


@dataclass(frozen=True)
class Soundtrack:
    """The audio of a walk: a file (anything ffmpeg reads), from `start` seconds into it."""

    path: str
    start: float


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: float,
              soundtrack: Soundtrack | None = None) -> Path:
    """H.264 in yuv420p, the format every player accepts; frame sides must be even. With a
    soundtrack, its audio from `start` for len(frames) / fps seconds goes in as AAC."""
    path = Path(path)
    audio, output_params = {}, list(BITEXACT)
    if soundtrack is not None:
        seconds = len(frames) / fps
        # Cut by a filter, not by -ss/-t: imageio-ffmpeg places the audio input itself, and
        # apad's whole_dur makes the stream exactly as long as the video even if the file is not.
        cut = (f"atrim=start={soundtrack.start:.6f}:duration={seconds:.6f},asetpts=PTS-STARTPTS,"
               f"apad=whole_dur={seconds:.6f}")
        audio = dict(audio_path=str(soundtrack.path), audio_codec=AUDIO_CODEC)
        output_params += ["-af", cut]
    # macro_block_size=2: keep the frame size (yuv420p needs even sides) instead of imageio's
    # default of resizing to a multiple of 16, which would rescale small walks.
    with atomic_file(path, suffix=".mp4") as tmp:  # ffmpeg picks the container by extension
        writer = imageio_v2.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=2,
                                       ffmpeg_log_level="error", output_params=output_params, **audio)
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
    return path


def video_info(path: str | Path) -> dict[str, float]:
    """{frames, fps} of a written GIF or MP4, read back from the file."""
    path = Path(path)
    if path.suffix == ".gif":
        frames = iio.imread(path, index=None)
        return {"frames": len(frames), "fps": 1000.0 / iio.immeta(path)["duration"]}
    reader = imageio_v2.get_reader(path)
    try:
        return {"frames": reader.count_frames(), "fps": reader.get_meta_data()["fps"]}
    finally:
        reader.close()
