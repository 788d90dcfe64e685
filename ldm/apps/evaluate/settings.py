"""What `ldm evaluate autoencoder|diffusion|inpainting|walk` is asked for: one settings model each, every value
checked when it is made (`ldm.apps.options`: a mistake is one line naming the option), and the
defaults the command line shows (ldm/cli/settings_help.py). `ldm.apps.evaluate.evaluate` runs one.

    DiffusionEvaluation(pipeline="runs/shapes/pipeline", data="data/shapes", n=0)
        ->  --n must be at least 1, got 0

What depends on files (a folder that is no model, an --out that would replace an earlier result)
is checked by `evaluate` before any model loads. This module imports no model code, so
`ldm evaluate X -h` reads the defaults from here quickly.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from ldm.apps.options import PathText, Settings
from ldm.core.config import SECTION, Count, NonNegativeInt

DEFAULT_SPLIT = "test"  # the shapes data's held-out combinations
MAX_REAL_IMAGES = 512  # real images an evaluation compares with, at most
IMAGES_PER_PROMPT = 8
SAMPLING_STEPS = 20
GUIDANCE = 4.0
SPLIT_NAME = re.compile(r"\w+(\.\w+)*")  # a split's name as `datasets` takes it: train, test, validation


def _split_name(name: str) -> str:
    # An empty name would make a data folder's split pattern "/**": a glob of the whole file system.
    if not SPLIT_NAME.fullmatch(name):
        raise ValueError(f"--split must be the name of a split (letters, digits and _: train, test), got {name!r}")
    return name


Split = Annotated[str, AfterValidator(_split_name)]


@dataclass(config=SECTION)
class AutoencoderEvaluation(Settings):
    vae: PathText  # RUN/vae
    data: PathText  # the dataset whose split is reconstructed
    split: Split = DEFAULT_SPLIT
    max_images: Count = MAX_REAL_IMAGES
    grid: PathText | None = None  # originals over reconstructions, as a PNG
    out: PathText | None = None  # the results as JSON


@dataclass(config=SECTION)
class DiffusionEvaluation(Settings):
    pipeline: PathText  # RUN/pipeline
    data: PathText  # the dataset whose split the generated images are compared with
    prompts_file: PathText | None = None  # None: the shapes data's held-out prompts, else the split's captions
    clip: PathText | None = None  # None: RUN/clip beside the pipeline, if any
    inception: PathText | None = None  # Inception-v3 weights for standard FID/KID; None: on CLIP features
    split: Split = DEFAULT_SPLIT
    n: Count = IMAGES_PER_PROMPT  # images per prompt
    seed: NonNegativeInt = 0  # image i of a prompt has seed + i
    steps: Count = SAMPLING_STEPS
    # 1: no guidance; below 1 samples as 1 does, so it is refused rather than ignored
    guidance: Annotated[float, Field(ge=1)] = GUIDANCE
    sampler: str | None = None  # None: the pipeline's own (as ldm generate, which checks the name)
    samples: PathText | None = None  # keep the generated images here; None: discarded
    out: PathText | None = None  # the results as JSON


@dataclass(config=SECTION)
class InpaintingEvaluation(Settings):
    pipeline: PathText  # RUN/pipeline: any (repainting by latent blending) or an inpainting model
    cases: Annotated[int, Field(ge=1, le=1000)] = 12  # shapes images whose object is replaced
    n: Count = 2  # images per case
    seed: NonNegativeInt = 0  # image i of a case has seed + i
    steps: Count = SAMPLING_STEPS
    guidance: Annotated[float, Field(ge=1)] = GUIDANCE
    strength: Annotated[float, Field(gt=0, le=1)] = 1.0  # of the masked part: 1 repaints it from noise
    feather: Annotated[int, Field(ge=0, le=256)] = 2  # the overlay's edge blur radius, pixels
    repaint: Annotated[int, Field(ge=0, le=100)] = 0  # RePaint's resampling (text-to-image pipelines)
    samples: PathText | None = None  # keep the images and a grid here; None: discarded
    out: PathText | None = None  # the results as JSON


@dataclass(config=SECTION)
class WalkEvaluation(Settings):
    folder: PathText  # a walk folder written by ldm animate
    out: PathText | None = None  # the results as JSON
