"""Scores for generated images: CLIP score against their prompts, FID and KID against real images.

Images come in as every stage handles them: tensors (B, 3, H, W) in [-1, 1].

- CLIP score (Hessel et al., 2021, as torchmetrics defines it): 100 * max(cos(image, text), 0),
  averaged over the images. It is computed here from `ldm.components.clip`'s features rather than with
  torchmetrics' `CLIPScore`, because that one loads its model by name at every call and expects
  0-255 images, while the project's CLIP takes [-1, 1] pixels as they are (see `ldm.components.clip`).
- FID and KID are torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance`, given a
  feature extractor as an `nn.Module`:
    * `InceptionFeatures`: the standard Inception-v3 (torch-fidelity's port, through torchmetrics)
      with weights read from a local file, so nothing is downloaded. Only then is it "FID".
    * `ClipImageFeatures`: the project's own CLIP image embeddings, for when no Inception weights
      are at hand. Those figures are labelled "FID (CLIP features)" and "KID (CLIP features)":
      they rank models trained on the same data, but are not comparable with published FIDs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from ldm.components.clip import clip_image_features, clip_text_features
from ldm.core.errors import LdmError
from ldm.core.images import to_uint8

INCEPTION_FEATURES = 2048  # the pool3 layer, as standard FID uses
KID_SUBSETS = 50  # random subsets KID averages over (torchmetrics' default of 100 is slow on CPU)
# torchmetrics' default subset size; with fewer images, half of them, so that the subsets differ
KID_MAX_SUBSET = 1000


@torch.no_grad()
def clip_score(clip, processor, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """CLIP score of each image against its prompt, (B,) in [0, 100]."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    image_features = clip_image_features(clip, images, processor)
    text_features = clip_text_features(clip, processor.tokenizer, prompts)
    return 100 * (image_features * text_features).sum(dim=-1).clamp_min(0)


class ClipImageFeatures(nn.Module):
    """[-1, 1] images -> the CLIP's unit-length image embeddings, as a torchmetrics feature extractor."""

    def __init__(self, clip, processor):
        super().__init__()
        self.clip, self.processor = clip, processor
        self.num_features = clip.config.projection_dim  # read by torchmetrics to size its states

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return clip_image_features(self.clip, images, self.processor)


class InceptionFeatures(nn.Module):
    """[-1, 1] images -> Inception-v3 pool3 features, from torch-fidelity's weights in a local file.

    The weights are torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` (the TensorFlow
    FID network, ported); torchmetrics runs them through torch-fidelity, which must be installed.
    """

    def __init__(self, weights_path: str | Path):
        super().__init__()
        check_inception(weights_path)
        self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(INCEPTION_FEATURES)],
                                            feature_extractor_weights_path=str(weights_path))
        self.num_features = INCEPTION_FEATURES

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception(to_uint8(images))


def check_inception(weights_path: str | Path) -> None:
    """LdmError before any work if Inception FID cannot run here."""
    if not Path(weights_path).is_file():
        raise LdmError(f"Inception weights not found: {weights_path}")
    if not _TORCH_FIDELITY_AVAILABLE:
        raise LdmError("FID on Inception features needs torch-fidelity (pip install torch-fidelity, which "
                       "also needs torchvision); leave out --inception to measure FID on CLIP features")


def feature_label(features: nn.Module) -> str:
    """'' for Inception (the standard FID), ' (CLIP features)' otherwise: part of every figure's name."""
    return "" if isinstance(features, InceptionFeatures) else " (CLIP features)"


class _Given(nn.Identity):
    """Features already extracted, passed through: each image is embedded once for both metrics."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


@torch.no_grad()
def extract(features: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, D) features of [-1, 1] images, in batches."""
    return torch.cat([features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def fid_kid(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """FID, and KID's mean and std over random subsets, between two sets of features (N, D)."""
    if min(len(real), len(fake)) < 2:
        raise LdmError(f"FID and KID need at least 2 real and 2 generated images, got {len(real)} and {len(fake)}")
    given = _Given(real.shape[1])
    fid = FrechetInceptionDistance(feature=given)
    subset_size = min(KID_MAX_SUBSET, max(2, min(len(real), len(fake)) // 2))
    with warnings.catch_warnings():  # "KID keeps all features in memory": a few hundred here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, subsets=KID_SUBSETS, subset_size=subset_size)
    for metric in (fid, kid):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    torch.manual_seed(seed)  # KID draws its subsets with torch's global generator
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}
