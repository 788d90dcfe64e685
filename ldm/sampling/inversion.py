"""DDIM inversion: an image's latents run backwards through the deterministic sampler to noise.

Sampling that noise with DDIM (eta 0) and the same prompt, steps and guidance 1 gives the image
back (approximately: each inverse step uses the noise prediction at the next level, as diffusers'
`DDIMInverseScheduler` and its DiffEdit pipeline do). The image walk slerps between such inverted
noises, so it passes through the user's own images.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import DDIMInverseScheduler, UNet2DConditionModel
from diffusers.schedulers import SchedulerMixin

from ldm.sampling.guidance import GuidedDenoiser


@torch.no_grad()
def ddim_invert(unet: UNet2DConditionModel, scheduler: SchedulerMixin, latents: torch.Tensor,
                text_embeddings: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """Noise (B, C, h, w) that DDIM with `num_inference_steps` steps turns back into `latents`.

    `latents` are scaled autoencoder latents (ldm.components.autoencoder.encode), `text_embeddings` one row per
    image (its caption). Inversion is conditional only: classifier-free guidance amplifies the
    small per-step errors of inversion, so the walk renders inverted keyframes best at guidance 1.
    """
    # The sampler's config, less the keys DDIM has no use for (e.g. DDPM's variance_type), which
    # from_config would warn about.
    known = inspect.signature(DDIMInverseScheduler.__init__).parameters
    inverse = DDIMInverseScheduler.from_config({k: v for k, v in scheduler.config.items() if k in known})
    inverse.set_timesteps(num_inference_steps, device=latents.device)
    denoiser = GuidedDenoiser(unet, text_embeddings.to(device=latents.device, dtype=unet.dtype))
    x = latents.to(unet.dtype)
    for t in inverse.timesteps:
        x = inverse.step(denoiser(inverse.scale_model_input(x, t), t), t, x, return_dict=False)[0]
    return x
