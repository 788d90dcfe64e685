"""Step-wise variation regularisation (Smooth Diffusion, Guo et al., CVPR 2024): the stage-2 loss
part that makes the model's output move in proportion to how far its input noise moves, so that a
latent walk between two noises walks evenly between their images (`loss.smoothness`, a weight).

    smoothness = StepVariationLoss(scheduler, weight=1.0)
    noise.requires_grad_(True)               # before the noisy latents are made from it
    with twice_differentiable():             # attention kernels that have a double backward
        prediction = unet(scheduler.add_noise(latents, noise, t), t, embeddings).sample
    loss = diffusion_loss + smoothness.weight * smoothness(prediction, noisy, noise, t)

For one denoising step the model's prediction of the clean latent x0 is a function of the noise
that made the noisy latent. Smooth Diffusion asks that a small move dε of that noise moves x0 by
a length proportional to |dε|, the same everywhere. As in its code (SHI-Labs/Smooth-Diffusion,
`step_regularize`, after StyleGAN2's path-length regulariser), the Jacobian J = dx0/dε is probed
with one random direction y per sample: |J^T y| is the variation, and the penalty is its squared
deviation from a running mean of itself. With y ~ N(0, I) / sqrt(D) scaled by sqrt(1 - alpha_bar_t)
(the noise's own scale in the noisy latent), |y| is about sqrt(1 - alpha_bar_t) and |J^T y| reads
as "how far x0 moves per unit of move of the noise".

The penalty needs a gradient of a gradient (create_graph): a training step costs about two more
UNet passes (docs/benchmarks.md has the ratio). Validation leaves it out (val/loss stays the plain
denoising loss, comparable across runs). Nothing in diffusers or its training utilities has this
term, so it is written here, from the paper's code.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from diffusers import DDPMScheduler
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ldm.stages.diffusion.predictions import predicted_original

# The running mean's rate, as Smooth Diffusion's training script (`step_regularize(decay=0.01)`).
MEAN_DECAY = 0.01


def twice_differentiable() -> AbstractContextManager:
    """The network's forward pass must run inside this for the penalty: the fused attention
    kernels (flash, memory-efficient; CPU and CUDA) have no derivative of their backward, so
    scaled_dot_product_attention is held to its plain math form, which has."""
    return sdpa_kernel(SDPBackend.MATH)


class StepVariationLoss(nn.Module):
    """The regulariser; an nn.Module for its buffers, the running mean of the variation, so that a
    checkpoint holds it and a resumed run goes on from it. The paper's script starts the mean at 0,
    which for the first few hundred steps pulls every variation towards 0 (a smaller model output,
    not an even one); here the first batch's mean starts it."""

    def __init__(self, scheduler: DDPMScheduler, weight: float, decay: float = MEAN_DECAY):
        super().__init__()
        self.scheduler, self.weight, self.decay = scheduler, weight, decay
        self.register_buffer("mean_variation", torch.zeros(()))
        self.register_buffer("started", torch.tensor(False))

    def probe(self, noise: torch.Tensor, timesteps: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """The random direction y per sample: unit length on average, times sqrt(1 - alpha_bar_t)."""
        y = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=torch.float32)
        alpha_bar = self.scheduler.alphas_cumprod.to(noise.device)[timesteps].float().view(-1, 1, 1, 1)
        return y / noise[0].numel() ** 0.5 * (1 - alpha_bar).sqrt()

    def variation(self, original: torch.Tensor, noise: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """|J^T y| per sample, J = d original / d noise; differentiable (create_graph) so the
        penalty trains the network."""
        (grad,) = torch.autograd.grad((original.float() * y).sum(), noise, create_graph=True)
        return grad.float().flatten(1).norm(dim=1)

    @torch.no_grad()
    def update_mean(self, variation: torch.Tensor) -> None:
        """Move the running mean towards this batch's (the paper's mean also carries the batch's
        gradient, scaled by the decay, 0.01; a constant target reads plainly and changes little)."""
        if not self.started:
            self.mean_variation.copy_(variation.mean())
            self.started.fill_(True)
        else:
            self.mean_variation += self.decay * (variation.mean() - self.mean_variation)

    def forward(self, prediction: torch.Tensor, noisy: torch.Tensor, noise: torch.Tensor,
                timesteps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The unweighted penalty: mean over the batch of (variation - running mean)^2. `noise` must
        require a gradient and be what `noisy` was made from."""
        if not noise.requires_grad:
            raise ValueError("the smoothness loss needs the noise to require a gradient "
                             "(noise.requires_grad_(True) before the noisy latents are made)")
        original = predicted_original(self.scheduler, prediction, noisy, timesteps)
        variation = self.variation(original, noise, self.probe(noise, timesteps, generator))
        if self.training:
            self.update_mean(variation.detach())
        return (variation - self.mean_variation).pow(2).mean()
