"""The trainable stages, by the name a config gives in its `stage:` key.

Every stage is a subpackage of ldm.stages with the same parts:

    config.py   `Config`, a dataclass extending `ldm.stages.trainer.RunConfig`
    module.py   its LightningModule
    export.py   writes what the next stage (or the apps) read, and returns that folder's Path
    train.py    `train(cfg) -> TrainedStage`: module, datamodule, `fit`, export
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ldm.core.config import apply_overrides, build, find_config, read_yaml
from ldm.core.errors import LdmError

if TYPE_CHECKING:  # the Trainer's module imports Lightning: not before a config is read and checked
    from ldm.stages.trainer import TrainedStage

STAGES = ("autoencoder", "clip", "diffusion", "distill")


def _stage_part(name: str, part: str):
    if name not in STAGES:
        raise LdmError(f"unknown stage {name!r}: the config's 'stage' must be one of {', '.join(STAGES)}")
    return importlib.import_module(f"ldm.stages.{name}.{part}")


def config_class(name: str) -> type:
    return _stage_part(name, "config").Config


def load_config(path, overrides: list[str] = ()):
    """Read, override and validate a stage config; errors name the file and the key.

    `path` is a YAML file, or the name of a config that ships with ldm (`diffusion/ldm_shapes.yaml`).
    """
    path = find_config(path)
    raw = apply_overrides(read_yaml(path), list(overrides))
    if "stage" not in raw:
        raise LdmError(f"{path}: missing 'stage' (one of {', '.join(STAGES)})")
    cls = config_class(raw["stage"])
    try:
        return build(cls, raw)
    except LdmError as err:
        raise LdmError(f"{path}: {err}") from None


def train_stage(cfg) -> TrainedStage:
    """Train the stage a loaded config describes."""
    return _stage_part(cfg.stage, "train").train(cfg)


def train(path, overrides: list[str] = (), resume: bool = False) -> TrainedStage:
    cfg = load_config(path, overrides)
    if resume:
        cfg.train.ckpt_path = "last"
    return train_stage(cfg)
