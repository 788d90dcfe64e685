"""What `ldm generate` is asked for: its settings, each value checked when they are made
(`ldm.apps.options`). How they fit the pipeline (its sizes, its LoRAs, the sampler's name, the
device) is checked by `ldm.apps.generate.check_options` before any model loads.

This module imports no model code, so `ldm generate -h` reads the defaults from here quickly.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from ldm.apps.options import PathText, Settings
from ldm.core.config import SECTION, Count, NonNegativeInt, PromptChunks
from ldm.sampling.lora import LoraChoice

Dtype = Literal["float32", "float16", "bfloat16"]  # the weights' precision while sampling
UnitInterval = Annotated[float, Field(ge=0, le=1)]


@dataclass(config=SECTION)
class GenerateOptions(Settings):
    pipeline: PathText
    prompts: list[str]
    out: PathText | None = None  # default: samples/ beside the pipeline folder (samples-2/, ... when it holds images)
    n: Count = 1
    seed: NonNegativeInt = 0  # image i of a prompt has seed + i
    steps: Count = 20
    guidance: float = 5.0  # 1: no guidance
    guidance_rescale: UnitInterval | None = None  # None: the pipeline's own (its scheduler config's)
    negative: str = ""
    prompt_chunks: PromptChunks | None = None  # windows of 75 tokens a prompt may take; None: the pipeline's
    # None: the pipeline's own (ldm.sampling.samplers.default_sampler): dpmsolver++, lcm for a distilled one
    sampler: str | None = None
    eta: UnitInterval = 0.0  # DDIM's: 0 deterministic, 1 DDPM-like
    height: int | None = None  # None: the model's (any multiple of its autoencoder's factor)
    width: int | None = None
    init_image: PathText | None = None  # start from this image (image-to-image)
    strength: Annotated[float, Field(gt=0, le=1)] = 0.8  # with init_image: how much of it to repaint
    mask: PathText | None = None  # with init_image: repaint only its white part (inpainting)
    feather: Annotated[int, Field(ge=0, le=256)] = 2  # with mask: its edge's blur radius, pixels (blends ~2.5x it)
    repaint: Annotated[int, Field(ge=0, le=100)] = 0  # with mask: RePaint's resampling: times each step is redone
    batch_size: Count = 8
    device: str | None = None  # None: the accelerator if any, one per process
    dtype: Dtype = "float32"
    loras: list[LoraChoice] = field(default_factory=list)  # loaded onto the pipeline, each at its scale
    vae: PathText | None = None  # decode with this autoencoder (a fine-tuned decoder) instead of the pipeline's
    embeddings: list[PathText] = field(default_factory=list)  # textual-inversion files, their tokens usable in prompts
