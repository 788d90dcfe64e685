"""How many processes a run has and in which precision: from the config, or from the launcher.

`accelerate launch` and torchrun start the processes and say so in the environment (WORLD_SIZE,
LOCAL_WORLD_SIZE, ACCELERATE_MIXED_PRECISION, ...); Lightning's Trainer is given the same numbers, so
the training loop is Lightning's whichever launcher started it.
"""

from __future__ import annotations

import os

from ldm.core.errors import LdmError
from ldm.stages.run_config import ACCELERATE_PRECISION, PRECISION_ALIASES, TrainConfig


def resolve_precision(configured: str | None, env: dict | None = None) -> str:
    """The Lightning precision: the config's, else accelerate's, else full fp32.

    `accelerate launch` always sets ACCELERATE_MIXED_PRECISION, to "no" when it was not asked for
    anything, so "no" cannot tell "fp32 please" from "no opinion": it never overrides or conflicts
    with the config. fp16 or bf16 from accelerate that disagrees with the config is an error.
    """
    env = os.environ if env is None else env
    launched = env.get("ACCELERATE_MIXED_PRECISION")
    if launched is not None and launched not in ACCELERATE_PRECISION:
        raise LdmError(f"ACCELERATE_MIXED_PRECISION={launched!r} is not one of "
                       f"{', '.join(ACCELERATE_PRECISION)}")
    from_launcher = ACCELERATE_PRECISION[launched] if launched not in (None, "no") else None
    if configured is None:
        return from_launcher or "32-true"
    precision = PRECISION_ALIASES[str(configured)]
    if from_launcher is not None and from_launcher != precision:
        raise LdmError(
            f"train.precision={configured} conflicts with accelerate's mixed_precision={launched} "
            f"(ACCELERATE_MIXED_PRECISION); set one of them, or make them agree"
        )
    return precision


def resolve_processes(cfg: TrainConfig, env: dict | None = None) -> dict:
    """devices / num_nodes / strategy: from a torchrun-style launch when there is one."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world > 1 and "LOCAL_WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"])
        return {"devices": local, "num_nodes": world // local,
                "strategy": "ddp" if cfg.strategy == "auto" else cfg.strategy}
    return {"devices": cfg.devices, "num_nodes": cfg.num_nodes, "strategy": cfg.strategy}


