"""What a network's output says about the clean latent and the noise, for either parametrization
(epsilon or v). diffusers' schedulers compute both inside `step`, one timestep for the whole batch,
and have no public function for them; training needs them per sample, at each sample's timestep
(the smoothness regulariser, the distillation stage's ODE solver and consistency outputs).

    x_t = alpha_t x0 + sigma_t eps,   alpha_t = sqrt(alpha_bar_t),   sigma_t = sqrt(1 - alpha_bar_t)
    v   = alpha_t eps - sigma_t x0
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler


def signal_and_noise_scales(scheduler: DDPMScheduler, timesteps: torch.Tensor,
                            like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) per sample, shaped to broadcast over latents like `like`."""
    alpha_bar = scheduler.alphas_cumprod.to(like.device)[timesteps].float().view(-1, 1, 1, 1)
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def predicted_original(scheduler: DDPMScheduler, prediction: torch.Tensor, noisy: torch.Tensor,
                       timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latent x0 that the network's prediction implies."""
    signal, noise_scale = signal_and_noise_scales(scheduler, timesteps, noisy)
    if scheduler.config.prediction_type == "v_prediction":
        return signal * noisy - noise_scale * prediction
    return (noisy - noise_scale * prediction) / signal


def predicted_noise(scheduler: DDPMScheduler, prediction: torch.Tensor, noisy: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """The noise eps that the network's prediction implies."""
    if scheduler.config.prediction_type == "v_prediction":
        signal, noise_scale = signal_and_noise_scales(scheduler, timesteps, noisy)
        return signal * prediction + noise_scale * noisy
    return prediction
