"""Classifier-free guidance, wrapped around the network once (the k-diffusion and sgm idea).

    denoiser = GuidedDenoiser(unet, text, negative, scale=5.0)
    for t in timesteps:
        noise = denoiser(scheduler.scale_model_input(latents, t), t)
        latents = scheduler.step(noise, t, latents).prev_sample

Every sampling loop of the project (the pipeline's, which every walk goes through, and DDIM
inversion) calls a denoiser with this one signature, so how guidance combines the two predictions
is decided here and nowhere else (and an SDXL-style UNet's packed text and time ids are unpacked
here, `ldm.components.text_time`):

    noise = uncond + scale * (cond - uncond)        (Ho & Salimans; Stable Diffusion's formula)

and, with `rescale` above 0, its standard deviation brought back towards the conditional one's
(Lin et al. 2024, section 3.4, diffusers' `rescale_noise_cfg`, as `guidance_rescale` does in
`StableDiffusionPipeline`): high guidance on a zero-terminal-SNR model over-exposes without it.

With guidance, the negative and the positive rows go through the UNet as one batch, as diffusers'
pipelines do. The text tensor is built once and passed as the same object at every step, which is
what lets `ldm.sampling.attention_cache` keep its keys and values.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from ldm.components.text_time import unet_inputs


class GuidedDenoiser:
    """(latents, timestep) -> the noise prediction, guided when a negative is given and scale > 1."""

    def __init__(self, unet: UNet2DConditionModel, text: torch.Tensor, negative: torch.Tensor | None = None,
                 scale: float = 1.0, rescale: float = 0.0, times: torch.Tensor | None = None):
        self.unet, self.scale, self.rescale = unet, scale, rescale
        self.guided = negative is not None and scale > 1.0
        # [negative; positive] rows: one UNet call makes both predictions.
        self.text = torch.cat([negative.to(text), text]) if self.guided else text
        if times is not None and self.guided:  # an SDXL UNet's time ids: the same for both halves
            times = torch.cat([times, times])
        # Unpacked once (ldm.components.text_time): the same tensors at every step.
        self.inputs = unet_inputs(unet, self.text, times)

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        model_input = torch.cat([latents] * 2) if self.guided else latents
        noise = self.unet(model_input, timestep, **self.inputs, return_dict=False)[0]
        if not self.guided:
            return noise
        uncond, cond = noise.chunk(2)
        guided = uncond + self.scale * (cond - uncond)
        return rescale_noise_cfg(guided, cond, self.rescale) if self.rescale > 0 else guided
