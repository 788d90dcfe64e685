"""Where image-caption data comes from, as a Hugging Face `datasets` dataset.

Four sources, one result (a dataset with an image column and a caption column):
- a local imagefolder with metadata.jsonl (train/ and test/ subfolders become splits),
- a local folder of images with a caption .txt beside each one,
- a folder written by `Dataset.save_to_disk`,
- a dataset on the hub, by name (needs the network; streaming avoids downloading it whole).

Images are kept undecoded (path or bytes) until a sample is read, and unreadable ones are found
once up front (the scan is cached by `datasets`), skipped and counted in a single warning.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import datasets
from PIL import Image

from ldm.core.errors import LdmError
from ldm.core.layout import looks_like_hub_id
from ldm.data.config import DataConfig

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
READABLE = "_ldm_readable"
WARN_PATHS = 3  # how many unreadable files a warning names


def open_image(value) -> Image.Image:
    """Decode an image column value: a PIL image, or the {"path", "bytes"} of an undecoded one."""
    if isinstance(value, Image.Image):
        return value
    if value.get("bytes"):
        image = Image.open(io.BytesIO(value["bytes"]))
    else:
        image = Image.open(value["path"])
    image.load()
    return image


def describe(value) -> str:
    """A name for an image in messages: its path when it has one."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return "<image bytes>"


def load_source(cfg: DataConfig) -> datasets.Dataset | datasets.IterableDataset:
    """The split `cfg.split` of `cfg.source`, with its image column undecoded."""
    path = Path(cfg.source).expanduser()
    if path.exists():
        ds = _load_local(path, cfg)
    elif looks_like_hub_id(cfg.source):
        ds = _load_hub(cfg)
    else:
        raise LdmError(f"data folder not found: {cfg.source}")
    columns = ds.column_names or list(ds.features or {})
    for column, what in ((cfg.image_column, "image"), (cfg.caption_column, "caption")):
        if column not in columns:
            raise LdmError(
                f"{what} column '{column}' not found in {cfg.source} (columns: {', '.join(columns)});"
                f" set data.{what}_column"
            )
    ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
    if cfg.max_samples is not None:
        ds = ds.take(cfg.max_samples) if cfg.streaming else ds.select(range(min(cfg.max_samples, len(ds))))
    return ds


def _load_local(path: Path, cfg: DataConfig):
    if not path.is_dir():
        raise LdmError(f"data source {path} is a file; give the folder that holds the images")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.split not in ds:
                raise LdmError(f"split '{cfg.split}' not in {path} (splits: {', '.join(ds)})")
            ds = ds[cfg.split]
        return ds.to_iterable_dataset() if cfg.streaming else ds
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise LdmError(f"no images found in data folder {path}")
    if any(path.rglob("metadata.jsonl")) or any(path.rglob("metadata.csv")):
        # With a subfolder named after the split, name its files: left to infer the splits itself,
        # `datasets` globs the whole tree once per split pattern it tries (several times slower,
        # docs/benchmarks.md), and every stage loads the data again.
        split_files = {cfg.split: f"{cfg.split}/**"} if (path / cfg.split).is_dir() else None
        try:
            return datasets.load_dataset("imagefolder", data_dir=str(path), data_files=split_files,
                                         split=cfg.split, streaming=cfg.streaming)
        except ValueError as err:
            raise LdmError(f"cannot read imagefolder {path} (split '{cfg.split}'): {err}") from None
    return _load_caption_files(path, images, cfg)


def _load_caption_files(path: Path, images: list[Path], cfg: DataConfig):
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
        cfg.caption_column: [text.read_text().strip() for _, text in captioned],
    }).cast_column(cfg.image_column, datasets.Image())
    return ds.to_iterable_dataset() if cfg.streaming else ds


def _load_hub(cfg: DataConfig):
    try:
        return datasets.load_dataset(cfg.source, split=cfg.split, streaming=cfg.streaming)
    except Exception as err:  # the hub raises many types: offline, not found, gated, bad split
        raise LdmError(
            f"data source '{cfg.source}' is not a local folder, and loading it from the hub failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def drop_unreadable(ds: datasets.Dataset, cfg: DataConfig) -> datasets.Dataset:
    """Remove images that cannot be decoded, warning once with the count and the first few."""
    column = cfg.image_column

    def check(batch):
        return {READABLE: [_readable(value) for value in batch[column]]}

    flagged = ds.map(check, batched=True, batch_size=256, desc="checking images",
                     num_proc=cfg.num_workers if cfg.num_workers > 1 and len(ds) > 5000 else None)
    flags = flagged[READABLE]
    bad = [i for i, ok in enumerate(flags) if not ok]
    if bad:
        names = [describe(ds[i][column]) for i in bad[:WARN_PATHS]]
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(ds)} in {cfg.source}: "
            + ", ".join(names) + (", ..." if len(bad) > WARN_PATHS else ""),
            stacklevel=2,
        )
        ds = ds.select([i for i, ok in enumerate(flags) if ok])
    if len(ds) == 0:
        raise LdmError(f"dataset {cfg.source} (split '{cfg.split}') has no readable images")
    return ds


def _readable(value) -> bool:
    try:
        open_image(value)
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return False
