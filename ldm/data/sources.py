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
"""

from __future__ import annotations

import collections
import csv
import glob
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ldm.core.errors import LdmError, type_and_first_line
from ldm.core.layout import looks_like_hub_id
from ldm.data.captions import NO_CAPTION, clean_captions
from ldm.data.config import DataConfig
from ldm.data.decode import UndecodableImage, describe, inspect_image

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# Shard files by extension, and the `datasets` builder that reads them.
SHARD_BUILDERS = {".tar": "webdataset", ".parquet": "parquet"}
URL_MARK = "://"  # a shard named by URL (https://, s3://, hf://) is streamed from there
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FILE_NAME = "file_name"  # the imagefolder metadata key naming each image's file
WARN_PATHS = 3  # how many files a warning names for each reason

# The columns the scan adds; they stay with the rows that train (buckets read the sizes).
SKIP = "_ldm_skip"  # why the image cannot be used ("" when it can)
WIDTH, HEIGHT = "_ldm_width", "_ldm_height"  # upright size, 0 when undecodable
FORMAT, MODE = "_ldm_format", "_ldm_mode"
CAPTIONED = "_ldm_captioned"  # whether the row has at least one usable caption
SCAN_COLUMNS = (SKIP, WIDTH, HEIGHT, FORMAT, MODE, CAPTIONED)

# A JSON caption's type, in the words of an error message.
JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "true or false", list: "a list"}


def load_source(cfg: DataConfig) -> datasets.Dataset | datasets.IterableDataset:
    """The split `cfg.split` of `cfg.source`, with its image column undecoded."""
    files = shard_files(cfg.source)
    path = Path(cfg.source).expanduser() if isinstance(cfg.source, str) else None
    if files is not None:
        ds = _load_shards(files, cfg)
    elif path.exists():
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


def shard_builder(name: str) -> str | None:
    """The `datasets` builder of a shard file's name, or None when it names no shard."""
    return next((builder for suffix, builder in SHARD_BUILDERS.items() if name.lower().endswith(suffix)), None)


def shard_files(source: str | list[str]) -> list[str] | None:
    """The shard files a data.source names (a glob, a file or a list, sorted within each glob), or
    None when it names a folder or a hub dataset instead."""
    names = [source] if isinstance(source, str) else list(source)
    if not all(shard_builder(name) for name in names):
        if isinstance(source, list):
            raise LdmError(f"data.source as a list names shard files ({', '.join(SHARD_BUILDERS)}), "
                           f"not {next(n for n in names if not shard_builder(n))}")
        return None
    files = []
    for name in names:
        local = str(Path(name).expanduser())
        if URL_MARK in name:
            files.append(name)
        elif glob.has_magic(local):
            matched = sorted(glob.glob(local))
            if not matched:
                raise LdmError(f"data.source: no files match {name}")
            files += matched
        elif Path(local).is_file():
            files.append(local)
        else:
            raise LdmError(f"data.source: shard file not found: {name}")
    builders = {shard_builder(file) for file in files}
    if len(builders) > 1:
        raise LdmError(f"data.source mixes {' and '.join(sorted(builders))} shards: give one kind")
    return files


def _load_shards(files: list[str], cfg: DataConfig):
    try:
        return datasets.load_dataset(shard_builder(files[0]), data_files={cfg.split: files}, split=cfg.split,
                                     streaming=cfg.streaming)
    except Exception as err:  # pyarrow, tarfile and fsspec each raise their own types for a bad file
        raise LdmError(f"cannot read the shards of data.source ({files[0]}, ...): "
                       f"{type_and_first_line(err)}") from None


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
    metadata = [found for name in METADATA_FILES for found in path.rglob(name)]
    if metadata:
        for file in metadata:
            check_metadata(file, path, cfg.caption_column)
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
        cfg.caption_column: [read_caption_file(text) for _, text in captioned],
    }).cast_column(cfg.image_column, datasets.Image())
    return ds.to_iterable_dataset() if cfg.streaming else ds


def _load_hub(cfg: DataConfig):
    try:
        return datasets.load_dataset(cfg.source, split=cfg.split, streaming=cfg.streaming)
    except Exception as err:  # the hub raises many types: offline, not found, gated, bad split
        raise LdmError(
            f"data source '{cfg.source}' is not a local folder, and loading it from the hub failed: "
            f"{type_and_first_line(err)}"
        ) from None


