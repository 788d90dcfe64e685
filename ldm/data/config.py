"""The `data:` section of every stage's config, and its `buckets:` subsection."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, Area, Count, Fraction, NonNegativeInt, Side
from ldm.data.decode import (
    DEFAULT_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    PIL_HARD_LIMIT,
    background_rgb,
)


@dataclass(config=SECTION)
class BucketConfig:
    """Aspect-ratio buckets (ldm/data/buckets.py): each image is resized to cover the bucket whose
    aspect ratio is closest to its own and cropped to it, instead of to a square. Either `sizes`,
    or the sizes made from `area`, `min_side`, `max_side` and `step` (as kohya's sd-scripts does)."""

    # Pixels of each bucket (at most); null: data.resolution squared.
    area: Area | None = None
    # Bounds on either side of a bucket; null: data.resolution / 2 and data.resolution * 2.
    min_side: Side | None = None
    max_side: Side | None = None
    # Every side is a multiple of this: a multiple of the autoencoder's downsampling factor.
    step: Annotated[int, Field(ge=1, le=1024)] = 8
    # An explicit list of [width, height] sizes instead (area, min_side, max_side, step unused).
    sizes: list[tuple[Side, Side]] | None = None

    def __post_init__(self):
        if self.min_side and self.max_side and self.min_side > self.max_side:
            raise ValueError(f"data.buckets.min_side={self.min_side} is above "
                             f"data.buckets.max_side={self.max_side}")
        if self.sizes is not None:
            if not self.sizes:
                raise ValueError("data.buckets.sizes is empty: give [width, height] pairs, or leave it null")


@dataclass(config=SECTION)
class CaptionTagsConfig:
    """Captions as comma-separated tags ("1girl, red hair, smiling"), as kohya's sd-scripts
    (`shuffle_caption`, `keep_tokens`, `caption_separator`, `caption_tag_dropout_rate`) and OneTrainer
    treat them: per training sample, redrawn every epoch, the tags after the first `keep` are shuffled
    and may be dropped, so the model does not tie a concept to a tag's position. Validation captions
    are left as written. Needs cache: false (the latent cache encodes each caption once)."""

    shuffle: bool = True
    # The first tags kept in place and never dropped (a trigger word, a subject).
    keep: Annotated[int, Field(ge=0, le=255)] = 0
    separator: Annotated[str, Field(min_length=1, max_length=8)] = ","
    # The share of the other tags left out of each sample.
    dropout: Fraction = 0.0


@dataclass(config=SECTION)
class PriorPreservationConfig:
    """DreamBooth's prior preservation (Ruiz et al. 2023; diffusers' `train_dreambooth.py`
    `--with_prior_preservation`, kohya's sd-scripts `reg_data_dir` / `prior_loss_weight`): the base
    pipeline makes `num_class_images` images of `class_prompt` once (RUN/diffusion/class_images/),
    and every training batch adds `batch_size` of them to the user's images, so that fine-tuning
    on a few images of one subject does not make the model forget what the rest of its class looks
    like. The loss is the user's images' loss + loss_weight * the class images' loss."""

    # The class without the subject: "a photo of a dog". Required (checked below, so that a section
    # given without it is one line naming the section).
    class_prompt: Annotated[str, Field(min_length=1)] | None = None
    num_class_images: Annotated[int, Field(ge=1, le=100_000)] = 100
    loss_weight: Annotated[float, Field(ge=0, le=100)] = 1.0  # 0: the class images train nothing
    batch_size: Count | None = None  # class images in each batch; null: data.batch_size
    # How the base pipeline makes them (as `ldm generate` would: its default sampler, seeds seed,
    # seed + 1, ...), at data.resolution.
    steps: Annotated[int, Field(ge=1, le=1000)] = 25
    guidance_scale: Annotated[float, Field(ge=1, le=50)] = 5.0
    negative_prompt: str = ""
    seed: NonNegativeInt = 0

    def __post_init__(self):
        if self.class_prompt is None:
            raise ValueError("data: prior_preservation is given without its class_prompt, the class without "
                             "the subject (e.g. class_prompt: a photo of a dog)")


@dataclass(config=SECTION)
class DataConfig:
    # A local imagefolder (metadata.jsonl, or a caption .txt beside each image), a folder written by
    # `Dataset.save_to_disk`, WebDataset .tar or .parquet shards (a glob such as shards/*.tar, a file,
    # or a list of paths or URLs), or a hub dataset name (needs the network).
    source: str | list[str]
    split: str = "train"
    image_column: str = "image"
    # A column of strings, or of lists of strings (one caption picked at random per sample).
    caption_column: str = "text"
    resolution: Side = 32
    center_crop: bool = True
    # Off by default: mirroring an image turns "left" into "right" but leaves its caption alone.
    random_flip: bool = False
    max_samples: Count | None = None
    val_fraction: Fraction = 0.1
    # Stream samples instead of downloading or loading the whole dataset first.
    streaming: bool = False
    # Streamed samples are shuffled in a buffer of this many per process; 0: in stream order. A
    # resumed stream refills the buffer, so only 0 resumes exactly (ldm/data/datamodule.py).
    shuffle_buffer: NonNegativeInt = 1000
    # Per process: under N processes the global batch is N * batch_size.
    batch_size: Count = 32
    num_workers: NonNegativeInt = 0
    seed: NonNegativeInt = 0
    # What transparent pixels become: a colour name PIL knows (white, black, gray, ...) or #rrggbb.
    background: str = DEFAULT_BACKGROUND
    # Images with more pixels are skipped and counted, never decoded (PIL's decompression-bomb limit).
    max_pixels: Count = DEFAULT_MAX_PIXELS
    # An image whose caption is missing, empty or not a string: skipped and counted, or (keep)
    # trained with the empty prompt (what classifier-free guidance's caption dropout trains anyway).
    empty_captions: Literal["skip", "keep"] = "skip"
    # Aspect-ratio buckets; null (the default): every image resized and cropped to a square of
    # data.resolution. `buckets: {}` turns them on with the defaults.
    buckets: BucketConfig | None = None
    # Shuffle (and drop) the tags of tag-style captions per sample and epoch; null: captions as written.
    caption_tags: CaptionTagsConfig | None = None
    # A loss mask per image (ldm/data/masks.py): the diffusion stage's loss weighs each latent pixel by
    # it (white or opaque: full weight; loss.mask_floor the weight of the rest). none; alpha (the
    # image's own transparency, read before it is composited over `background`); file (cat.png's mask
    # is cat.mask.png beside it: caption-files and imagefolder sources); column (mask images in
    # data.mask_column). An image without one trains at full weight, and is counted.
    mask: Literal["none", "alpha", "file", "column"] = "none"
    mask_column: str = "mask"  # read with mask: column only
    # The diffusion stage's DreamBooth prior preservation: class images made by the base pipeline
    # and mixed into every batch; null: off.
    prior_preservation: PriorPreservationConfig | None = None

    def __post_init__(self):
        try:
            background_rgb(self.background)
        except ValueError:
            raise ValueError(f"data.background={self.background!r} is not a colour: use a name such as "
                             "white, black or gray, or #rrggbb") from None
        if not 1 <= self.max_pixels <= PIL_HARD_LIMIT:
            raise ValueError(f"data.max_pixels must be between 1 and {PIL_HARD_LIMIT} (PIL refuses to open "
                             f"larger images), got {self.max_pixels}")
        if self.prior_preservation is not None and self.streaming:
            raise ValueError("data.prior_preservation needs data.streaming: false (a few subject images "
                             "need no streaming, and the class images are a folder)")
        if self.buckets is not None and self.streaming:
            raise ValueError("data.buckets needs data.streaming: false (images are sorted into buckets "
                             "by their sizes, read once before training)")
