"""Audio for walks to music: decode a song, measure how loud and how busy it is over time, find
its onsets, and make a synthetic beat track.

    samples = read_audio("song.mp3", start=30.0, end=60.0)         # mono float32 at ANALYSIS_RATE
    envelope = onset_strength(samples)                              # one value per hop of audio
    onsets = onset_times(envelope)                                  # seconds, from the clip's start

Decoding goes through the ffmpeg binary that imageio-ffmpeg ships (it already writes the MP4s):
WAV, FLAC, OGG, MP3 and whatever else ffmpeg reads, with no system install and no new dependency.
The analysis is two short numpy functions, the textbook ones: spectral flux (the half-wave
rectified frame-to-frame increase of the log-magnitude spectrum, summed over frequencies, which
rises at every note or drum hit) and RMS energy. librosa has both, but would bring numba, scipy and
soundfile for them. Onsets are local maxima of the onset envelope that stand out from their
neighbourhood (the peak picking of Boeck et al. 2012, as librosa does it); on music with a steady
pulse they are its beats, on a click track exactly its clicks.

`beat_track` and `write_wav` make the project's own synthetic audio (silence, then a beat pattern)
with the standard library's `wave` module, for the quickstart's walk and for tests.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from typing import Literal, get_args

import imageio_ffmpeg
import numpy as np

from ldm.core.errors import LdmError

ANALYSIS_RATE = 22050  # Hz: enough for onsets (librosa's default rate), half the work of 44.1 kHz
FFT_SIZE = 512  # 23 ms windows: an onset is placed within about 10 ms, well inside a video frame
HOP = 128  # 5.8 ms between envelope values
ENVELOPE_RATE = ANALYSIS_RATE / HOP  # envelope values per second
# log(1 + LOG_COMPRESSION * magnitude): the loudness-like compression under spectral flux, so a
# quiet note's onset counts, not only the loudest drum's.
LOG_COMPRESSION = 100.0
Feature = Literal["onsets", "energy"]  # what the motion follows: onset strength or RMS energy
FEATURES = get_args(Feature)

# Peak picking (seconds, and a threshold on the envelope scaled to a maximum of 1): a peak is the
# largest value within PEAK_WINDOW before and after it, exceeds the mean within MEAN_WINDOW by
# PEAK_DELTA, and comes at least MIN_GAP after the previous peak.
PEAK_WINDOW = 0.03
MEAN_WINDOW = 0.1
PEAK_DELTA = 0.07
MIN_GAP = 0.03


# ---- decoding ------------------------------------------------------------------------------------

def _ffmpeg() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def read_audio(path: str | Path, start: float = 0.0, end: float | None = None,
               sample_rate: int = ANALYSIS_RATE) -> np.ndarray:
    """The audio of `path` from `start` to `end` seconds (None: the end of the file), mixed down to
    mono float32 at `sample_rate`. Raises LdmError when the file is missing or not audio."""
    path = Path(path)
    if not path.is_file():
        raise LdmError(f"audio file not found: {path}")
    trim = ["-ss", f"{start:.6f}"] + (["-t", f"{end - start:.6f}"] if end is not None else [])
    command = [_ffmpeg(), "-nostdin", "-v", "error", *trim, "-i", str(path), "-map", "0:a:0",
               "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines() or ["no reason given"]
        raise LdmError(f"cannot read audio {path}: {reason[-1]}")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def audio_duration(path: str | Path) -> float:
    """Seconds of audio in `path`, by decoding it (container headers can be wrong, e.g. for a
    variable-bitrate MP3; decoding a song at ANALYSIS_RATE takes well under a second)."""
    return len(read_audio(path)) / ANALYSIS_RATE


# ---- analysis ------------------------------------------------------------------------------------

def _frames(samples: np.ndarray) -> np.ndarray:
    """(n, FFT_SIZE) windows every HOP samples, centred on t = i * HOP (zero-padded at the ends)."""
    padded = np.pad(samples.astype(np.float64), FFT_SIZE // 2)
    count = 1 + len(samples) // HOP
    if len(padded) < FFT_SIZE + (count - 1) * HOP:
        padded = np.pad(padded, (0, FFT_SIZE + (count - 1) * HOP - len(padded)))
    return np.lib.stride_tricks.sliding_window_view(padded, FFT_SIZE)[::HOP][:count]


def onset_strength(samples: np.ndarray) -> np.ndarray:
    """Spectral flux at ENVELOPE_RATE: value i measures how much the sound grew just before
    i * HOP / ANALYSIS_RATE seconds (0 where nothing starts)."""
    if len(samples) == 0:
        return np.zeros(0)
    spectrum = np.abs(np.fft.rfft(_frames(samples) * np.hanning(FFT_SIZE), axis=1))
    log_spectrum = np.log1p(LOG_COMPRESSION * spectrum)
    flux = np.maximum(np.diff(log_spectrum, axis=0), 0.0).mean(axis=1)
    return np.concatenate([[0.0], flux])


def rms_energy(samples: np.ndarray) -> np.ndarray:
    """Root-mean-square amplitude of each analysis window, at ENVELOPE_RATE."""
    if len(samples) == 0:
        return np.zeros(0)
    return np.sqrt(np.mean(_frames(samples) ** 2, axis=1))


def envelope(samples: np.ndarray, feature: str) -> np.ndarray:
    """The envelope that the motion follows: onset strength or RMS energy."""
    if feature not in FEATURES:
        raise ValueError(f"audio feature must be one of {FEATURES}, got {feature!r}")
    return onset_strength(samples) if feature == "onsets" else rms_energy(samples)


def smooth(values: np.ndarray, seconds: float, rate: float = ENVELOPE_RATE) -> np.ndarray:
    """Gaussian smoothing with a standard deviation of `seconds` (0: unchanged). numpy has no
    Gaussian filter (scipy's would be the only thing scipy is needed for)."""
    sigma = seconds * rate
    if sigma < 1e-3 or len(values) == 0:
        return np.asarray(values, dtype=np.float64)
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    # Edge values repeated outward, so the ends are not pulled towards silence.
    return np.convolve(np.pad(values, radius, mode="edge"), kernel, mode="valid")


def onset_times(onset_envelope: np.ndarray, rate: float = ENVELOPE_RATE) -> np.ndarray:
    """Seconds of the onsets in an onset-strength envelope, by peak picking (see the constants)."""
    values = np.asarray(onset_envelope, dtype=np.float64)
    if len(values) == 0 or values.max() <= 0:
        return np.zeros(0)
    values = values / values.max()
    peak, mean, gap = (max(1, round(seconds * rate)) for seconds in (PEAK_WINDOW, MEAN_WINDOW, MIN_GAP))
    picked: list[int] = []
    for i, value in enumerate(values):
        around = values[max(0, i - peak): i + peak + 1]
        if value < around.max() or value <= 0:
            continue
        if value < values[max(0, i - mean): i + mean + 1].mean() + PEAK_DELTA:
            continue
        if picked and i - picked[-1] < gap:
            continue
        picked.append(i)
    return np.asarray(picked, dtype=np.float64) / rate


# ---- synthetic audio -----------------------------------------------------------------------------

def beat_track(silence: float, beats: float, bpm: float = 120.0,
               sample_rate: int = ANALYSIS_RATE) -> np.ndarray:
    """`silence` seconds of silence, then `beats` seconds of a drum-like hit on every beat at
    `bpm` (the first hit right after the silence): a low thump plus a short noise click, decaying
    in 60 ms. Mono float32 in [-1, 1], the same every time (the noise is seeded)."""
    total = int(round((silence + beats) * sample_rate))
    track = np.zeros(total, dtype=np.float64)
    period = 60.0 / bpm
    length = int(min(0.36, period) * sample_rate)
    t = np.arange(length) / sample_rate
    noise = np.random.default_rng(0).uniform(-1, 1, length)
    # The cos^2 fade takes each hit smoothly to 0 at its end: cut short, it would end in a step
    # that is itself an onset.
    fade = np.cos(0.5 * np.pi * t / t[-1]) ** 2
    hit = fade * np.exp(-t / 0.06) * (0.6 * np.sin(2 * np.pi * 110 * t) + 0.3 * noise * np.exp(-t / 0.01))
    for k in range(int(np.floor(beats / period - 1e-9)) + 1):
        at = int(round((silence + k * period) * sample_rate))
        piece = hit[: max(0, total - at)]
        track[at: at + len(piece)] += piece
    return np.clip(track, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = ANALYSIS_RATE) -> Path:
    """A mono 16-bit PCM WAV file of float samples in [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path
