"""Images from prompts with a pipeline folder: what `ldm generate` does for each batch of images, and
what the diffusion stage makes its class images with (DreamBooth's prior preservation), so that both
make the same image from the same prompt, seed and settings.

    pipe = sampling_pipeline("runs/shapes/pipeline", "dpmsolver++")
    images = seeded_images(pipe, ["a red circle"] * 2, [0, 1], steps=20, guidance=5.0)

Each image has its own CPU generator seeded with its seed: the same seed gives the same noise on
any device and in any batch. `decoded_images` is one pipeline call as the pipeline decodes it (before
an inpainting's overlay), for callers that measure that (`ldm evaluate inpainting`).
"""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import torch

from ldm.sampling import pipeline_io
from ldm.sampling.inpaint import Inpainting, composite
from ldm.sampling.lora import LoraChoice
from ldm.sampling.samplers import make_sampler


def sampling_pipeline(path: str | Path, sampler: str, dtype: torch.dtype | None = None, device=None,
                      loras: list[LoraChoice] = (), vae: str | Path | None = None, prompt_chunks: int | None = None,
                      embeddings: list[str] = ()):
    """The pipeline of `path` (with its LoRAs, another decoder, its prompt windows and textual-inversion
    embeddings) sampling with `sampler`, silent."""
    # through its module, which tests replace to check that nothing loads before the input is checked
    pipe = pipeline_io.load_pipeline(path, dtype=dtype, device=device, loras=loras, vae=vae,
                                     prompt_chunks=prompt_chunks, embeddings=embeddings)
    pipe.scheduler = make_sampler(sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def decoded_images(pipe, prompts: list[str], generators: list[torch.Generator], *, steps: int, guidance: float,
                   height: int | None = None, width: int | None = None, negative: str = "", eta: float = 0.0,
                   guidance_rescale: float = 0.0, init: PIL.Image.Image | None = None, strength: float = 0.8,
                   mask: PIL.Image.Image | None = None, repaint: int = 0) -> list[PIL.Image.Image]:
    """One pipeline call, its images as decoded (before an inpainting's overlay): from text, from `init`
    (image to image), or repainting `mask`'s white part of `init`: a text-to-image UNet by blending its
    latents (`Inpainting`), an inpainting UNet by taking the mask itself."""
    blend = mask is not None and not pipe.is_inpainting
    inpainting = Inpainting(pipe, init, mask, generators, repaint) if blend else None
    return pipe(
        list(prompts), height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
        negative_prompt=[negative] * len(prompts), eta=eta, generator=generators, image=init,
        strength=strength, step_wrapper=inpainting, guidance_rescale=guidance_rescale,
        mask_image=mask if pipe.is_inpainting else None,
    ).images


def seeded_images(pipe, prompts: list[str], seeds: list[int], *, feather: int = 2, **settings) -> list[PIL.Image.Image]:
    """One image per (prompt, seed), in one pipeline call (`decoded_images`, `settings` its keywords);
    with a mask, overlaid on the init image outside it (feathered by `feather` pixels)."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    images = decoded_images(pipe, prompts, generators, **settings)
    if settings.get("mask") is not None:
        images = [composite(image, settings["init"], settings["mask"], feather) for image in images]
    return images
