"""A local folder of images, each with its caption in a .txt file of the same name."""

from __future__ import annotations

from pathlib import Path

import datasets

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig


def load_caption_files(path: Path, images: list[Path], cfg: DataConfig):
    """A folder where each image has a caption in a .txt file of the same name."""
    captioned = [(image, image.with_suffix(".txt")) for image in images]
    missing = [str(image) for image, text in captioned if not text.exists()]
    if len(missing) == len(captioned):
        raise LdmError(
            f"no captions in {path}: add metadata.jsonl (file_name, {cfg.caption_column}) "
            "or a .txt file beside each image"
        )
    if missing:
        raise LdmError(f"{len(missing)} images in {path} have no caption .txt, e.g. {missing[0]}")
    ds = datasets.Dataset.from_dict({
        cfg.image_column: [str(image) for image, _ in captioned],
        cfg.caption_column: [read_caption_file(text) for _, text in captioned],
    }).cast_column(cfg.image_column, datasets.Image())
    return ds.to_iterable_dataset() if cfg.streaming else ds


def read_caption_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise LdmError(f"caption file {path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                       "save it as UTF-8") from None
