"""A walk's settings made whole: the defaults that depend on its kind filled in, and every mistake
that the request alone shows raised as an LdmError before any model loads.

    s = resolve(WalkSettings(pipeline="p", out="o", prompts=["a red circle", "a blue square"]))
    s.seeds, s.guidance, s.sampler, s.motion   ->  [0, 1], 4.0, "dpmsolver++", "even"

Each value on its own was checked when the settings were made (`WalkSettings`); here, how they
fit together: too few keyframes, mismatched counts, an unreadable image, keyframe times that do
not increase, audio options without audio, a missing audio file, a sampler that is not
deterministic. What needs the audio decoded (its length, its onsets) is checked by
`ldm.apps.animate.timeline.plan_walk`, still before any model loads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ldm.apps.animate.fixed_region import INTERPOLATIONS
from ldm.apps.animate.settings import DEFAULT_GUIDANCE, IMAGE_WALK_GUIDANCE, IMAGE_WALK_SAMPLER, WalkSettings
from ldm.core.errors import LdmError
from ldm.core.layout import MODEL_CONFIG, SCHEDULER
from ldm.data.decode import read_image_file
from ldm.sampling.inpaint import read_mask
from ldm.sampling.pipeline_io import scheduler_config
from ldm.sampling.samplers import DETERMINISTIC_SAMPLER, STOCHASTIC, check_sampler, default_sampler


def resolve(settings: WalkSettings) -> WalkSettings:
    """Fill the defaults that depend on the walk kind, then check everything that can be checked
    without loading a model. Raises LdmError."""
    image_walk = settings.kind == "image"
    settings = replace(
        settings,
        seeds=settings.seeds or (list(range(len(settings.prompts))) if settings.kind == "prompt" else []),
        guidance=settings.guidance if settings.guidance is not None
        else (IMAGE_WALK_GUIDANCE if image_walk else DEFAULT_GUIDANCE),
        sampler=settings.sampler or (IMAGE_WALK_SAMPLER if image_walk else pipeline_sampler(settings.pipeline)),
        motion=settings.motion or ("audio" if settings.audio is not None else "even"),
    )
    if settings.interpolation != "dissolve" and not settings.uses_diffusion:
        raise LdmError(f"--interpolation {settings.interpolation} is for walks through the diffusion model; an "
                       "--autoencoder walk lerps its latents")
    _check_keyframes(settings)
    _check_fixed_region(settings)
    if settings.loras and not settings.uses_diffusion:
        raise LdmError("--lora is for walks through the diffusion model, not an --autoencoder walk")
    _check_times(settings)
    _check_audio(settings)
    settings = replace(settings, guidances=_keyframe_guidances(settings))
    if settings.uses_diffusion:
        _check_sampler(settings)
    return settings


def pipeline_sampler(pipeline: str | None) -> str:
    """The deterministic sampler a walk takes by default: the pipeline's ("tcd" for a distilled
    one), read from its scheduler config; DETERMINISTIC_SAMPLER where there is none to read (an
    --autoencoder walk, or a missing folder, which is named later)."""
    if pipeline is None or not (Path(pipeline) / SCHEDULER / "scheduler_config.json").is_file():
        return DETERMINISTIC_SAMPLER
    return default_sampler(scheduler_config(pipeline), deterministic=True)


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
        read_image_file(path)  # an unreadable image is an LdmError now, not after the models load
    if s.distance_model is not None and not (Path(s.distance_model) / MODEL_CONFIG).is_file():
        raise LdmError(f"--distance-model {s.distance_model}: no CLIP model there (config.json is missing)")
    if s.guidances and len(s.guidances) != s.num_keyframes:
        raise LdmError(f"got {len(s.guidances)} guidance values for {s.num_keyframes} keyframes: give one "
                       "per keyframe (or none)")


def _check_fixed_region(s: WalkSettings) -> None:
    """--init-image and --mask come together, in a walk that can keep a region, and read."""
    if s.mask is None and s.init_image is None:
        return
    if s.mask is None or s.init_image is None:
        given, needed = ("--mask", "--init-image") if s.init_image is None else ("--init-image", "--mask")
        raise LdmError(f"{given} needs {needed} in a walk: the mask's white part walks, the rest stays the init image")
    if s.kind not in ("prompt", "seed"):
        raise LdmError(f"--mask keeps part of an image fixed in prompt and seed walks, not in an {s.kind} walk")
    if s.interpolation not in INTERPOLATIONS:
        raise LdmError(f"--mask takes --interpolation {' or '.join(INTERPOLATIONS)} (whole trajectories per frame), "
                       f"not {s.interpolation}")
    read_image_file(s.init_image, "--init-image")
    read_mask(s.mask)


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
    if s.audio_end is not None and not s.audio_end > s.audio_start:
        raise LdmError(f"--audio-end ({s.audio_end:g} s) must come after --audio-start ({s.audio_start:g} s)")


def _check_sampler(s: WalkSettings) -> None:
    check_sampler(s.sampler)
    if s.sampler in STOCHASTIC:
        raise LdmError(f"sampler {s.sampler!r} draws fresh noise at every step: a walk needs a "
                       "deterministic sampler (e.g. ddim or dpmsolver++) so that frames match and resume")
    if s.kind == "image" and s.sampler != IMAGE_WALK_SAMPLER:
        raise LdmError(f"an image walk samples with {IMAGE_WALK_SAMPLER} (its keyframes are DDIM "
                       f"inversions), got --sampler {s.sampler}")
