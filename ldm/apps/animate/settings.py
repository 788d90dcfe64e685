"""What a walk is: its settings, each value checked when they are made (`ldm.apps.options`).

    WalkSettings(pipeline="runs/shapes/pipeline", out="walks/demo",
                 prompts=["a red circle", "a blue square"], seeds=[1, 2])

How the values fit together (keyframe counts, times, the audio file, the sampler) is checked by
`ldm.apps.animate.resolve.resolve`, which also fills the defaults that depend on the walk kind;
what needs the audio decoded, by `ldm.apps.animate.timeline.plan_walk`. Both run before any
model loads. What a render saves of them is `ldm.apps.animate.saved_settings`.

How long a walk is, and so how many frames it has:
- with `times` (seconds, one per keyframe; a loop adds the time it is back at the first), the
  frame count follows from them and `fps`;
- with `audio` and no times, the walk lasts as long as the audio segment, keyframes evenly spread;
- with neither, `frames` per segment, as before timelines existed (`fps` only sets the playback).

`motion` is how frames are spaced between keyframes: "even" (the default without audio: equal
steps of the frame distance, measured on a linear probe render, which costs one more render of
the walk per `even_passes`), "audio" (the default with audio: steps in proportion to the audio's
onset strength or energy, re-spaced the same way) or "linear" (equal steps of the interpolation
weight: one render, uneven motion).

`interpolation` is how a diffusion walk makes a frame between two keyframes (the frames at the
keyframes are the keyframe images, `ldm generate`'s, whichever it is):
- "dissolve" (the default): text embeddings lerped and starting noises slerped, and where the
  model still jumps between two pictures, the frames dissolved (`dissolve_jumps`,
  `ldm.apps.animate.jumps`: found after the probe pass of a re-spaced walk);
- "slerp": the same path without dissolves (stable-diffusion-videos' walk);
- "blend": latent blending (`ldm.apps.animate.blend`): neighbouring frames share their early
  denoising steps and branch late, so the layout cannot flip between neighbours;
- "attention": attention interpolation, AID (`ldm.apps.animate.attention_walk`): attention keys
  and values interpolated between the two keyframes' and fused with them, coefficients spread by
  a Beta prior.

`init_image` and `mask` keep an image fixed in prompt and seed walks: only the mask's white part
walks, as `ldm generate --mask` paints it (`ldm.apps.animate.fixed_region`).

This module imports no model code, so `ldm animate -h` reads the defaults from here quickly.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from ldm.apps.animate.audio import Feature
from ldm.apps.options import PathText, Settings
from ldm.core.config import SECTION, Count, NonNegative, Positive, PromptChunks
from ldm.sampling.lora import LoraChoice

WalkKind = Literal["prompt", "seed", "image", "autoencoder"]
Motion = Literal["even", "audio", "linear"]  # how frames are spaced between keyframes (module docstring)
Interpolation = Literal["dissolve", "slerp", "blend", "attention"]  # how frames between keyframes are made
DEFAULT_INTERPOLATION = "dissolve"
DEFAULT_GUIDANCE = 4.0
# Inverted noise reproduces its image only without guidance (see ldm.sampling.inversion).
IMAGE_WALK_GUIDANCE = 1.0
IMAGE_WALK_SAMPLER = "ddim"  # the sampler that DDIM inversion inverts
# Seconds: smoothing longer than this flattens any song's target to its mean (and the Gaussian's
# kernel, 6 of them long at the envelope's rate, would no longer fit in memory).
MAX_AUDIO_SMOOTH = 10.0


@dataclass(config=SECTION)
class WalkSettings(Settings):
    pipeline: PathText  # RUN/pipeline (an autoencoder walk also takes RUN/vae)
    out: PathText
    kind: WalkKind = "prompt"
    prompts: list[str] = field(default_factory=list)  # one per keyframe (a seed walk: exactly one)
    seeds: list[int] = field(default_factory=list)  # one per keyframe; prompt walk default 0..K-1
    images: list[PathText] = field(default_factory=list)  # image and autoencoder walks
    captions: list[str] = field(default_factory=list)  # image walk: one per image
    negative_prompt: str = ""
    # Per segment, both keyframes included (walks with neither times nor audio).
    frames: Annotated[int, Field(ge=2)] = 16
    loop: bool = False
    motion: Motion | None = None  # None: "audio" with audio, else "even"
    even_passes: Count = 1  # re-spacing passes after the linear probe (motion "even" and "audio")
    interpolation: Interpolation = DEFAULT_INTERPOLATION  # diffusion walks (module docstring)
    dissolve_jumps: bool = True  # re-spaced walks with interpolation "dissolve": dissolve jumps
    distance_model: PathText | None = None  # a CLIP folder: measure motion in its image features
    steps: Count = 20
    guidance: float | None = None  # None: DEFAULT_GUIDANCE, or IMAGE_WALK_GUIDANCE for image walks
    sampler: str | None = None  # None: the default sampler, or DDIM for image walks
    guidances: list[float | None] = field(default_factory=list)  # per keyframe; None/empty: `guidance`
    fps: Positive = 12.0
    # Frame size in pixels; None: the model's (any multiple of its autoencoder's factor, checked
    # against the pipeline by ldm.sampling.pipeline_io.check_image_size).
    height: int | None = None
    width: int | None = None
    batch_size: Count = 4
    video_scale: Count = 1  # nearest-neighbour enlargement of the GIF and MP4
    times: list[float] = field(default_factory=list)  # seconds from the walk's start (see the docstring)
    audio: PathText | None = None  # an audio file (anything ffmpeg reads): sets the length, muxed into the MP4
    audio_start: NonNegative = 0.0  # seconds into the audio file where the walk starts
    audio_end: float | None = None  # None: the end of the file (or of the timeline, with times)
    on_beats: bool = False  # snap keyframes (but the walk's ends) to the nearest onset in the audio
    # Seconds of Gaussian smoothing of the audio target, which keeps audio-driven motion from jittering.
    audio_smooth: Annotated[float, Field(ge=0, le=MAX_AUDIO_SMOOTH)] = 0.1
    audio_feature: Feature = "onsets"  # what motion follows: onset strength or RMS "energy"
    loras: list[LoraChoice] = field(default_factory=list)  # LoRA folders, each at its scale
    vae: PathText | None = None  # decode (an autoencoder walk: encode too) with this autoencoder, not the pipeline's
    prompt_chunks: PromptChunks | None = None  # windows of 75 tokens a prompt may take; None: the pipeline's
    embeddings: list[PathText] = field(default_factory=list)  # textual-inversion files, their tokens usable in prompts
    # With mask: only the mask's white part walks, the rest stays init_image (ldm/apps/animate/fixed_region.py).
    init_image: PathText | None = None
    mask: PathText | None = None
    feather: Annotated[int, Field(ge=0, le=256)] = 2  # with mask: its edge's blur radius, pixels

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
    def dissolves(self) -> bool:
        """True when the walk searches its probe pass for jumps and dissolves them."""
        return self.uses_diffusion and self.respaced and self.dissolve_jumps and self.interpolation == "dissolve"

    @property
    def respaced(self) -> bool:
        """True when a linear probe render places the frames (even or audio motion)."""
        return self.motion != "linear"
