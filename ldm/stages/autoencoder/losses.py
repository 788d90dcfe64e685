"""The stage-1 training losses, as taming-transformers and latent-diffusion define them.

    generator loss = l1 |x - x̂| + l2 (x - x̂)² + perceptual P(x, x̂) + edge |∇x - ∇x̂|
                     + regularizers (KL for a KL autoencoder; codebook + commitment for VQ)
                     + disc * λ * (-D(x̂))                           once the GAN is on
    discriminator loss = hinge(D(x), D(x̂))

λ is taming's adaptive weight: the ratio of the gradient norms of the reconstruction loss and of
the GAN loss at the decoder's last layer, so that neither term drowns the other whatever their
scales. diffusers has the autoencoders but none of these losses (they live in its training
examples, not the library), so they are written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import image_gradients

from ldm.metrics.image_quality import ssim
from ldm.stages.autoencoder.lpips import LPIPS

ADAPTIVE_WEIGHT_MAX = 1e4  # taming's clamp: early on the GAN gradient can be ~0
GRAD_NORM_EPS = 1e-4


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix's NLayerDiscriminator, as taming uses it): one real/fake logit per patch.

    Each extra layer halves the resolution and doubles the width (up to 8x), so `layers` sets the
    patch size that a logit judges: 3 layers see 70x70 patches, 2 see 34x34 (for 32 px images).
    """

    def __init__(self, layers: int = 3, channels: int = 64, in_channels: int = 3):
        super().__init__()
        blocks = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = channels
        for n in range(1, layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < layers else 1  # the last hidden layer keeps the resolution
            blocks += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, True)]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation, which taming keeps for the discriminator."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """taming's λ = ‖∇ rec_loss‖ / ‖∇ gan_loss‖ at `last_layer` (the decoder's output conv)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + GRAD_NORM_EPS)
    return weight.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach()


class SSIMLoss(nn.Module):
    """1 - SSIM: the perceptual loss that needs no pretrained network.

    LPIPS compares deep features of a network trained on ImageNet, whose weights must be
    downloaded. SSIM compares local means, contrasts and structure in 11x11 windows instead:
    it rewards sharp edges and flat regions kept flat, the things per-pixel losses blur, with no
    weights at all and little compute.
    """

    def forward(self, reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim(reconstructions, originals).mean()


def edge_loss(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the images' x and y differences (torchmetrics' image_gradients).

    An edge blurred over two pixels costs l1 and l2 little, since half its error sits on each
    side; its gradient is halved, which this term sees in full."""
    dy, dx = image_gradients(reconstructions)
    dy_real, dx_real = image_gradients(originals)
    return (dy - dy_real).abs().mean() + (dx - dx_real).abs().mean()


def perceptual_loss(lpips_weights: str | None) -> nn.Module:
    """LPIPS when its weights are at hand (a local file), else the weight-free SSIM loss."""
    return LPIPS(lpips_weights) if lpips_weights else SSIMLoss()


class AutoencoderLoss(nn.Module):
    """The weighted sum above; holds the perceptual network and the discriminator.

    `weights` maps each term's name to its weight (from the config's `loss:` section); the
    regularizers (kl, codebook, commitment) are computed by the autoencoder module and passed in.
    """

    def __init__(self, weights: dict[str, float], lpips_weights: str | None, disc_layers: int,
                 disc_channels: int):
        super().__init__()
        self.weights = weights
        self.perceptual = perceptual_loss(lpips_weights) if weights.get("perceptual") else None
        # No GAN at all when its weight is 0: no discriminator to train, store or step.
        self.discriminator = PatchDiscriminator(disc_layers, disc_channels) if weights["disc"] > 0 else None

    def reconstruction(self, originals: torch.Tensor, reconstructions: torch.Tensor, edges: bool = True) -> dict:
        """The per-image terms; the edge term only when `edges` (loss.edge_start has passed)."""
        x, x_hat = originals.float(), reconstructions.float()
        terms = {"l1": (x - x_hat).abs().mean(), "l2": F.mse_loss(x_hat, x)}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(x_hat, x)
        if edges and self.weights.get("edge"):
            terms["edge"] = edge_loss(x_hat, x)
        return terms

    def generator(self, originals: torch.Tensor, reconstructions: torch.Tensor,
                  regularizers: dict[str, torch.Tensor], last_layer: torch.Tensor | None,
                  edges: bool = True) -> dict:
        """All generator terms, their weighted sum as "loss"; the GAN term when `last_layer` is given."""
        terms = self.reconstruction(originals, reconstructions, edges)
        rec_loss = sum(self.weights[name] * value for name, value in terms.items())
        terms.update(regularizers)
        terms["loss"] = rec_loss + sum(self.weights[name] * value for name, value in regularizers.items())
        if last_layer is not None and self.discriminator is not None:
            gan_loss = -self.discriminator(reconstructions).float().mean()
            terms["gan"] = gan_loss
            terms["adaptive_weight"] = adaptive_weight(rec_loss, gan_loss, last_layer)
            terms["loss"] = terms["loss"] + self.weights["disc"] * terms["adaptive_weight"] * gan_loss
        return terms

    def discriminator_loss(self, originals: torch.Tensor, reconstructions: torch.Tensor) -> dict:
        logits_real = self.discriminator(originals.detach()).float()
        logits_fake = self.discriminator(reconstructions.detach()).float()
        return {"loss": hinge_discriminator_loss(logits_real, logits_fake),
                "logits_real": logits_real.mean(), "logits_fake": logits_fake.mean()}
