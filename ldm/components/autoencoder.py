"""The stage-1 autoencoder as the later stages use it: load, encode to scaled latents, decode.

KL (`AutoencoderKL`) and VQ (`VQModel`) autoencoders differ in what `encode` returns; this module
hides that difference so the diffusion stage, the pipeline, animation and evaluation share one way
of moving between pixels and the diffusion model's latent space:

    latents = (z - shift_factor) * scaling_factor        z = latents / scaling_factor + shift_factor

For VQ, z is the encoder's output before quantization (as CompVis' latent diffusion does);
decoding quantizes it to the codebook first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, VQModel

from ldm.core.errors import LdmError

AUTOENCODER_CLASSES = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
Autoencoder = AutoencoderKL | VQModel


def load_vae(path: str | Path, dtype: torch.dtype | None = None) -> Autoencoder:
    """Load RUN/vae (or any folder written by `save_pretrained`), KL or VQ, frozen in eval mode."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise LdmError(f"no autoencoder at {path}: {config} is missing (train stage 1 first)")
    name = json.loads(config.read_text()).get("_class_name")
    if name not in AUTOENCODER_CLASSES:
        raise LdmError(f"{config}: _class_name {name!r} is not one of {', '.join(AUTOENCODER_CLASSES)}")
    vae = AUTOENCODER_CLASSES[name].from_pretrained(path, torch_dtype=dtype, use_safetensors=True)
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
