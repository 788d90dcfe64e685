"""The denoising loss: noise to add, what the network should predict, and how to weight timesteps.

    loss = DiffusionLoss(scheduler, prediction_type="epsilon", snr_gamma=5.0, noise_offset=0.05)
    noise = loss.sample_noise(latents)
    t = loss.sample_timesteps(latents)
    noisy = scheduler.add_noise(latents, noise, t)
    value = loss(unet(noisy, t, embeddings).sample, latents, noise, t)

The noise schedule itself (betas, alphas, adding noise, v-targets) is diffusers' `DDPMScheduler`;
this file adds what diffusers' training scripts write inline and no library class holds:
- the target for "epsilon" (the noise) or "v_prediction" (Salimans & Ho's v),
- min-SNR weighting (Hang et al. 2023): each timestep's MSE weighted by min(SNR, gamma) / SNR
  (epsilon) or min(SNR, gamma) / (SNR + 1) (v), which stops easy low-noise steps dominating,
- noise offset (Guttenberg 2023): a per-channel constant added to the noise, so the model learns
  to change an image's overall brightness and colour, which plain Gaussian noise hardly moves,
- masked loss (kohya's `--masked_loss`, OneTrainer's masked training): an optional weight per latent
  pixel, from a loss mask (`data.mask`) as mask_floor + (1 - mask_floor) * mask, the squared error
  averaged over the weighted pixels of each sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

PREDICTION_TYPES = ("epsilon", "v_prediction")
# A sample's weights sum to at least this in the division: an all-zero mask gives 0 / MIN_WEIGHT = 0
# (and a zero gradient), never 0 / 0.
MIN_WEIGHT = 1e-12


class DiffusionLoss:
    def __init__(self, scheduler: DDPMScheduler, prediction_type: str = "epsilon",
                 snr_gamma: float | None = None, noise_offset: float = 0.0, mask_floor: float = 0.0):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.scheduler = scheduler
        self.prediction_type = prediction_type
        self.snr_gamma = snr_gamma
        self.noise_offset = noise_offset
        self.mask_floor = mask_floor  # the weight of a masked-out pixel

    def sample_noise(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        if self.noise_offset:
            offset = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator,
                                 device=latents.device, dtype=latents.dtype)
            noise = noise + self.noise_offset * offset
        return noise

    def sample_timesteps(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One training timestep per sample, uniform over the schedule."""
        steps = self.scheduler.config.num_train_timesteps
        return torch.randint(0, steps, (latents.shape[0],), generator=generator,
                             device=latents.device).long()

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        return self.scheduler.get_velocity(latents, noise, timesteps)

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """Per-sample min-SNR weights, or None for the plain (unweighted) MSE."""
        if self.snr_gamma is None:
            return None
        snr = compute_snr(self.scheduler, timesteps)
        clipped = torch.clamp(snr, max=self.snr_gamma)
        # v-prediction's MSE already carries a factor (SNR + 1) relative to x0's; epsilon's carries SNR.
        return clipped / (snr + 1) if self.prediction_type == "v_prediction" else clipped / snr

    def mask_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """Per-pixel weights from loss masks in [0, 1] (at the latent grid): the masked-in part at full
        weight, the rest at `mask_floor`."""
        return self.mask_floor + (1 - self.mask_floor) * mask.float()

    def __call__(self, prediction: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                 timesteps: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of a batch; `weight` (B, 1, h, w), optional, weighs each latent pixel (all channels)."""
        target = self.target(latents, noise, timesteps)
        error = F.mse_loss(prediction.float(), target.float(), reduction="none")
        per_sample = error.mean(dim=(1, 2, 3)) if weight is None else weighted_mean(error, weight)
        weights = self.weights(timesteps)
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample)
        return per_sample.mean()


def weighted_mean(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean of `error` (B, C, h, w) weighted per pixel by `weight` (B, 1, h, w):
    normalised by the sum of the sample's weights, so that the loss's scale does not depend on how
    much of the image a mask covers (a small subject trains as hard as a large one)."""
    weight = weight.to(error).expand_as(error)
    return (error * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(MIN_WEIGHT)
