"""What a walk is: its settings, checked before any model loads, and saved beside its frames.

`resolve` fills the defaults that depend on the walk kind and raises LdmError for every mistake
that can be known from the request alone (too few keyframes, mismatched counts, an unreadable
image, a frame count below 2, an fps of 0, a sampler that is not deterministic).

`render_settings` is what OUT/settings.json holds: everything the frames depend on (the pipeline's
weights included, by size and modification time). A rerun into the same folder must match it, so a
resumed render never mixes frames of two walks; `DELIVERY_SETTINGS` may change freely.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ldm.core.errors import LdmError
from ldm.sampling.lora import LORA_WEIGHTS, LoraChoice

WALK_KINDS = ("prompt", "seed", "image", "autoencoder")
DEFAULT_GUIDANCE = 4.0
# Inverted noise reproduces its image only without guidance (see ldm.sampling.inversion).
IMAGE_WALK_GUIDANCE = 1.0
IMAGE_WALK_SAMPLER = "ddim"  # the sampler that DDIM inversion inverts
SETTINGS_FILE = "settings.json"
# Settings that change how the result is delivered, not its frames: free to change on resume.
DELIVERY_SETTINGS = ("out", "fps", "batch_size", "video_scale")


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
    frames: int = 16  # per segment, both keyframes included
    loop: bool = False
    even_motion: bool = False
    even_passes: int = 1
    distance_model: str | None = None  # a CLIP folder: measure motion in its image features
    steps: int = 20
    guidance: float | None = None  # None: DEFAULT_GUIDANCE, or IMAGE_WALK_GUIDANCE for image walks
    sampler: str | None = None  # None: the default sampler, or DDIM for image walks
    fps: float = 12.0
    batch_size: int = 4
    video_scale: int = 1  # nearest-neighbour enlargement of the GIF and MP4
    loras: list[LoraChoice] = field(default_factory=list)  # LoRA folders, each at its scale

    @property
    def num_keyframes(self) -> int:
        return {"prompt": len(self.prompts), "seed": len(self.seeds)}.get(self.kind, len(self.images))

    @property
    def uses_diffusion(self) -> bool:
        return self.kind != "autoencoder"



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
    )
    _check_numbers(settings)
    _check_keyframes(settings)
    if settings.loras and not settings.uses_diffusion:
        raise LdmError("--lora is for walks through the diffusion model, not an --autoencoder walk")
    if settings.uses_diffusion:
        _check_sampler(settings)
    return settings


def _check_numbers(s: WalkSettings) -> None:
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


def _check_image(path: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise LdmError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LdmError(f"cannot read image {path}: {err}") from None


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
    saved = {k: v for k, v in asdict(s).items() if k not in DELIVERY_SETTINGS}
    if not s.even_motion:  # then neither changes a frame
        saved.pop("even_passes")
        saved.pop("distance_model")
    elif s.distance_model is not None:
        saved["distance_model"] = str(Path(s.distance_model).resolve())
    if not s.uses_diffusion:
        for key in ("steps", "guidance", "sampler", "negative_prompt", "prompts", "seeds", "captions"):
            saved.pop(key)
    pipeline = Path(s.pipeline).resolve()
    saved["pipeline"] = str(pipeline)
    # A re-exported pipeline has new weights: their sizes and modification times tell.
    saved["weights"] = {str(p.relative_to(pipeline)): _file_stamp(p)
                        for p in sorted(pipeline.rglob("*.safetensors"))}
    saved["images"] = [{"path": str(Path(p).resolve()), "sha256": _sha256(p)} for p in s.images]
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

