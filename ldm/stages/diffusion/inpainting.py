"""The inpainting model (`inpainting:`): SD-inpainting's layout, trained on random masks.

    inputs = InpaintingInputs(cfg.inpainting, autoencoder)
    extra = inputs(latents)                                   # (B, 1 + C, h, w): mask, masked latents
    prediction = unet(torch.cat([noisy, extra], dim=1), t, text).sample

The UNet takes 2C+1 channels: the noisy latents, the mask (1: repaint) and the latents of the image
with the masked part set to mid-gray, in the order `StableDiffusionInpaintPipeline` concatenates them,
which is what loads and samples the export. A new UNet is built that wide; a pretrained text-to-image
UNet is widened (`widen_conv_in`), its new input channels starting at zero, as RunwayML started SD
inpainting from SD 1.2 (and diffusers' and kohya's inpainting trainers do): the widened UNet then
predicts exactly what the pretrained one did until it learns to use the mask.

The masked image's latents, from the latent cache: the cache stores each image's latent posterior
(ldm/data/latent_cache), not its pixels, and masks are new at every step, so the masked image
cannot be encoded at cache time, and encoding it at every step would run the autoencoder's encoder
again at full resolution (what the cache exists to avoid). Instead they are made in latent space:
the image's own latents where it is kept, and the latents of a mid-gray image (the encoder's output
for pixels at 0, computed once per size) where it is masked. The autoencoder's encoder is local, so
this is what encoding the masked image gives away from the mask's edge; within the encoder's reach of
the edge they differ a little, which the model sees as a slightly soft edge. The same path serves
`cache: false`, so both kinds of run train the same model.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from ldm.components.autoencoder import FrozenAutoencoder, encode
from ldm.data.random_masks import random_masks
from ldm.stages.diffusion.config import InpaintingConfig


def inpainting_channels(latent_channels: int) -> int:
    """The inpainting UNet's input channels: noisy latents, mask, masked image latents."""
    return 2 * latent_channels + 1


class InpaintingInputs:
    """Random masks and the masked image's latents for a batch of clean latents."""

    def __init__(self, cfg: InpaintingConfig, autoencoder: FrozenAutoencoder):
        self.shares, self.autoencoder = cfg.shares, autoencoder
        self._gray: dict[tuple, torch.Tensor] = {}  # (h, w, device, dtype) -> mid-gray latents (1, C, h, w)

    def gray_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents of a mid-gray image of the latents' size (the posterior's mean for KL)."""
        h, w = latents.shape[-2:]
        key = (h, w, latents.device, latents.dtype)
        if key not in self._gray:
            vae, factor = self.autoencoder.vae, self.autoencoder.factor
            gray = torch.zeros(1, vae.config.in_channels, h * factor, w * factor, device=vae.device, dtype=vae.dtype)
            with torch.no_grad():
                self._gray[key] = encode(vae, gray).to(latents)
        return self._gray[key]

    def __call__(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 1 + C, h, w): a random mask per image and the masked image's latents."""
        b, _, h, w = latents.shape
        masks = random_masks(b, h, w, self.shares, _cpu_generator(generator)).to(latents)
        masked = torch.where(masks > 0.5, self.gray_latents(latents), latents)
        return torch.cat([masks, masked], dim=1)


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """Masks are drawn on the CPU (PIL draws the strokes): a GPU generator (validation's fixed
    seeds) stands for a CPU one of the same seed; None is the global generator Lightning seeds."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(generator.initial_seed())


def widen_conv_in(unet: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """The UNet taking `in_channels` inputs: the first conv's old weights for the first inputs, zeros
    for the new ones (the pretrained prediction unchanged at the start), its config saying so."""
    old = unet.conv_in
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet
