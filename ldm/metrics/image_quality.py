"""Image quality metrics on images in [-1, 1], the range every stage works in.

Thin wrappers over torchmetrics (PSNR, SSIM) that fix the data range and return one value per
image, so callers can average over a dataset however they batch it.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from ldm.core.images import to_unit_range


def psnr(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, (B,)."""
    return peak_signal_noise_ratio(to_unit_range(reconstructions), to_unit_range(originals),
                                   data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """SSIM (11x11 Gaussian window, the usual settings) per image, (B,).

    Always in float32, even inside a bf16/fp16 autocast region (training, Lightning's validation):
    SSIM subtracts squared means from means of squares, which bf16 cannot resolve.
    """
    with torch.autocast(reconstructions.device.type, enabled=False):
        return structural_similarity_index_measure(to_unit_range(reconstructions), to_unit_range(originals),
                                                   data_range=1.0, reduction="none")
