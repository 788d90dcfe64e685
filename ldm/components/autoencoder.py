"""The stage-1 autoencoder as the later stages use it: load, encode to scaled latents, decode.

KL (`AutoencoderKL`) and VQ (`VQModel`) autoencoders differ in what `encode` returns; this module
hides that difference so the diffusion stage, the pipeline, animation and evaluation share one way
of moving between pixels and the diffusion model's latent space:

    latents = (z - shift_factor) * scaling_factor        z = latents / scaling_factor + shift_factor

For VQ, z is the encoder's output before quantization (as CompVis' latent diffusion does);
decoding quantizes it to the codebook first.

`FrozenAutoencoder` is the autoencoder as the diffusion stage trains on it: an image is described by
the distribution its latent is drawn from:
- KL: the encoder's posterior, a Gaussian with `mean` and `std` per latent cell, so each epoch
  sees a fresh sample z = mean + std * eps (as Stable Diffusion trains),
- VQ: the encoder's output before quantization (`encode_unscaled`), a point (`std` None).
The latent cache stores exactly these moments, so cached and on-the-fly training draw latents the
same way. Like the text conditioner, it is a plain class: the autoencoder stays out of the
LightningModule's children, its optimizer and its checkpoints.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from diffusers import AutoencoderKL, VQModel

from ldm.core.errors import LdmError, first_line
from ldm.core.layout import MODEL_CONFIG
from ldm.core.trust import check_no_code

AUTOENCODER_CLASSES = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
Autoencoder = AutoencoderKL | VQModel


def load_vae(path: str | Path, dtype: torch.dtype | None = None) -> Autoencoder:
    """Load RUN/vae (or any folder written by `save_pretrained`), KL or VQ, frozen in eval mode."""
    path = check_no_code(path)
    config = path / MODEL_CONFIG
    if not config.is_file():
        raise LdmError(f"no autoencoder at {path}: {config} is missing (train stage 1 first)")
    name = json.loads(config.read_text()).get("_class_name")
    if name not in AUTOENCODER_CLASSES:
        raise LdmError(f"{config}: _class_name {name!r} is not one of {', '.join(AUTOENCODER_CLASSES)}")
    try:
        vae = AUTOENCODER_CLASSES[name].from_pretrained(path, torch_dtype=dtype, use_safetensors=True)
    except OSError as err:  # e.g. only pickled weights (.bin), which are never read
        raise LdmError(f"cannot load the autoencoder in {path} (weights load from safetensors only): "
                       f"{first_line(err)}") from None
    vae.requires_grad_(False)
    return vae.eval()


def downsampling_factor(vae: Autoencoder) -> int:
    """f: how many pixels one latent cell covers along each side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def shift_factor(vae: Autoencoder) -> float:
    return float(getattr(vae.config, "shift_factor", None) or 0.0)


def encode_unscaled(vae: Autoencoder, pixels: torch.Tensor, sample: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """z for images in [-1, 1]: the posterior mean (or a sample) for KL, pre-quantization for VQ."""
    if isinstance(vae, VQModel):
        return vae.encode(pixels).latents
    posterior = vae.encode(pixels).latent_dist
    return posterior.sample(generator) if sample else posterior.mode()


def scale(vae: Autoencoder, z: torch.Tensor) -> torch.Tensor:
    return (z - shift_factor(vae)) * vae.config.scaling_factor


def unscale(vae: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    return latents / vae.config.scaling_factor + shift_factor(vae)


def encode(vae: Autoencoder, pixels: torch.Tensor, sample: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents, the space the diffusion model works in."""
    return scale(vae, encode_unscaled(vae, pixels, sample, generator))


def decode(vae: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (not clamped)."""
    return vae.decode(unscale(vae, latents)).sample


@torch.no_grad()
def reconstruct(vae: Autoencoder, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(reconstructions, code indices or None) of images in [-1, 1], as the export decodes: the
    posterior's mode for KL; for VQ, decode(encode(x)), which quantizes in decode as the pipeline does."""
    if isinstance(vae, VQModel):
        h = vae.encode(pixels).latents
        _, _, (_, _, indices) = vae.quantize(h)
        return vae.decode(h).sample, indices.flatten()
    return vae(pixels).sample, None


def needs_upcast(vae: Autoencoder) -> bool:
    """Whether the autoencoder says it overflows in float16 (`force_upcast`, set in SDXL's VAE)."""
    return bool(vae.config.get("force_upcast", False))


@contextmanager
def no_fp16_autocast(vae: Autoencoder, device: torch.device):
    """Inside: no float16 autocast for an autoencoder with `force_upcast` (under 16-mixed training
    its encoder would overflow, as diffusers' SDXL scripts warn); anything else as it was."""
    fp16 = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16
    with torch.autocast(device.type, enabled=False) if fp16 and needs_upcast(vae) else nullcontext():
        yield


@contextmanager
def upcast(vae: Autoencoder):
    """Inside: a float16 autoencoder with `force_upcast` in float32, as diffusers' SDXL pipeline
    decodes (SDXL's VAE overflows in float16); yields the dtype to feed it."""
    if vae.dtype != torch.float16 or not needs_upcast(vae):
        yield vae.dtype
        return
    vae.to(torch.float32)
    try:
        yield torch.float32
    finally:
        vae.to(torch.float16)


class FrozenAutoencoder:
    def __init__(self, vae: Autoencoder):
        self.vae = vae.requires_grad_(False).eval()

    @classmethod
    def load(cls, path: str) -> FrozenAutoencoder:
        return cls(load_vae(path))

    @property
    def is_kl(self) -> bool:
        return isinstance(self.vae, AutoencoderKL)

    @property
    def factor(self) -> int:
        return downsampling_factor(self.vae)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def device(self) -> torch.device:
        return self.vae.device

    def to(self, device: torch.device | str) -> FrozenAutoencoder:
        self.vae.to(device)
        return self

    @torch.no_grad()
    def moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, std) of the unscaled latent for images in [-1, 1]; std is None for VQ."""
        pixels = pixels.to(self.device, self.vae.dtype)
        if not self.is_kl:
            return encode_unscaled(self.vae, pixels), None
        with no_fp16_autocast(self.vae, pixels.device):
            posterior = self.vae.encode(pixels).latent_dist
        return posterior.mean, posterior.std

    def sample_latents(self, mean: torch.Tensor, std: torch.Tensor | None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents: a draw from the posterior (KL) or the point itself (VQ)."""
        z = mean
        if std is not None:
            z = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device,
                                         dtype=mean.dtype)
        return scale(self.vae, z)
