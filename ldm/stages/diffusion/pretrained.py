"""Stage 2 from pretrained weights: where each part comes from, and loading the UNet and schedule.

    pretrained: models/stable-diffusion-v1-5    # or RUN/pipeline, or a hub id
    vae: ...                                     # optional: this autoencoder instead of the pipeline's
    text_encoder: ...                            # optional: this text encoder and tokenizer instead
    noise: {...}                                 # optional: this schedule instead of the pipeline's
    unet: {pretrained: PATH}                     # only the UNet (then vae: and text_encoder: are needed)

The noise schedule of a pipeline is read from its scheduler config (betas, prediction type,
timestep spacing, whatever sampler class it names) and built as the DDPMScheduler that training
adds noise with; the export's sampler is made from that again, so a fine-tuned pipeline keeps its
base's schedule. Weights load from safetensors only (`use_safetensors=True`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers import DDPMScheduler, UNet2DConditionModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.pretrained import local_folder, model_folder
from ldm.components.text_encoder import TextConditioner
from ldm.components.text_time import TEXT_TIME, is_text_time, pooled_width
from ldm.core.atomic import read_json_mapping
from ldm.core.errors import LdmError, first_line
from ldm.core.layout import MODEL_CONFIG, SCHEDULER, UNET, VAE
from ldm.sampling.lora import BaseModel, unet_fingerprint
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.inpainting import inpainting_channels


@dataclass(frozen=True)
class Sources:
    """Where each part of the engine comes from: local folders, hub ids fetched (None: not pretrained)."""

    vae: Path | str
    text_encoder: Path | str
    unet: Path | None  # the UNet's own folder
    unet_name: str | None  # as the config names it (for messages and a LoRA's note)
    pipeline: Path | None  # the `pretrained:` pipeline, when there is one


def resolve_sources(cfg: Config) -> Sources:
    """The folders the config's parts load from, each override taking precedence over `pretrained:`."""
    pipeline = local_folder(cfg.pretrained) if cfg.pretrained else None
    vae = cfg.vae or model_folder(pipeline, VAE)
    text_encoder = cfg.text_encoder or pipeline
    unet = model_folder(local_folder(cfg.unet_source), UNET) if cfg.unet_source else None
    return Sources(vae, text_encoder, unet, _name(cfg.unet_source), pipeline)


def pipeline_sources(path_or_hub_id: str) -> Sources:
    """Every part from one pipeline folder or hub id (a distillation's teacher)."""
    pipeline = local_folder(path_or_hub_id)
    return Sources(model_folder(pipeline, VAE), pipeline, model_folder(pipeline, UNET), _name(path_or_hub_id),
                   pipeline)


def _name(path_or_hub_id: str | None) -> str | None:
    """A local folder as its absolute path (a relative one means nothing elsewhere), a hub id as is."""
    if path_or_hub_id is None or not Path(path_or_hub_id).expanduser().is_dir():
        return path_or_hub_id
    return str(Path(path_or_hub_id).expanduser().resolve())


def wants_text_time(cfg: Config, sources: Sources) -> bool:
    """Whether the UNet is SDXL-style (text_time): the pretrained one's config says, else `unet:`."""
    if sources.unet is not None:
        return read_json_mapping(sources.unet / MODEL_CONFIG).get("addition_embed_type") == TEXT_TIME
    return cfg.unet.addition_embed_type == TEXT_TIME


def load_unet(folder: Path) -> UNet2DConditionModel:
    try:
        return UNet2DConditionModel.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise LdmError(f"cannot load a UNet2DConditionModel from {folder}: {first_line(err)}") from None


def check_unet_fits(unet: UNet2DConditionModel, sources: Sources, autoencoder: FrozenAutoencoder,
                    conditioner: TextConditioner, inpainting: bool = False) -> None:
    """A pretrained UNet must take the autoencoder's latents and the text encoder's embeddings: as
    many input channels as latent channels, or (`inpainting`) the inpainting layout's 2C+1 too."""
    channels, inputs = autoencoder.latent_channels, unet.config.in_channels
    if inputs == inpainting_channels(channels) and not inpainting:
        raise LdmError(f"the UNet of {sources.unet_name} is an inpainting UNet ({inputs} input channels: latents, "
                       "mask and masked image): set `inpainting:` (e.g. inpainting={}) to fine-tune it as one")
    if unet.config.out_channels != channels or inputs not in (channels, inpainting_channels(channels)):
        raise LdmError(f"the UNet of {sources.unet_name} takes {inputs} latent channels, "
                       f"but the autoencoder of {sources.vae} makes {channels}")
    if unet.config.cross_attention_dim != conditioner.hidden_size:
        raise LdmError(f"the UNet of {sources.unet_name} attends to text embeddings of width "
                       f"{unet.config.cross_attention_dim}, but the text encoder of {sources.text_encoder} "
                       f"makes {conditioner.hidden_size}")
    if is_text_time(unet) and pooled_width(unet) != conditioner.pooled_size:
        raise LdmError(f"the UNet of {sources.unet_name} takes a pooled text embedding of width {pooled_width(unet)}, "
                       f"but the last text encoder of {sources.text_encoder} projects to {conditioner.pooled_size}")


def pipeline_noise_scheduler(pipeline: Path) -> DDPMScheduler:
    """The pipeline's schedule as the training DDPMScheduler (clip_sample off: latents are unbounded)."""
    config = DDPMScheduler.load_config(pipeline, subfolder=SCHEDULER)
    return DDPMScheduler.from_config(config, clip_sample=False)


def base_model(sources: Sources) -> BaseModel:
    """The note a LoRA run exports: the UNet it trains on, by name and weights."""
    return BaseModel(name=sources.unet_name, unet_sha256=unet_fingerprint(sources.unet))
