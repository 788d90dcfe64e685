"""LPIPS (Zhang et al. 2018), VGG16 variant, loaded from one local safetensors file.

LPIPS needs two sets of weights that cannot be fetched here: torchvision's ImageNet VGG16 and the
`lpips` package's linear heads. `tools/make_lpips_weights.py` merges the two files a user has
into one safetensors file, with torchvision's key names (`features.N.weight`) and lpips' names
(`linK.model.1.weight`). The network is written out here because torchvision (which has VGG16)
is not a dependency; the layer order matches torchvision's, so its state dict loads unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ldm.core.errors import LdmError, first_line

# VGG16's convolutional part: widths, with "M" for a 2x2 max-pool (torchvision's "D" config).
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in `features` of the ReLUs whose outputs LPIPS compares (relu1_2 ... relu5_3).
TAPS = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer: ImageNet statistics, expressed for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    layers, width = [], 3
    for item in VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(width, item, 3, padding=1), nn.ReLU(inplace=False)]
            width = item
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """lpips' NetLinLayer: a 1x1 conv to one channel.

    lpips puts a dropout at index 0, used only when training LPIPS itself; an identity holds its
    place so that the key names (`model.1.weight`) match and the network has no random part.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Perceptual distance per image pair, averaged over the batch; frozen, inputs in [-1, 1]."""

    def __init__(self, weights_path: str | Path):
        super().__init__()
        self.features = vgg16_features()
        for k, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{k}", LinearHead(channels))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights_path))
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise LdmError(f"loss.lpips_weights: file not found: {path} "
                           "(make it with tools/make_lpips_weights.py, or leave it unset for the SSIM loss)")
        try:
            self.load_state_dict(load_file(str(path)))
        except Exception as err:  # safetensors header errors, missing or misshapen keys
            raise LdmError(f"loss.lpips_weights: {path} does not hold LPIPS VGG16 weights: "
                           f"{first_line(err)}") from None

    def forward(self, reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        a = (reconstructions - self.shift) / self.scale
        b = (originals - self.shift) / self.scale
        total = 0.0
        for k, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b))):
            diff = (_unit_channels(fa) - _unit_channels(fb)) ** 2
            total = total + getattr(self, f"lin{k}").model(diff).mean(dim=(1, 2, 3))
        return total.mean()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features[: TAPS[-1] + 1]):
            x = layer(x)
            if index in TAPS:
                outputs.append(x)
        return outputs


def _unit_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
