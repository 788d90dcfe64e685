"""A local imagefolder: images with a metadata.jsonl (or metadata.csv) of file_name and caption, in
train/ and test/ subfolders that become splits; each metadata line is checked before `datasets` reads it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FILE_NAME = "file_name"  # the imagefolder metadata key naming each image's file
# A JSON caption's type, in the words of an error message.
JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "true or false", list: "a list"}


def metadata_files(path: Path) -> list[Path]:
    """The imagefolder metadata files anywhere under `path` (none: it is not an imagefolder)."""
    return [found for name in METADATA_FILES for found in path.rglob(name)]


def load_imagefolder(path: Path, metadata: list[Path], cfg: DataConfig):
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
