"""Validation samples: a grid of images for fixed prompts and seeds, drawn as training goes.

One row per prompt, one column per seed; the same prompts and seeds at every validation, so the
grids of successive steps compare directly. Images come from `LatentDiffusionPipeline`, the same
code that generates after export, with the sampler the export will carry. An inpainting
model draws them with the whole image masked (what it learns from `inpainting.whole`): from the text alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.dual_text_encoder import text_components
from ldm.components.text_encoder import TextConditioner
from ldm.core.images import image_grid, write_png
from ldm.sampling.pipeline import LatentDiffusionPipeline
from ldm.sampling.pipeline_xl import LatentDiffusionXLPipeline
from ldm.stages.diffusion.config import SamplesConfig


def sample_grid(cfg: SamplesConfig, unet: UNet2DConditionModel, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner, scheduler) -> Image.Image:
    """The prompts x seeds grid, drawn with the weights the UNet holds now and `scheduler` (the
    sampler the export will carry)."""
    text = text_components(conditioner)
    pipeline_class = LatentDiffusionXLPipeline if "text_encoder_2" in text else LatentDiffusionPipeline
    pipe = pipeline_class(vae=autoencoder.vae, unet=unet, scheduler=scheduler, **text)
    pipe.prompt_chunks = conditioner.max_chunks
    pipe.set_progress_bar_config(disable=True)
    prompts = [prompt for prompt in cfg.prompts for _ in cfg.seeds]
    device = unet.device
    generators = [torch.Generator(device).manual_seed(seed) for _ in cfg.prompts for seed in cfg.seeds]
    whole_mask = {}
    if pipe.is_inpainting:
        size = (pipe.image_size, pipe.image_size)
        whole_mask = dict(image=Image.new("RGB", size), mask_image=Image.new("L", size, 255), strength=1.0)
    images = pipe(prompts, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                  generator=generators, **whole_mask).images
    columns = len(cfg.seeds)
    return image_grid([images[i:i + columns] for i in range(0, len(images), columns)])


def save_grid(grid: Image.Image, path: Path, cfg: SamplesConfig, step: int, scheduler_name: str) -> None:
    """PNG with what made it (prompts, seeds, steps, guidance, scheduler) in its metadata."""
    write_png(path, grid, {"prompts": json.dumps(cfg.prompts), "seeds": json.dumps(cfg.seeds),
                           "steps": str(cfg.steps), "guidance": str(cfg.guidance_scale),
                           "scheduler": scheduler_name, "training_step": str(step)})