def read_caption_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise LdmError(f"caption file {path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                       "save it as UTF-8") from None


def check_metadata(file: Path, root: Path, caption_column: str) -> None:
    """Every row of an imagefolder metadata file names a file_name inside `root`; in a jsonl file
    every line is a JSON object and the captions are of one JSON type (strings, or lists), which
    `datasets`' JSON reader needs (its own error for a number among strings names no line).
    Otherwise an LdmError naming the file and the line."""
    caption_kind = None
    for line_number, row in _metadata_rows(file):
        where = f"{file}, line {line_number}"
        name = row.get(FILE_NAME)
        if not isinstance(name, str) or not name:
            raise LdmError(f"{where}: no '{FILE_NAME}' naming the image")
        if not (file.parent / name).resolve().is_relative_to(root.resolve()):
            raise LdmError(f"{where}: {FILE_NAME} '{name}' points outside the data folder {root}")
        caption = row.get(caption_column)
        if caption is None or file.suffix == ".csv":  # a missing caption is counted later; csv is all text
            continue
        kind = JSON_KINDS.get(type(caption), "an object")
        if caption_kind is None:
            caption_kind = kind
        elif kind != caption_kind:
            raise LdmError(f"{where}: the caption ('{caption_column}') is {kind}, where earlier lines have "
                           f"{caption_kind}: write every caption as a string (or every one as a list)")


def _metadata_rows(file: Path):
    """(line number, row) of a metadata.jsonl or metadata.csv file."""
    with file.open(encoding="utf-8", newline="") as handle:
        if file.suffix == ".csv":
            yield from enumerate(csv.DictReader(handle), start=2)  # line 1 is the header
            return
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise LdmError(f"{file}, line {line_number}: not valid JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(row, dict):
                raise LdmError(f"{file}, line {line_number}: not a JSON object of file_name and caption")
            yield line_number, row


# ---- the scan: which rows can train --------------------------------------------------------------

def scan(ds: datasets.Dataset, cfg: DataConfig) -> datasets.Dataset:
    """`ds` with SCAN_COLUMNS added: every image inspected once, every caption read.

    Cached by `datasets` (the map's fingerprint covers the data and data.max_pixels), so later
    stages and `ldm data check` on the same data do not read the images again.
    """
    image_column, caption_column, max_pixels = cfg.image_column, cfg.caption_column, cfg.max_pixels

    def inspect(batch: dict) -> dict:
        out = {name: [] for name in SCAN_COLUMNS}
        for value, caption in zip(batch[image_column], batch[caption_column]):
            try:
                info = inspect_image(value, max_pixels)
                values = ("", info.width, info.height, info.format, info.mode)
            except UndecodableImage as err:
                values = (err.reason, 0, 0, "", "")
            for name, item in zip(SCAN_COLUMNS, values):
                out[name].append(item)
            out[CAPTIONED].append(bool(clean_captions(caption)))
        return out

    return ds.map(inspect, batched=True, batch_size=256, desc="checking images and captions",
                  num_proc=cfg.num_workers if cfg.num_workers > 1 and len(ds) > 5000 else None)


@dataclass
class Skips:
    """The rows a scan leaves out, by reason, and the rows kept without a caption."""

    total: int
    by_reason: dict[str, list[int]] = field(default_factory=dict)  # reason -> rows, in order
    kept_uncaptioned: list[int] = field(default_factory=list)

    @property
    def skipped(self) -> list[int]:
        return sorted(row for rows in self.by_reason.values() for row in rows)


def find_skips(scanned: datasets.Dataset, cfg: DataConfig) -> Skips:
    """Which rows of a scanned dataset cannot train, and why (an image's fault comes first)."""
    skips = Skips(len(scanned), collections.defaultdict(list))
    for row, (reason, captioned) in enumerate(zip(scanned[SKIP], scanned[CAPTIONED])):
        if reason:
            skips.by_reason[reason].append(row)
        elif not captioned and cfg.empty_captions == "skip":
            skips.by_reason[NO_CAPTION].append(row)
        elif not captioned:
            skips.kept_uncaptioned.append(row)
    skips.by_reason = dict(skips.by_reason)
    return skips


def drop_unusable(ds: datasets.Dataset, cfg: DataConfig) -> datasets.Dataset:
    """The rows of `ds` that can train (scanned: their sizes are columns), warning once about the
    rest with the count and the first few files for each reason."""
    scanned = scan(ds, cfg)
    skips = find_skips(scanned, cfg)
    message = skip_message(skips, scanned, cfg)
    if message:
        warnings.warn(message, stacklevel=2)
    if skips.by_reason:
        skipped = set(skips.skipped)
        scanned = scanned.select([row for row in range(len(scanned)) if row not in skipped])
    if len(scanned) == 0:
        raise LdmError(f"dataset {cfg.source} (split '{cfg.split}') has no usable images"
                       + (f" ({message})" if message else ""))
    return scanned


def skip_message(skips: Skips, ds: datasets.Dataset, cfg: DataConfig) -> str:
    """One line: how many images are left out of how many, for which reasons, naming a few files."""
    def named(rows: list[int]) -> str:
        names = [describe(ds[row][cfg.image_column]) for row in rows[:WARN_PATHS]]
        return ", ".join(names) + (", ..." if len(rows) > WARN_PATHS else "")

    parts = []
    if skips.by_reason:
        reasons = "; ".join(f"{len(rows)} {reason} ({named(rows)})" for reason, rows in skips.by_reason.items())
        parts.append(f"skipped {len(skips.skipped)} image(s) of {skips.total} in {cfg.source}: {reasons}")
    if skips.kept_uncaptioned:
        parts.append(f"{len(skips.kept_uncaptioned)} image(s) with no caption train with the empty prompt "
                     f"(data.empty_captions: keep): {named(skips.kept_uncaptioned)}")
    return "; ".join(parts)
