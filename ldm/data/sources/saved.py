"""A folder written by `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`: the split is picked)."""

from __future__ import annotations

from pathlib import Path

import datasets

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig


def is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def load_saved(path: Path, cfg: DataConfig):
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split not in ds:
            raise LdmError(f"split '{cfg.split}' not in {path} (splits: {', '.join(ds)})")
        ds = ds[cfg.split]
    return ds.to_iterable_dataset() if cfg.streaming else ds
