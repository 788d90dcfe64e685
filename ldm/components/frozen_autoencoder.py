"""The frozen stage-1 autoencoder, as the diffusion stage uses it: images to latent distributions.

For training, an image is described by the distribution its latent is drawn from:
- KL: the encoder's posterior, a Gaussian with `mean` and `std` per latent cell, so each epoch
  sees a fresh sample z = mean + std * eps (as Stable Diffusion trains),
- VQ: the encoder's output before quantization (`ldm.components.autoencoder.encode_unscaled`), a point (`std` None).
The latent cache stores exactly these moments, so cached and on-the-fly training draw latents the
same way. Scaling to the diffusion model's space (`scaling_factor`, `shift_factor`) is `ldm.components.autoencoder`'s.

Like the conditioner, this is a plain class: the autoencoder stays out of the LightningModule's
children, its optimizer and its checkpoints.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from ldm.components import autoencoder as vae_lib


class FrozenAutoencoder:
    def __init__(self, vae: vae_lib.Autoencoder):
        self.vae = vae.requires_grad_(False).eval()

    @classmethod
    def load(cls, path: str) -> "FrozenAutoencoder":
        return cls(vae_lib.load_vae(path))

    @property
    def is_kl(self) -> bool:
        return isinstance(self.vae, AutoencoderKL)

    @property
    def factor(self) -> int:
        return vae_lib.downsampling_factor(self.vae)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def device(self) -> torch.device:
        return self.vae.device

    def to(self, device: torch.device | str) -> "FrozenAutoencoder":
        self.vae.to(device)
        return self

    @torch.no_grad()
    def moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, std) of the unscaled latent for images in [-1, 1]; std is None for VQ."""
        pixels = pixels.to(self.device, self.vae.dtype)
        if not self.is_kl:
            return vae_lib.encode_unscaled(self.vae, pixels), None
        posterior = self.vae.encode(pixels).latent_dist
        return posterior.mean, posterior.std

    def sample_latents(self, mean: torch.Tensor, std: torch.Tensor | None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents: a draw from the posterior (KL) or the point itself (VQ)."""
        z = mean
        if std is not None:
            z = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device,
                                         dtype=mean.dtype)
        return vae_lib.scale(self.vae, z)
