"""DDIM inversion on the schedulers that exports carry: it runs on any of them, and sampling the
inverted noise back with the matching DDIM sampler gives the image again."""

from __future__ import annotations

import random

import pytest
import torch
from diffusers import DDPMScheduler
from tiny import IMAGE_SIZE, tiny_components, tiny_scheduler

from ldm.components import autoencoder as vae_lib
from ldm.components.text_encoder import encode_prompts
from ldm.core.images import to_tensor
from ldm.data.shapes.generator import make_example
from ldm.metrics.image_quality import psnr
from ldm.sampling.inversion import ddim_invert, inversion_sampler
from ldm.sampling.pipeline import LatentDiffusionPipeline

STEPS = 20


def pipeline_with(scheduler) -> LatentDiffusionPipeline:
    parts = tiny_components("kl")
    parts["scheduler"] = scheduler
    # A network that predicts no noise: then each inverse step is exactly undone by its sampler step,
    # and what is left to check is that the two step through the same levels (a trained model adds
    # its own small per-step error, which the README's figure on the quickstart pipeline shows).
    torch.nn.init.zeros_(parts["unet"].conv_out.weight)
    torch.nn.init.zeros_(parts["unet"].conv_out.bias)
    pipe = LatentDiffusionPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The scheduler every stage-2 export carries (the tiny pipelines', DPM-Solver++ with linspace
# spacing), and one a pipeline from elsewhere may carry instead (DDPM with leading spacing, as older
# Stable Diffusion folders and the training schedule have): inversion reads the spacing from either.
SCHEDULERS = {"dpmsolver-linspace": tiny_scheduler(),
              "ddpm-leading": DDPMScheduler(timestep_spacing="leading", steps_offset=1)}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_inverted_noise_samples_back_to_the_image(name):
    pipe = pipeline_with(SCHEDULERS[name])
    rng = random.Random(0)
    pixels = torch.stack([to_tensor(make_example(rng, IMAGE_SIZE, held_out=False)[0]) for _ in range(2)])
    with torch.no_grad():
        latents = vae_lib.encode(pipe.vae, pixels)
        reconstructed = vae_lib.decode(pipe.vae, latents)  # the best the walk can show
    captions = encode_prompts(pipe.tokenizer, pipe.text_encoder, ["a red circle", "a blue square"])
    noise = ddim_invert(pipe.unet, pipe.scheduler.config, latents, captions, STEPS)
    assert noise.shape == latents.shape and not torch.allclose(noise, latents)
    pipe.scheduler = inversion_sampler(pipe.scheduler.config)
    back = pipe(prompt_embeds=captions, latents=noise, num_inference_steps=STEPS, guidance_scale=1.0,
                output_type="pt").images * 2 - 1
    quality = psnr(back, reconstructed)
    assert (quality > 40).all(), quality  # dB against the autoencoder's own reconstruction
