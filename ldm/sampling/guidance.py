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
pipelines do. An inpainting UNet's extra input (the mask and the masked image's latents,
`extra_channels`) is concatenated after the latents, as `StableDiffusionInpaintPipeline` does. The
text tensor is built once and passed as the same object at every step, which is what lets
`ldm.sampling.attention_cache` keep its keys and values.

A UNet distilled with its guidance scale as an input (a latent consistency model, `ldm train
configs/distill/...`: diffusers' `time_cond_proj_dim`) has guidance folded in: it is called once, on
the positive rows only, with the scale embedded as `timestep_cond`, as `StableDiffusionPipeline` and
`LatentConsistencyModelPipeline` call it (the negative prompt then has no effect).
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from ldm.components.text_time import unet_inputs


def embeds_guidance(unet: UNet2DConditionModel) -> bool:
    """Whether the UNet takes its guidance scale as an input (a distilled LCM) instead of two passes."""
    config = getattr(unet, "config", None)  # a bare denoising function (tests) has none: plain guidance
    return config is not None and config.get("time_cond_proj_dim") is not None


def guidance_embedding(scales: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, dim) embeddings of guidance scales, as diffusers' pipelines make them for an LCM UNet:
    of `scale - 1` (their convention: the w of `cond + w * (cond - uncond)`). diffusers' own function
    (a pipeline method that does not use its instance), so that images match theirs to the bit."""
    return StableDiffusionPipeline.get_guidance_scale_embedding(None, scales.float() - 1, embedding_dim=dim)


class GuidedDenoiser:
    """(latents, timestep) -> the noise prediction, guided when a negative is given and scale > 1."""

    def __init__(self, unet: UNet2DConditionModel, text: torch.Tensor, negative: torch.Tensor | None = None,
                 scale: float = 1.0, rescale: float = 0.0, extra_channels: torch.Tensor | None = None,
                 times: torch.Tensor | None = None):
        self.unet, self.scale, self.rescale = unet, scale, rescale
        self.embedded = None  # the scale as the UNet's input, for a UNet that takes it
        if embeds_guidance(unet):
            scales = torch.full((text.shape[0],), scale)
            self.embedded = guidance_embedding(scales, unet.config.time_cond_proj_dim).to(text.device, text.dtype)
        self.guided = negative is not None and scale > 1.0 and self.embedded is None
        # [negative; positive] rows: one UNet call makes both predictions.
        self.text = torch.cat([negative.to(text), text]) if self.guided else text
        if extra_channels is not None and self.guided:
            extra_channels = torch.cat([extra_channels] * 2)
        self.extra_channels = extra_channels
        if times is not None and self.guided:  # an SDXL UNet's time ids: the same for both halves
            times = torch.cat([times, times])
        # Unpacked once (ldm.components.text_time): the same tensors at every step. The scale as an
        # input only for a UNet that takes it (an LCM's), as diffusers' pipelines pass it.
        self.inputs = unet_inputs(unet, self.text, times)
        if self.embedded is not None:
            self.inputs["timestep_cond"] = self.embedded

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        model_input = torch.cat([latents] * 2) if self.guided else latents
        if self.extra_channels is not None:
            model_input = torch.cat([model_input, self.extra_channels.to(model_input)], dim=1)
        noise = self.unet(model_input, timestep, **self.inputs, return_dict=False)[0]
        if not self.guided:
            return noise
        uncond, cond = noise.chunk(2)
        guided = uncond + self.scale * (cond - uncond)
        return rescale_noise_cfg(guided, cond, self.rescale) if self.rescale > 0 else guided
