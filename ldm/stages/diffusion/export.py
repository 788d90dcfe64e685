"""The diffusion stage's exports, with the EMA weights (the training weights when EMA is off):

    RUN/pipeline   a whole pipeline with a DPM-Solver++ scheduler on the training schedule; a KL one
                   loads in plain `diffusers.StableDiffusionPipeline` (an SDXL-style one in
                   `diffusers.StableDiffusionXLPipeline`)
    RUN/lora       a LoRA run's adapters in diffusers' LoRA format and the note of their base
                   (`ldm.sampling.lora`), for `load_lora_weights` on that base
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils import convert_state_dict_to_diffusers
from peft.utils import get_peft_model_state_dict

from ldm.components.dual_text_encoder import text_components
from ldm.sampling.lora import write_lora
from ldm.sampling.pipeline_io import export_pipeline
from ldm.sampling.samplers import inference_scheduler
from ldm.stages.diffusion.module import LatentDiffusion

ADAPTER = "default"  # the name peft gives the one adapter a LoRA run trains


def export(module: LatentDiffusion, out_dir: Path) -> Path:
    """RUN/pipeline with the EMA weights."""
    with module.ema_weights():
        unet = module.unet.to("cpu")
        return export_pipeline(out_dir, vae=module.autoencoder.vae.to("cpu"), unet=unet,
                               scheduler=inference_scheduler(module.noise_scheduler),
                               **text_components(module.conditioner.to("cpu")))


def adapter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's LoRA weights under diffusers' key names (as diffusers' LoRA training script saves them)."""
    weights = convert_state_dict_to_diffusers(get_peft_model_state_dict(model, adapter_name=ADAPTER))
    return {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}


def adapter_config(model: torch.nn.Module) -> dict:
    """The peft config (rank, alpha, targets) that `load_lora_weights` rebuilds the adapters from."""
    return model.peft_config[ADAPTER].to_dict()


def export_lora(module: LatentDiffusion, out_dir: Path) -> Path:
    """RUN/lora with the EMA of the adapters, and the note of the base model they trained on."""
    text_encoder = module.text_encoder
    with module.ema_weights():
        unet_layers = adapter_weights(module.unet)
        text_layers = adapter_weights(text_encoder) if text_encoder is not None else None
    return write_lora(out_dir, module.base, unet_layers, adapter_config(module.unet), text_layers,
                      adapter_config(text_encoder) if text_encoder is not None else None)
