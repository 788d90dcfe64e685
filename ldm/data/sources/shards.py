"""Shards: WebDataset .tar files or .parquet files, named by a glob, a file, or a list of paths or URLs,
read (or streamed, with data.streaming) by `datasets`' webdataset and parquet builders."""

from __future__ import annotations

import glob
from pathlib import Path

import datasets

from ldm.core.errors import LdmError, type_and_first_line
from ldm.data.config import DataConfig

# Shard files by extension, and the `datasets` builder that reads them.
SHARD_BUILDERS = {".tar": "webdataset", ".parquet": "parquet"}
URL_MARK = "://"  # a shard named by URL (https://, s3://, hf://) is streamed from there


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


def load_shards(files: list[str], cfg: DataConfig):
    try:
        return datasets.load_dataset(shard_builder(files[0]), data_files={cfg.split: files}, split=cfg.split,
                                     streaming=cfg.streaming)
    except Exception as err:  # pyarrow, tarfile and fsspec each raise their own types for a bad file
        raise LdmError(f"cannot read the shards of data.source ({files[0]}, ...): "
                       f"{type_and_first_line(err)}") from None
