"""Validation samples: a grid of images for fixed prompts and seeds, drawn as training goes.

One row per prompt, one column per seed; the same prompts and seeds at every validation, so the
grids of successive steps compare directly. Images come from `LatentDiffusionPipeline`, the same
code that generates after export, with the inference scheduler the export will carry.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ldm.components.conditioner import TextConditioner
from ldm.components.frozen_autoencoder import FrozenAutoencoder
from ldm.core.atomic import atomic_write_bytes
from ldm.sampling.pipeline import LatentDiffusionPipeline


@dataclass
class SamplesConfig:
    prompts: list[str] = field(default_factory=list)  # none: no sample grids
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    steps: int = 20
    guidance_scale: float = 4.0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"samples.steps must be at least 1, got {self.steps}")
        if self.prompts and not self.seeds:
            raise ValueError("samples.seeds must name at least one seed")


def inference_scheduler(training_scheduler) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ on the training schedule (same betas, same prediction type): good in 20 steps."""
    return DPMSolverMultistepScheduler.from_config(training_scheduler.config)


def sample_grid(cfg: SamplesConfig, unet: UNet2DConditionModel, autoencoder: FrozenAutoencoder,
                conditioner: TextConditioner, training_scheduler) -> Image.Image:
    """The prompts x seeds grid, drawn with the weights the UNet holds now."""
    pipe = LatentDiffusionPipeline(vae=autoencoder.vae, text_encoder=conditioner.text_encoder,
                                   tokenizer=conditioner.tokenizer, unet=unet,
                                   scheduler=inference_scheduler(training_scheduler))
    pipe.set_progress_bar_config(disable=True)
    prompts = [prompt for prompt in cfg.prompts for _ in cfg.seeds]
    device = unet.device
    generators = [torch.Generator(device).manual_seed(seed) for _ in cfg.prompts for seed in cfg.seeds]
    images = pipe(prompts, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                  generator=generators, output_type="np").images
    rows, cols = len(cfg.prompts), len(cfg.seeds)
    h, w = images.shape[1:3]
    grid = images.reshape(rows, cols, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, 3)
    return Image.fromarray((grid * 255).round().clip(0, 255).astype(np.uint8))


def save_grid(grid: Image.Image, path: Path, cfg: SamplesConfig, step: int, scheduler_name: str) -> None:
    """PNG with what made it (prompts, seeds, steps, guidance, scheduler) in its text metadata."""
    info = PngInfo()
    info.add_text("ldm", json.dumps({"prompts": cfg.prompts, "seeds": cfg.seeds, "steps": cfg.steps,
                                     "guidance_scale": cfg.guidance_scale, "scheduler": scheduler_name,
                                     "training_step": step}))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())
