"""Sanity of the metrics: PSNR, SSIM, CLIP score, FID and KID on cases with known answers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny import tiny_clip, tiny_tokenizer
from transformers import CLIPProcessor

from ldm.components.clip import clip_image_features, clip_text_features
from ldm.core.errors import LdmError
from ldm.metrics.generation_scores import (
    ClipImageFeatures,
    check_inception,
    clip_score,
    extract,
    feature_label,
    fid_kid,
)
from ldm.metrics.image_quality import psnr, ssim
from ldm.stages.clip.module import image_processor


def images(n=4, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_psnr_identical_images_is_infinite_and_known_offset_is_20_db():
    x = images()
    assert torch.isinf(psnr(x, x)).all()
    # 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01, PSNR 10 log10(1 / 0.01) = 20 dB
    base = torch.zeros(2, 3, 16, 16)
    assert torch.allclose(psnr(base + 0.2, base), torch.full((2,), 20.0), atol=1e-4)


def test_psnr_is_per_image_and_falls_with_noise():
    x = images()
    noisy = x + 0.1 * torch.randn_like(x)
    noisier = x + 0.4 * torch.randn_like(x)
    assert psnr(noisy, x).shape == (4,)
    assert (psnr(noisy, x) > psnr(noisier, x)).all()


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    x = images()
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    noisy = x + 0.3 * torch.randn_like(x)
    assert (ssim(noisy, x) < 0.9).all()
    assert (ssim(-x, x) < ssim(noisy, x)).all()  # an inverted image shares no structure


@pytest.fixture(scope="module")
def clip():
    tokenizer = tiny_tokenizer()
    return tiny_clip(tokenizer), CLIPProcessor(image_processor=image_processor(16), tokenizer=tokenizer)


def test_clip_score_is_100_times_the_clipped_cosine(clip):
    model, processor = clip
    # 8-bit images, so the processor (which takes 0-255 pixels) and clip_score (which takes [-1, 1]
    # tensors) see the same pictures.
    pixels = torch.randint(0, 256, (4, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = pixels.float() / 127.5 - 1
    prompts = ["a red circle", "a blue square in the center", "a green triangle", "a yellow circle in the top left"]
    # CLIPScore computed independently of ldm's feature helpers: transformers' own tokenizer and image
    # processor, then CLIPModel's forward, whose logits are logit_scale.exp() times the cosine of
    # every image with every caption; each image's score is 100 times the cosine with its own caption,
    # clamped at 0 (as torchmetrics' CLIPScore defines it).
    inputs = processor(text=prompts, images=list(pixels), return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    expected = (100 * logits.diagonal() / model.logit_scale.exp()).clamp_min(0)
    scores = clip_score(model, processor, x, prompts)
    assert scores.shape == (4,)
    assert torch.allclose(scores, expected, atol=1e-3)
    # and from the feature helpers it is built from
    text = clip_text_features(model, processor.tokenizer, prompts)
    cosine = (clip_image_features(model, x, processor) * text).sum(-1)
    assert torch.allclose(scores, 100 * cosine.clamp_min(0), atol=1e-4)
    assert ((scores >= 0) & (scores <= 100)).all()
    with pytest.raises(ValueError):
        clip_score(model, processor, x, prompts[:2])


class FixedFeatures(torch.nn.Module):
    """A projection that ignores its input: the model's features are the rows given."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.register_buffer("rows", rows)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        assert len(hidden) == len(self.rows)
        return self.rows.to(hidden.dtype)


def test_clip_score_on_hand_built_features(clip):
    """Known values: a caption whose features point the image's way scores 100 (whatever the lengths),
    one at 45 degrees 100 cos 45, at 60 degrees 50, at a right angle 0, and an opposite one 0, not -100."""
    model, processor = clip
    model = copy.deepcopy(model)
    image_rows = torch.tensor([[3.0, 0], [1, 0], [1, 0], [0, 2], [1, 0]])
    text_rows = torch.tensor([[0.5, 0], [1, 1], [1, math.sqrt(3)], [5, 0], [-1, 0]])
    pad = model.config.projection_dim - 2
    model.visual_projection = FixedFeatures(torch.nn.functional.pad(image_rows, (0, pad)))
    model.text_projection = FixedFeatures(torch.nn.functional.pad(text_rows, (0, pad)))
    prompts = ["a red circle", "a blue square", "a green triangle", "a red square", "a blue circle"]
    scores = clip_score(model, processor, images(5, 16), prompts)
    assert torch.allclose(scores, torch.tensor([100, 100 / math.sqrt(2), 50, 0, 0]), atol=1e-3)


def test_fid_of_a_shifted_copy_is_the_squared_shift_and_kid_sees_it():
    torch.manual_seed(0)
    real = torch.randn(200, 8, dtype=torch.float64)
    shift = torch.tensor([1.0, 0, 0, 2.0, 0, 0, 0, 0], dtype=torch.float64)
    same = fid_kid(real, real.clone())
    moved = fid_kid(real, real + shift)
    assert abs(same["fid"]) < 1e-6
    assert math.isclose(moved["fid"], 5.0, rel_tol=1e-4)  # equal covariances: FID = |shift|^2
    assert moved["kid_mean"] > 1.0 > abs(same["kid_mean"]) * 10
    with pytest.raises(LdmError, match="at least 2"):
        fid_kid(real[:1], real)


def test_clip_features_feed_fid_and_are_labelled_as_clip(clip):
    model, processor = clip
    features = ClipImageFeatures(model, processor)
    assert features.num_features == model.config.projection_dim
    out = extract(features, images(5, 16), batch_size=2)
    assert out.shape == (5, model.config.projection_dim)
    assert torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert feature_label(features) == " (CLIP features)"


def test_inception_needs_a_local_weights_file(tmp_path):
    with pytest.raises(LdmError, match="not found"):
        check_inception(tmp_path / "missing.pth")
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        weights = tmp_path / "inception.pth"
        weights.write_bytes(b"")
        with pytest.raises(LdmError, match="torch-fidelity"):
            check_inception(weights)
