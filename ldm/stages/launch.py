"""How many processes a run has and in which precision: from the config, or from the launcher.

`accelerate launch` and torchrun start the processes and say so in the environment (WORLD_SIZE,
LOCAL_WORLD_SIZE, ACCELERATE_MIXED_PRECISION, ...); Lightning's Trainer is given the same numbers, so
the training loop is Lightning's whichever launcher started it.
"""

from __future__ import annotations

import os
import warnings

import torch

from ldm.core.errors import LdmError
from ldm.stages.run_config import ACCELERATE_PRECISION, PRECISION_ALIASES, TrainConfig


def resolve_precision(configured: str | None, env: dict | None = None, accelerator: str = "auto") -> str:
    """The Lightning precision: the config's, else accelerate's, else full fp32.

    `accelerate launch` always sets ACCELERATE_MIXED_PRECISION, to "no" when it was not asked for
    anything, so "no" cannot tell "fp32 please" from "no opinion": it never overrides or conflicts
    with the config. fp16 or bf16 from accelerate that disagrees with the config is an error.
    "auto" takes accelerate's choice when it made one, else bf16-mixed where bf16 is native.
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
    if precision == "auto":
        return from_launcher or ("bf16-mixed" if native_bf16(accelerator) else "32-true")
    if from_launcher is not None and from_launcher != precision:
        raise LdmError(
            f"train.precision={configured} conflicts with accelerate's mixed_precision={launched} "
            f"(ACCELERATE_MIXED_PRECISION); set one of them, or make them agree"
        )
    if precision.startswith("bf16") and not native_bf16(accelerator):
        warnings.warn(f"train.precision={configured} on a processor without native bf16 is emulated, "
                      f"many times slower than 32-true; train.precision=auto picks for the machine",
                      stacklevel=2)
    return precision


def native_bf16(accelerator: str = "auto") -> bool:
    """Whether the device the run trains on computes bf16 in hardware.

    A CPU without AVX512-BF16 or AMX emulates bf16: a convolution measured 58x slower than in fp32
    on an AVX2-only EPYC (docs/benchmarks.md). torch has no public query for the CPU's bf16 support,
    only these torch.cpu helpers, read with a default for builds that lack them. They read the CPU's
    flags, which `ATEN_CPU_CAPABILITY` does not change; so the kernel level torch runs at is asked
    too: with `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` an AVX512-BF16 machine runs as an
    AVX2-only one does, in fp32 (how the slower CPU kind is reproduced on the faster one).
    """
    on_gpu = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    if on_gpu:
        return torch.cuda.is_bf16_supported()
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():  # "DEFAULT", "AVX2", "VSX", ...
        return False
    cpu_checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in cpu_checks)


def resolve_processes(cfg: TrainConfig, env: dict | None = None) -> dict:
    """devices / num_nodes / strategy: from a torchrun-style launch when there is one."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world > 1 and "LOCAL_WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"])
        return {"devices": local, "num_nodes": world // local,
                "strategy": "ddp" if cfg.strategy == "auto" else cfg.strategy}
    return {"devices": cfg.devices, "num_nodes": cfg.num_nodes, "strategy": cfg.strategy}


