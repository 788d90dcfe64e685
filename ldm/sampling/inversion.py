"""DDIM inversion: an image's latents run backwards through the deterministic sampler to noise.

Sampling that noise with DDIM (eta 0) and the same prompt, steps and guidance 1 gives the image
back (approximately: each inverse step uses the noise prediction at the next level, as diffusers'
`DDIMInverseScheduler` and its DiffEdit pipeline do). The image walk slerps between such inverted
noises, so it passes through the user's own images.

The inverse scheduler and the DDIM sampler that undoes it are built together from the pipeline's
noise schedule (betas, prediction type), not copied from its scheduler config: a pipeline's sampler
settings (DPM-Solver's "linspace" timestep spacing, as every ldm export has) are not what
`DDIMInverseScheduler` accepts, and the two directions must step through the same timesteps.
"""

from __future__ import annotations

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel

from ldm.sampling.guidance import GuidedDenoiser

# What defines the noising process the model learned to reverse; everything else in a scheduler
# config says how a sampler steps through it.
NOISE_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                       "prediction_type", "rescale_betas_zero_snr")
# "leading" with an offset of 1 (one of the two spacings DDIMInverseScheduler takes; Stable Diffusion's
# DDIM setting). "trailing" would end the inversion at the last training timestep, where sqrt(alpha_bar)
# is so small that each step's error is amplified many times: measured on a smooth tiny UNet, the
# image walk's end frames no longer came back as their images at 5 steps.
INVERSION_SPACING = "leading"
INVERSION_OFFSET = 1


def _ddim_settings(scheduler_config) -> dict:
    schedule = {key: scheduler_config[key] for key in NOISE_SCHEDULE_KEYS if key in scheduler_config}
    # alpha = 1 beyond the schedule's ends: the sampler's last step lands on the clean latents and the
    # inversion's first step starts from them, so the two directions mirror each other.
    return {**schedule, "clip_sample": False, "set_alpha_to_one": True, "steps_offset": INVERSION_OFFSET,
            "timestep_spacing": INVERSION_SPACING}


def inversion_sampler(scheduler_config) -> DDIMScheduler:
    """The DDIM sampler whose steps `ddim_invert` runs backwards (same noise schedule, same timesteps)."""
    return DDIMScheduler(**_ddim_settings(scheduler_config))


@torch.no_grad()
def ddim_invert(unet: UNet2DConditionModel, scheduler_config, latents: torch.Tensor,
                text_embeddings: torch.Tensor, num_inference_steps: int,
                times: torch.Tensor | None = None) -> torch.Tensor:
    """Noise (B, C, h, w) that `inversion_sampler(scheduler_config)` with `num_inference_steps`
    steps turns back into `latents`.

    `latents` are scaled autoencoder latents (ldm.components.autoencoder.encode), `text_embeddings`
    one row per image (its caption). Inversion is conditional only: classifier-free guidance
    amplifies the small per-step errors of inversion, so the walk renders inverted keyframes best at
    guidance 1. `times`: an SDXL-style UNet's time ids, one row per image.
    """
    inverse = DDIMInverseScheduler(**_ddim_settings(scheduler_config))
    inverse.set_timesteps(num_inference_steps, device=latents.device)
    denoiser = GuidedDenoiser(unet, text_embeddings.to(device=latents.device, dtype=unet.dtype), times=times)
    x = latents.to(unet.dtype)
    for t in inverse.timesteps:
        x = inverse.step(denoiser(inverse.scale_model_input(x, t), t), t, x, return_dict=False)[0]
    return x
