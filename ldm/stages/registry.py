"""The trainable stages, by the name a config gives in its `stage:` key.

Each stage module provides `Config` (a dataclass extending `ldm.stages.trainer.RunConfig`) and
`train(cfg)`, which trains the stage and writes its export into the run folder.
"""

from __future__ import annotations

import importlib

from ldm.core.config import apply_overrides, build, read_yaml
from ldm.core.errors import LdmError

STAGES = {
    "autoencoder": "ldm.stages.autoencoder.stage",
    "clip": "ldm.stages.clip.stage",
    "diffusion": "ldm.stages.diffusion.stage",
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
