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
  to change an image's overall brightness and colour, which plain Gaussian noise hardly moves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

PREDICTION_TYPES = ("epsilon", "v_prediction")


class DiffusionLoss:
    def __init__(self, scheduler: DDPMScheduler, prediction_type: str = "epsilon",
                 snr_gamma: float | None = None, noise_offset: float = 0.0):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.scheduler = scheduler
        self.prediction_type = prediction_type
        self.snr_gamma = snr_gamma
        self.noise_offset = noise_offset

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

    def __call__(self, prediction: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                 timesteps: torch.Tensor) -> torch.Tensor:
        target = self.target(latents, noise, timesteps)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        weights = self.weights(timesteps)
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample)
        return per_sample.mean()
