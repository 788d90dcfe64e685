"""The diffusion stage's export: RUN/pipeline, with the EMA weights and a DPM-Solver++ scheduler on
the training schedule. A KL pipeline loads in plain `diffusers.StableDiffusionPipeline`."""

from __future__ import annotations

from pathlib import Path

from ldm.sampling.pipeline_io import export_pipeline
from ldm.stages.diffusion.module import LatentDiffusion
from ldm.stages.diffusion.samples import inference_scheduler


def export(module: LatentDiffusion, out_dir: Path) -> Path:
    """RUN/pipeline with the EMA weights (the training weights when EMA is off)."""
    with module.ema_weights():
        unet = module.unet.to("cpu")
        return export_pipeline(out_dir, vae=module.autoencoder.vae.to("cpu"),
                               text_encoder=module.conditioner.text_encoder.to("cpu"),
                               tokenizer=module.conditioner.tokenizer, unet=unet,
                               scheduler=inference_scheduler(module.noise_scheduler))
