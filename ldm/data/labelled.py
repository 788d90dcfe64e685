"""A split's images with some of its columns: what evaluation and zero-shot validation read."""

from __future__ import annotations

from dataclasses import replace

import torch

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import make_sample
from ldm.data.decode import UndecodableImage
from ldm.data.sources import load_source
from ldm.data.sources.scan import drop_unusable


def load_labelled_images(data: DataConfig, columns: list[str], max_images: int | None = None,
                         ds=None) -> tuple[torch.Tensor, dict[str, list[str]]]:
    """Images of `data.split` as [-1, 1] tensors, with the values of `columns` (e.g. colour, shape).

    `ds` is the split when the caller has loaded it already (`load_source(data)`), to pick columns.
    Images that training would skip (broken, too many pixels, ...) are skipped here too, with the
    same one warning that counts them by reason; a missing caption only matters when a caption is
    among `columns`.
    """
    if data.caption_column not in columns:
        data = replace(data, empty_captions="keep")
    ds = load_source(data) if ds is None else ds
    missing = [c for c in columns if c not in ds.column_names]
    if missing:  # before the scan, which reads every image's header
        raise LdmError(f"split '{data.split}' of {data.source} has no '{missing[0]}' column, which "
                       "zero-shot evaluation needs (the shapes data has colour, shape and position)")
    ds = drop_unusable(ds, data)
    if max_images is not None:
        ds = ds.select(range(min(max_images, len(ds))))
    rows = list(ds)
    try:
        pixels = torch.stack([make_sample(row, data, train=False)["pixel_values"] for row in rows])
    except UndecodableImage as err:
        raise LdmError(f"cannot use an image of split '{data.split}' of {data.source}: {err}") from None
    return pixels, {c: [row[c] for row in rows] for c in columns}
