"""Gathering a small Python value from every process of a run, for state that each process keeps for
itself and a checkpoint must hold for all of them (RNG states, stream positions)."""

from __future__ import annotations

import torch.distributed as dist


def gather(value, trainer) -> list:
    """`value` from every process, in rank order (a collective call under several processes: every
    process makes it, in the same order)."""
    if trainer is None or trainer.world_size == 1 or not dist.is_initialized():
        return [value]
    values = [None] * trainer.world_size
    dist.all_gather_object(values, value)
    return values
