"""The trainable stages, by the name a config gives in its `stage:` key.

Each stage module provides `Config` (a dataclass extending `ldm.training.RunConfig`) and
`train(cfg)`, which trains the stage and writes its export into the run folder.
"""

from __future__ import annotations

import importlib

from ldm.config import apply_overrides, build, read_yaml
from ldm.errors import LdmError

STAGES = {
    "autoencoder": "ldm.models.autoencoder",
    "clip": "ldm.models.clip",
    "diffusion": "ldm.models.diffusion",
}


def stage_module(name):
    if name not in STAGES:
        raise LdmError(f"unknown stage {name!r}: the config's 'stage' must be one of {', '.join(STAGES)}")
    return importlib.import_module(STAGES[name])


def load_config(path, overrides: list[str] = ()):
    """Read, override and validate a stage config; errors name the file and the key."""
    raw = apply_overrides(read_yaml(path), list(overrides))
    if "stage" not in raw:
        raise LdmError(f"{path}: missing 'stage' (one of {', '.join(STAGES)})")
    module = stage_module(raw["stage"])
    try:
        return build(module.Config, raw)
    except LdmError as err:
        raise LdmError(f"{path}: {err}") from None


def train(path, overrides: list[str] = (), resume: bool = False):
    cfg = load_config(path, overrides)
    if resume:
        cfg.train.ckpt_path = "last"
    return stage_module(cfg.stage).train(cfg)
