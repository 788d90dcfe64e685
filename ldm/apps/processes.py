"""The processes that share inference work (generation, animation) under `accelerate launch`."""

from __future__ import annotations

import torch
from accelerate import PartialState


def runs_on_cpu(device: str | None) -> bool:
    """Whether work goes to the CPU: the device asked for, else whether no accelerator exists."""
    if device is not None:
        return torch.device(device).type == "cpu"
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())


def inference_processes(device: str | None = None):
    """accelerate's PartialState for this launch (one process when not launched).

    PartialState counts a torchrun-style launch as several CPU processes only when told `cpu`;
    otherwise, with no GPU, it would treat every process as a single one.
    """
    return PartialState(cpu=runs_on_cpu(device))
