"""Image quality metrics on images in [-1, 1], the range every stage works in.

Thin wrappers over torchmetrics (PSNR, SSIM) that fix the data range and return one value per
image, so callers can average over a dataset however they batch it.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    image_gradients,
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


def masked_psnr(images: torch.Tensor, references: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, (B,), over the pixels where `where` (B, 1, H, W) is true (inf where they
    are equal; nan for an image with no such pixel). torchmetrics' PSNR has no mask."""
    error = (to_unit_range(images.float()) - to_unit_range(references.float())) ** 2
    where = where.to(error).expand_as(error)
    mse = (error * where).sum(dim=(1, 2, 3)) / where.sum(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


EDGE_SHARE = 0.05  # of each image's pixels: its strongest edges


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Edge sharpness per image, (B,): the mean gradient magnitude (over the colour channels, on the
    [0, 1] scale) of the image's strongest `EDGE_SHARE` of pixels. Blur spreads an edge over more
    pixels and lowers its peak; the mean over all pixels would not say so, since blotches and noise
    in flat areas raise it (the quickstart's blurred samples had 1.09x the real images' mean
    gradient and 0.47x their edge sharpness, docs/benchmarks.md). Compared with real images' own
    figure, it says whether samples are as crisp as the data."""
    dy, dx = image_gradients(to_unit_range(images.float()))
    magnitude = torch.sqrt((dx**2 + dy**2).sum(dim=1)).flatten(1)
    strongest = max(1, int(EDGE_SHARE * magnitude.shape[1]))
    return magnitude.topk(strongest, dim=1).values.mean(dim=1)
