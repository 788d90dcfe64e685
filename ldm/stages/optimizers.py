"""The optimizer a stage trains with, chosen by `train.optimizer`.

    adamw       torch's AdamW: two fp32 moments per parameter (8 bytes each parameter)
    adamw8bit   bitsandbytes' AdamW8bit: the two moments block-quantized to 8 bits (about 2 bytes
                each parameter), for large models on a GPU; bitsandbytes is an optional install
    adafactor   transformers' Adafactor with its second moment factored into row and column
                statistics and no first moment (a few bytes per row and column, not per weight),
                at `train.lr` with the schedule of `train.lr_schedule` (its own relative step size
                and parameter scaling are turned off, so it takes a learning rate like AdamW does)

Where each package is missing, the error names it. Each is a library optimizer; only the choice and
the settings that make the three interchangeable under one learning-rate schedule are here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import torch

from ldm.core.errors import LdmError

OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
DEFAULT_BETAS = (0.9, 0.999)


def _require(module: str, package: str, optimizer: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LdmError(f"train.optimizer: {optimizer} needs the {package} package, which is not "
                       f"installed (pip install {package}); or choose adamw") from None


def build_optimizer(params: Iterable, name: str, lr: float, weight_decay: float,
                    betas: tuple[float, float] = DEFAULT_BETAS, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer `name` over `params` (tensors or parameter groups). `fused` is for AdamW only:
    one multi-tensor kernel for the whole update (the others have no such option)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "adamw8bit":
        bnb = _require("bitsandbytes", "bitsandbytes", name)
        return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adafactor":
        optimization = _require("transformers.optimization", "transformers", name)
        return optimization.Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False,
                                      relative_step=False, warmup_init=False)
    raise LdmError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
