"""What a walk is: its settings, checked before any model loads, and saved beside its frames.

`resolve` fills the defaults that depend on the walk kind and raises LdmError for every mistake
that can be known from the request alone (too few keyframes, mismatched counts, an unreadable
image, a frame count below 2, an fps of 0, a sampler that is not deterministic, keyframe times
that do not increase, a missing audio file). What needs the audio decoded (its length, its
onsets) is checked by `ldm.apps.animate.timeline.plan_walk`, still before any model loads.

How long a walk is, and so how many frames it has:
- with `times` (seconds, one per keyframe; a loop adds the time it is back at the first), the
  frame count follows from them and `fps`;
- with `audio` and no times, the walk lasts as long as the audio segment, keyframes evenly spread;
- with neither, `frames` per segment, as before timelines existed (`fps` only sets the playback).

`motion` is how frames are spaced between keyframes: "even" (the default without audio: equal
steps of the frame distance, measured on a linear probe render, which costs one more render of
the walk per `even_passes`), "audio" (the default with audio: steps in proportion to the audio's
onset strength or energy, re-spaced the same way) or "linear" (equal steps of the interpolation
weight: one render, uneven motion). Re-spaced diffusion walks dissolve their jumps
(`dissolve_jumps`, `ldm.apps.animate.jumps`).

`render_settings` is what OUT/settings.json holds: everything the frames depend on (the pipeline's
weights and the audio file included, by size and modification time or by hash). A rerun into the
same folder must match it, so a resumed render never mixes frames of two walks;
`DELIVERY_SETTINGS` may change freely.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ldm.apps.animate.audio import FEATURES
from ldm.core.errors import LdmError
from ldm.sampling.lora import LORA_WEIGHTS, LoraChoice

WALK_KINDS = ("prompt", "seed", "image", "autoencoder")
DEFAULT_GUIDANCE = 4.0
DEFAULT_FRAMES = 16  # per segment, for walks with neither times nor audio
# Inverted noise reproduces its image only without guidance (see ldm.sampling.inversion).
IMAGE_WALK_GUIDANCE = 1.0
IMAGE_WALK_SAMPLER = "ddim"  # the sampler that DDIM inversion inverts
SETTINGS_FILE = "settings.json"
# Settings that change how the result is delivered, not its frames: free to change on resume.
# (`fps` only while the walk has no clock: with times or audio it sets the frame count.)
DELIVERY_SETTINGS = ("out", "fps", "batch_size", "video_scale")
MOTIONS = ("even", "audio", "linear")  # how frames are spaced between keyframes (module docstring)
DEFAULT_AUDIO_SMOOTH = 0.1  # seconds: the Gaussian that keeps audio-driven motion from jittering
# Settings that only mean something with audio: dropped from settings.json without it.
AUDIO_SETTINGS = ("audio_start", "audio_end", "on_beats", "audio_smooth", "audio_feature")


@dataclass
class WalkSettings:
    pipeline: str  # RUN/pipeline (an autoencoder walk also takes RUN/vae)
    out: str
    kind: str = "prompt"  # one of WALK_KINDS
    prompts: list[str] = field(default_factory=list)  # one per keyframe (a seed walk: exactly one)
    seeds: list[int] = field(default_factory=list)  # one per keyframe; prompt walk default 0..K-1
    images: list[str] = field(default_factory=list)  # image and autoencoder walks
    captions: list[str] = field(default_factory=list)  # image walk: one per image
    negative_prompt: str = ""
    frames: int = DEFAULT_FRAMES  # per segment, both keyframes included (walks with neither times nor audio)
    loop: bool = False
    motion: str | None = None  # one of MOTIONS; None: "audio" with audio, else "even"
    even_passes: int = 1  # re-spacing passes after the linear probe (motion "even" and "audio")
    dissolve_jumps: bool = True  # re-spaced diffusion walks: dissolve jumps (ldm.apps.animate.jumps)
    distance_model: str | None = None  # a CLIP folder: measure motion in its image features
    steps: int = 20
    guidance: float | None = None  # None: DEFAULT_GUIDANCE, or IMAGE_WALK_GUIDANCE for image walks
    sampler: str | None = None  # None: the default sampler, or DDIM for image walks
    guidances: list[float | None] = field(default_factory=list)  # per keyframe; None/empty: `guidance`
    fps: float = 12.0
    height: int | None = None  # frame size in pixels; None: the model's (any multiple of its autoencoder's factor)
    width: int | None = None
    batch_size: int = 4
    video_scale: int = 1  # nearest-neighbour enlargement of the GIF and MP4
    times: list[float] = field(default_factory=list)  # seconds from the walk's start (see the docstring)
    audio: str | None = None  # an audio file (anything ffmpeg reads): sets the length, muxed into the MP4
    audio_start: float = 0.0  # seconds into the audio file where the walk starts
    audio_end: float | None = None  # None: the end of the file (or of the timeline, with times)
    on_beats: bool = False  # snap keyframes (but the walk's ends) to the nearest onset in the audio
    audio_smooth: float = DEFAULT_AUDIO_SMOOTH  # seconds of Gaussian smoothing of the audio target
    audio_feature: str = "onsets"  # what motion follows: onset strength or RMS "energy"
    loras: list[LoraChoice] = field(default_factory=list)  # LoRA folders, each at its scale
    vae: str | None = None  # decode (an autoencoder walk: encode too) with this autoencoder, not the pipeline's

    @property
    def num_keyframes(self) -> int:
        return {"prompt": len(self.prompts), "seed": len(self.seeds)}.get(self.kind, len(self.images))

    @property
    def uses_diffusion(self) -> bool:
        return self.kind != "autoencoder"

    @property
    def timed(self) -> bool:
        """True when the walk runs on a clock (times or audio) rather than `frames` per segment."""
        return bool(self.times) or self.audio is not None

    @property
    def respaced(self) -> bool:
        """True when a linear probe render places the frames (even or audio motion)."""
        return self.motion != "linear"



def resolve(settings: WalkSettings) -> WalkSettings:
    """Fill the defaults that depend on the walk kind, then check everything that can be checked
    without loading a model. Raises LdmError."""
    from ldm.sampling.samplers import DEFAULT_SAMPLER

    if settings.kind not in WALK_KINDS:
        raise LdmError(f"unknown walk kind {settings.kind!r}; choose one of {', '.join(WALK_KINDS)}")
    image_walk = settings.kind == "image"
    settings = replace(
        settings,
        seeds=settings.seeds or (list(range(len(settings.prompts))) if settings.kind == "prompt" else []),
        guidance=settings.guidance if settings.guidance is not None
        else (IMAGE_WALK_GUIDANCE if image_walk else DEFAULT_GUIDANCE),
        sampler=settings.sampler or (IMAGE_WALK_SAMPLER if image_walk else DEFAULT_SAMPLER),
        motion=settings.motion or ("audio" if settings.audio is not None else "even"),
        times=[float(t) for t in settings.times],
    )
    _check_numbers(settings)
    _check_keyframes(settings)
    if settings.loras and not settings.uses_diffusion:
        raise LdmError("--lora is for walks through the diffusion model, not an --autoencoder walk")
    _check_times(settings)
    _check_audio(settings)
    settings = replace(settings, guidances=_keyframe_guidances(settings))
    if settings.uses_diffusion:
        _check_sampler(settings)
    return settings


def _check_numbers(s: WalkSettings) -> None:
    if s.motion not in MOTIONS:
        raise LdmError(f"unknown motion {s.motion!r}; choose one of {', '.join(MOTIONS)}")
    if s.frames < 2:
        raise LdmError(f"--frames must be at least 2 (a segment's two keyframes), got {s.frames}")
    if not s.fps > 0:
        raise LdmError(f"--fps must be positive, got {s.fps:g}")
    for name, value in (("batch-size", s.batch_size), ("steps", s.steps), ("even-passes", s.even_passes),
                        ("video-scale", s.video_scale)):
        if value < 1:
            raise LdmError(f"--{name} must be at least 1, got {value}")


def _check_keyframes(s: WalkSettings) -> None:
    what = {"prompt": "prompts", "seed": "seeds"}.get(s.kind, "images")
    if s.num_keyframes < 2:
        raise LdmError(f"a {s.kind} walk needs at least two keyframes ({what}), got {s.num_keyframes}")
    if s.kind == "prompt" and len(s.seeds) != len(s.prompts):
        raise LdmError(f"got {len(s.prompts)} prompts but {len(s.seeds)} seeds: give one seed per prompt "
                       "(or none, for seeds 0, 1, 2, ...)")
    if s.kind == "seed" and len(s.prompts) != 1:
        raise LdmError(f"a seed walk takes exactly one prompt, got {len(s.prompts)}")
    if s.kind == "image" and len(s.captions) != len(s.images):
        raise LdmError(f"got {len(s.images)} images but {len(s.captions)} captions: an image walk needs "
                       "one caption per image (the prompt its inversion is conditioned on)")
    for path in s.images:
        _check_image(path)
    if s.distance_model is not None and not (Path(s.distance_model) / "config.json").is_file():
        raise LdmError(f"--distance-model {s.distance_model}: no CLIP model there (config.json is missing)")
    if s.guidances and len(s.guidances) != s.num_keyframes:
        raise LdmError(f"got {len(s.guidances)} guidance values for {s.num_keyframes} keyframes: give one "
                       "per keyframe (or none)")


def _keyframe_guidances(s: WalkSettings) -> list[float]:
    return [s.guidance if g is None else float(g) for g in (s.guidances or [None] * s.num_keyframes)]


def _check_times(s: WalkSettings) -> None:
    """Keyframe times: one per keyframe (a loop: one more), from 0, increasing."""
    if not s.times:
        return
    wanted = s.num_keyframes + (1 if s.loop else 0)
    if len(s.times) != wanted:
        closing = " (the last one: when it is back at the first keyframe)" if s.loop else ""
        raise LdmError(f"a {'looping ' if s.loop else ''}walk through {s.num_keyframes} keyframes takes "
                       f"{wanted} times{closing}, got {len(s.times)}")
    if s.times[0] != 0:
        raise LdmError(f"keyframe times must start at 0, the walk's start, got {s.times[0]:g} "
                       "(with audio, --audio-start says where in the audio the walk starts)")
    for before, after in zip(s.times[:-1], s.times[1:]):
        if not after > before:
            raise LdmError(f"keyframe times must increase: {before:g} s is followed by {after:g} s")


def _check_audio(s: WalkSettings) -> None:
    """What can be told about the audio without decoding it."""
    if s.audio is None:
        if s.motion == "audio":
            raise LdmError("motion that follows the audio needs --audio")
        given = [name for name, value, default in (("--audio-start", s.audio_start, 0.0),
                                                   ("--audio-end", s.audio_end, None),
                                                   ("--on-beats", s.on_beats, False)) if value != default]
        if given:
            raise LdmError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --audio")
        return
    if not Path(s.audio).is_file():
        raise LdmError(f"audio file not found: {s.audio}")
    if s.audio_start < 0:
        raise LdmError(f"--audio-start must be 0 or more seconds, got {s.audio_start:g}")
    if s.audio_end is not None and not s.audio_end > s.audio_start:
        raise LdmError(f"--audio-end ({s.audio_end:g} s) must come after --audio-start ({s.audio_start:g} s)")
    if s.audio_smooth < 0:
        raise LdmError(f"--audio-smooth must be 0 or more seconds, got {s.audio_smooth:g}")
    if s.audio_feature not in FEATURES:
        raise LdmError(f"unknown audio feature {s.audio_feature!r}; choose one of {', '.join(FEATURES)}")


def _check_image(path: str) -> None:
    from ldm.data.decode import read_image_file

    read_image_file(path)


def _check_sampler(s: WalkSettings) -> None:
    from ldm.sampling.samplers import STOCHASTIC, check_sampler

    check_sampler(s.sampler)
    if s.sampler in STOCHASTIC:
        raise LdmError(f"sampler {s.sampler!r} draws fresh noise at every step: a walk needs a "
                       "deterministic sampler (e.g. ddim or dpmsolver++) so that frames match and resume")
    if s.kind == "image" and s.sampler != IMAGE_WALK_SAMPLER:
        raise LdmError(f"an image walk samples with {IMAGE_WALK_SAMPLER} (its keyframes are DDIM "
                       f"inversions), got --sampler {s.sampler}")


def render_settings(s: WalkSettings) -> dict:
    """Everything the frames depend on, as saved in OUT/settings.json."""
    delivery = [k for k in DELIVERY_SETTINGS if not (k == "fps" and s.timed)]
    saved = {k: v for k, v in asdict(s).items() if k not in delivery}
    if s.timed:  # the clock, not frames per segment, sets the frame count
        saved.pop("frames")
    if not s.respaced:  # then none of them changes a frame
        saved.pop("even_passes")
        saved.pop("distance_model")
        saved.pop("dissolve_jumps")
    elif not s.uses_diffusion:  # its frames are blends already: no jumps to dissolve
        saved.pop("dissolve_jumps")
    elif s.distance_model is not None:
        saved["distance_model"] = str(Path(s.distance_model).resolve())
    if not s.uses_diffusion:
        for key in ("steps", "guidance", "guidances", "sampler", "negative_prompt", "prompts", "seeds",
                    "captions"):
            saved.pop(key)
    if s.audio is None:
        for key in AUDIO_SETTINGS:
            saved.pop(key)
    else:
        saved["audio"] = {"path": str(Path(s.audio).resolve()), "sha256": _sha256(s.audio)}
    pipeline = Path(s.pipeline).resolve()
    saved["pipeline"] = str(pipeline)
    # A re-exported pipeline has new weights: their sizes and modification times tell.
    saved["weights"] = {str(p.relative_to(pipeline)): _file_stamp(p)
                        for p in sorted(pipeline.rglob("*.safetensors"))}
    saved["images"] = [{"path": str(Path(p).resolve()), "sha256": _sha256(p)} for p in s.images]
    saved.pop("vae")
    if s.vae is not None:  # like the pipeline's weights: another decoder makes other frames
        vae = Path(s.vae).resolve()
        stamps = {p.name: _file_stamp(p) for p in sorted(vae.glob("*.safetensors"))}
        saved["vae"] = {"path": str(vae), "weights": stamps}
    saved.pop("loras")
    if s.loras:  # like the pipeline's weights: a retrained LoRA must not mix with older frames
        saved["loras"] = [{"path": str(Path(lora.path).resolve()), "scale": lora.scale,
                           "weights": _file_stamp(Path(lora.path) / LORA_WEIGHTS)} for lora in s.loras]
    return json.loads(json.dumps(saved))  # as it reads back from JSON (lists, floats)


def _file_stamp(path: Path) -> list[int]:
    return [path.stat().st_size, path.stat().st_mtime_ns]


def _sha256(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def saved_walk_settings(folder: str | Path) -> WalkSettings:
    """The settings a walk folder was rendered with, read back from its settings.json (what the
    frames do not depend on, like the batch size, comes back at its default)."""
    folder = Path(folder)
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise LdmError(f"{folder} is not a walk folder: {SETTINGS_FILE} is missing (render one with "
                       "ldm animate)")
    saved = json.loads(path.read_text())
    known = {f for f in WalkSettings.__dataclass_fields__} - {"out", "images", "audio", "vae"}
    settings = WalkSettings(out=str(folder), **{k: v for k, v in saved.items() if k in known})
    settings.images = [image["path"] for image in saved.get("images", [])]
    settings.audio = saved["audio"]["path"] if saved.get("audio") else None
    settings.vae = saved["vae"]["path"] if saved.get("vae") else None
    if "even_motion" in saved:  # a walk rendered before `motion` existed
        settings.motion = "even" if saved["even_motion"] else "linear"
    return settings


def check_saved_settings(out: Path, current: dict) -> bool:
    """True if OUT holds a render of these settings, False if OUT is new; LdmError if it holds
    anything else (so a resumed render can never mix frames of two walks)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        if out.exists() and any(out.iterdir()):
            raise LdmError(f"{out} is not empty and has no {SETTINGS_FILE}: it is not a walk folder; "
                           "choose a new --out")
        return False
    saved = json.loads(path.read_text())
    differ = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if differ:
        raise LdmError(f"{out} holds a walk rendered with other settings ({', '.join(differ)} differ); "
                       "rerun with the same settings to resume, or choose a new --out")
    return True

