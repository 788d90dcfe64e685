"""Images from prompts with a pipeline folder: what `ldm generate` does for each batch of images, and
what the diffusion stage makes its class images with (DreamBooth's prior preservation), so that both
make the same image from the same prompt, seed and settings.

    pipe = sampling_pipeline("runs/shapes/pipeline", "dpmsolver++")
    images = seeded_images(pipe, ["a red circle"] * 2, [0, 1], steps=20, guidance=5.0)

Each image has its own CPU generator seeded with its seed: the same seed gives the same noise on
any device and in any batch.
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
                      loras: list[LoraChoice] = (), vae: str | Path | None = None):
    """The pipeline of `path` (with its LoRAs, another decoder) sampling with `sampler`, silent."""
    # through its module, which tests replace to check that nothing loads before the input is checked
    pipe = pipeline_io.load_pipeline(path, dtype=dtype, device=device, loras=loras, vae=vae)
    pipe.scheduler = make_sampler(sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded_images(pipe, prompts: list[str], seeds: list[int], *, steps: int, guidance: float,
                  height: int | None = None, width: int | None = None, negative: str = "", eta: float = 0.0,
                  guidance_rescale: float = 0.0, init: PIL.Image.Image | None = None, strength: float = 0.8,
                  mask: PIL.Image.Image | None = None, repaint: int = 0, feather: int = 2) -> list[PIL.Image.Image]:
    """One image per (prompt, seed), in one pipeline call: text-to-image, or from `init` (image to
    image), or repainting `mask`'s white part of `init` (inpainting)."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    inpainting = Inpainting(pipe, init, mask, generators, repaint) if mask is not None else None
    images = pipe(
        list(prompts), height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
        negative_prompt=[negative] * len(prompts), eta=eta, generator=generators, image=init,
        strength=strength, step_wrapper=inpainting, guidance_rescale=guidance_rescale,
    ).images
    if mask is not None:
        images = [composite(image, init, mask, feather) for image in images]
    return images
