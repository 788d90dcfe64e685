"""Where image-caption data comes from, as a Hugging Face `datasets` dataset, and which of its rows train.

Five sources, one result (a dataset with an image column and a caption column):
- a local imagefolder with metadata.jsonl (train/ and test/ subfolders become splits),
- a local folder of images with a caption .txt beside each one,
- a folder written by `Dataset.save_to_disk`,
- shards: WebDataset .tar files or .parquet files, named by a glob ("shards/*.tar"), a file, or a
  list of paths or URLs, read by `datasets`' webdataset and parquet builders (a WebDataset's columns
  are its files' extensions: data.image_column=jpg data.caption_column=txt); with data.streaming
  they are streamed shard by shard, which is how data larger than a disk trains,
- a dataset on the hub, by name (needs the network; streaming avoids downloading it whole).

Images are kept undecoded (path or bytes) until a sample is read. Before training, one scan reads
every image once (`scan`: its upright size, format and mode, and whether it decodes at all) and
every caption (ldm/data/captions.py); `datasets` caches the scan by fingerprint, so it runs once per
dataset. `drop_unusable` then removes the images that cannot train, counted by reason in a single
warning: undecodable ones (ldm/data/decode.py) and, unless `data.empty_captions: keep`, those with
no caption.

A local folder's own mistakes stop the run with a message naming the file: a caption .txt that is
not UTF-8, a metadata.jsonl line that is not a JSON object with a file_name, a file_name outside
the data folder.

One module per loader (shards, saved, imagefolder, caption_files, hub), `load_source` here choosing
among them; the scan and what it leaves out in `scan`. With `data.mask: column` the mask column is
kept undecoded too; with `data.mask: file` the mask files (ldm/data/masks.py) are not images to train on.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ldm.core.errors import LdmError
from ldm.core.layout import looks_like_hub_id
from ldm.data.config import DataConfig
from ldm.data.masks import is_mask_file
from ldm.data.sources.caption_files import load_caption_files
from ldm.data.sources.hub import load_hub
from ldm.data.sources.imagefolder import load_imagefolder, metadata_files
from ldm.data.sources.saved import is_saved, load_saved
from ldm.data.sources.shards import load_shards, shard_files

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def load_source(cfg: DataConfig) -> datasets.Dataset | datasets.IterableDataset:
    """The split `cfg.split` of `cfg.source`, with its image column undecoded."""
    files = shard_files(cfg.source)
    path = Path(cfg.source).expanduser() if isinstance(cfg.source, str) else None
    if cfg.mask == "file" and (files is not None or not path.is_dir() or is_saved(path)):
        raise LdmError(f"data.mask: file reads mask files (cat.mask.png) beside the images of a local folder, "
                       f"and {cfg.source} is not one: use data.mask: column (a column of mask images) or alpha")
    if files is not None:
        ds = load_shards(files, cfg)
    elif path.exists():
        ds = _load_local(path, cfg)
    elif looks_like_hub_id(cfg.source):
        ds = load_hub(cfg)
    else:
        raise LdmError(f"data folder not found: {cfg.source}")
    columns = ds.column_names or list(ds.features or {})
    wanted = [(cfg.image_column, "image"), (cfg.caption_column, "caption")]
    if cfg.mask == "column":
        wanted.append((cfg.mask_column, "mask"))
    for column, what in wanted:
        if column not in columns:
            raise LdmError(
                f"{what} column '{column}' not found in {cfg.source} (columns: {', '.join(columns)});"
                f" set data.{what}_column"
            )
    ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
    if cfg.mask == "column":
        ds = ds.cast_column(cfg.mask_column, datasets.Image(decode=False))
    if cfg.max_samples is not None:
        ds = ds.take(cfg.max_samples) if cfg.streaming else ds.select(range(min(cfg.max_samples, len(ds))))
    return ds


def _load_local(path: Path, cfg: DataConfig):
    """A local folder: saved by `datasets`, an imagefolder with metadata, or images with caption files."""
    if not path.is_dir():
        raise LdmError(f"data source {path} is a file; give the folder that holds the images")
    if is_saved(path):
        return load_saved(path, cfg)
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                    and not (cfg.mask == "file" and is_mask_file(p)))  # masks are not images to train on
    if not images:
        raise LdmError(f"no images found in data folder {path}")
    metadata = metadata_files(path)
    if metadata:
        return load_imagefolder(path, metadata, cfg)
    return load_caption_files(path, images, cfg)
