"""A dataset on the Hugging Face hub, by name (needs the network; data.streaming avoids downloading it whole)."""

from __future__ import annotations

import datasets

from ldm.core.errors import LdmError, type_and_first_line
from ldm.data.config import DataConfig


def load_hub(cfg: DataConfig):
    try:
        return datasets.load_dataset(cfg.source, split=cfg.split, streaming=cfg.streaming)
    except Exception as err:  # the hub raises many types: offline, not found, gated, bad split
        raise LdmError(
            f"data source '{cfg.source}' is not a local folder, and loading it from the hub failed: "
            f"{type_and_first_line(err)}"
        ) from None
