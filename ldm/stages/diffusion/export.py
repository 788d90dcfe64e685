"""The diffusion stage's exports, with the EMA weights (the training weights when EMA is off):

    RUN/pipeline   a whole pipeline with the module's sampler (DPM-Solver++ on the training schedule;
                   LCMScheduler for a distilled one, ldm/stages/distill); a KL one loads in plain
                   `diffusers.StableDiffusionPipeline` (an SDXL-style one in
                   `diffusers.StableDiffusionXLPipeline`)
    RUN/lora       an adapter run's adapters and the note of their base (`ldm.sampling.lora`): LoRA
                   and DoRA in diffusers' LoRA format, for `load_lora_weights` on that base; LoHa and
                   LoKr as a peft adapter folder, which `ldm generate/animate --lora` load
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from ldm.components.dual_text_encoder import text_components
from ldm.sampling.lora import write_adapter_folder, write_lora
from ldm.sampling.pipeline_io import export_pipeline
from ldm.stages.diffusion.module import LatentDiffusion

ADAPTER = "default"  # the name peft gives the one adapter a LoRA run trains


def export(module: LatentDiffusion, out_dir: Path) -> Path:
    """RUN/pipeline with the EMA weights."""
    with module.ema_weights():
        unet = module.unet.to("cpu")
        return export_pipeline(out_dir, vae=module.autoencoder.vae.to("cpu"), unet=unet,
                               scheduler=module.sampling_scheduler(), prompt_chunks=module.conditioner.max_chunks,
                               **text_components(module.conditioner.to("cpu")))


def peft_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's adapter weights under peft's key names: copies, since the EMA weights are swapped
    back out of the parameters in place once they are read (on the CPU, `.cpu()` is no copy)."""
    weights = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in weights.items()}


def adapter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's LoRA (or DoRA) weights under diffusers' key names (as diffusers' LoRA training script
    saves them)."""
    return convert_state_dict_to_diffusers(peft_weights(model))


def adapter_config(model: torch.nn.Module) -> dict:
    """The peft config (rank, alpha, targets, use_dora) that the loaders rebuild the adapters from."""
    return model.peft_config[ADAPTER].to_dict()


def is_diffusers_lora(model: torch.nn.Module) -> bool:
    """Whether the model's adapter is one diffusers' LoRA format holds (LoRA, DoRA), not LoHa or LoKr."""
    return isinstance(model.peft_config[ADAPTER], LoraConfig)


def export_lora(module: LatentDiffusion, out_dir: Path) -> Path:
    """RUN/lora with the EMA of the adapters, and the note of the base model they trained on."""
    text_encoder = module.text_encoder
    if not is_diffusers_lora(module.unet):  # LoHa, LoKr (on the UNet only: the config refuses the text encoder)
        with module.ema_weights():
            weights = peft_weights(module.unet)
        return write_adapter_folder(out_dir, module.base, weights, adapter_config(module.unet))
    with module.ema_weights():
        unet_layers = adapter_weights(module.unet)
        text_layers = adapter_weights(text_encoder) if text_encoder is not None else None
    return write_lora(out_dir, module.base, unet_layers, adapter_config(module.unet), text_layers,
                      adapter_config(text_encoder) if text_encoder is not None else None)
