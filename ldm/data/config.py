"""The `data:` section of every stage's config."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION


@dataclass(config=SECTION)
class DataConfig:
    # A local imagefolder (metadata.jsonl, or a caption .txt beside each image), a folder written by
    # `Dataset.save_to_disk`, or a hub dataset name (needs the network).
    source: str
    split: str = "train"
    image_column: str = "image"
    # A column of strings, or of lists of strings (one caption picked at random per sample).
    caption_column: str = "text"
    resolution: int = 32
    center_crop: bool = True
    # Off by default: mirroring an image turns "left" into "right" but leaves its caption alone.
    random_flip: bool = False
    max_samples: int | None = None
    val_fraction: float = 0.1
    # Stream samples instead of downloading or loading the whole dataset first.
    streaming: bool = False
    shuffle_buffer: int = 1000
    # Per process: under N processes the global batch is N * batch_size.
    batch_size: int = 32
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.resolution < 8:
            raise ValueError(f"data.resolution must be at least 8, got {self.resolution}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {self.batch_size}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"data.max_samples must be at least 1, got {self.max_samples}")
