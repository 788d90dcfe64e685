"""Tiny, randomly initialised models for tests, built and exported by the functions `ldm train` uses,
so that a fixture is what a user's run exports, only small: fast to build (well under a second), seeded.

    path = make_tiny_pipeline(tmp_path, kind="kl")     # tmp_path/pipeline, as the diffusion stage writes it
    pipe = load_pipeline(path)

- the autoencoder: the autoencoder stage's `build_autoencoder`, its scaling factor measured on shapes
  images by `measure_latent_scale` with the default `latent_scale:` section, as its export does;
- the tokenizer: stage 1b's BPE (`train_tokenizer`) learned from shapes captions; the CLIP and the text
  encoder: stage 1b's `build_clip` and `text_config` (tests/diffusion_fixtures.py writes a stage-1 run
  with the autoencoder stage's `save_vae` and stage 1b's `export`);
- the UNet: the diffusion stage's `build_unet` on `TINY_UNET`, sized by the autoencoder and the text
  encoder; the pipeline carries `inference_scheduler` (DPM-Solver++) on the training schedule that
  `build_noise_scheduler` makes from the default `noise:` section, written by `export_pipeline`.

The sizes are the smallest that diffusers accepts: 16 px images, f=2 (8x8 latents, 4 channels),
a 2-layer CLIP text tower of width 32 and a 1-layer ViT of width 32, and a 2-level UNet whose
cross-attention width is the text encoder's.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ldm.components.autoencoder import Autoencoder, FrozenAutoencoder
from ldm.components.clip import ClipModel
from ldm.components.dual_text_encoder import TextTimeConditioner, text_components
from ldm.components.text_encoder import TextConditioner
from ldm.core.config import build
from ldm.core.images import to_tensor
from ldm.data.shapes.generator import make_example
from ldm.sampling.pipeline_io import export_pipeline
from ldm.sampling.samplers import inference_scheduler
from ldm.stages.autoencoder.config import LatentScaleConfig, ModelConfig
from ldm.stages.autoencoder.export import measure_latent_scale, set_latent_scale
from ldm.stages.autoencoder.module import build_autoencoder
from ldm.stages.clip.config import Config as ClipConfig
from ldm.stages.clip.module import build_clip, text_config
from ldm.stages.clip.tokenizer import train_tokenizer
from ldm.stages.diffusion.config import NoiseConfig, UNetConfig
from ldm.stages.diffusion.parts import build_noise_scheduler, build_unet

IMAGE_SIZE = 16
LATENT_CHANNELS = 4
VOCAB_SIZE = 600
NUM_CAPTIONS = 64  # shapes captions the tokenizer learns from
SCALE_IMAGES = 16  # shapes images the latent scale is measured on (a run measures on latent_scale.samples)
SEED = 0

# The `unet:` section of a tiny diffusion config, and the UNet of every tiny pipeline.
TINY_UNET = {"block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
             "norm_num_groups": 8}
# The `model:` section of a tiny CLIP-stage config (stage 1b); the pipelines' text encoder has its text tower's config.
TINY_CLIP = {"text": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64},
             "vision": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                        "patch_size": 4},
             "projection_dim": 16}


def shapes_examples(n: int, seed: int = SEED) -> list[tuple[Image.Image, str]]:
    """(image, caption) pairs of the shapes data at IMAGE_SIZE."""
    rng = random.Random(seed)
    examples = (make_example(rng, IMAGE_SIZE, held_out=False) for _ in range(n))
    return [(image, meta["text"]) for image, meta in examples]


def shapes_captions(n: int = NUM_CAPTIONS, seed: int = SEED) -> list[str]:
    return [caption for _, caption in shapes_examples(n, seed)]


def latent_scale(vae: Autoencoder) -> tuple[float, float | None]:
    """(scaling_factor, shift_factor) measured on shapes images, as the autoencoder stage's export
    measures them with the default `latent_scale:` section (`save_vae` takes them)."""
    cfg = LatentScaleConfig()
    pixels = torch.stack([to_tensor(image) for image, _ in shapes_examples(SCALE_IMAGES)])
    scale, mean = measure_latent_scale(vae, [{"pixel_values": pixels}], cfg.samples, cfg.shift)
    return scale, mean if cfg.shift else None


def tiny_autoencoder(kind: str = "kl", factor: int = 2, seed: int = SEED) -> Autoencoder:
    """A new KL or VQ autoencoder (f = `factor`) as the autoencoder stage exports it: its scale measured."""
    levels = {2: 2, 4: 3}[factor]  # f = 2 ** (levels - 1)
    model = ModelConfig(kind=kind, downsampling_factor=factor, channels=[8, 16, 16][:levels],
                        latent_channels=LATENT_CHANNELS, norm_num_groups=8, num_codes=32)
    torch.manual_seed(seed)
    vae = build_autoencoder(model, IMAGE_SIZE).eval()
    return set_latent_scale(vae, *latent_scale(vae))


def tiny_tokenizer() -> CLIPTokenizer:
    return train_tokenizer(shapes_captions(), VOCAB_SIZE)


def tiny_clip_config() -> ClipConfig:
    """The CLIP stage's config for the tiny towers (its run and data are not used: nothing trains)."""
    return build(ClipConfig, {"stage": "clip", "run_dir": "run", "model": TINY_CLIP,
                              "tokenizer": {"vocab_size": VOCAB_SIZE},
                              "data": {"source": "shapes", "resolution": IMAGE_SIZE}})


def tiny_clip(tokenizer: CLIPTokenizer, seed: int = SEED) -> ClipModel:
    """A new CLIP (ViT image tower) as stage 1b builds it, to export with `ldm.stages.clip.export.export`."""
    torch.manual_seed(seed)
    return build_clip(tiny_clip_config(), tokenizer).eval()


def tiny_text_encoder(tokenizer: CLIPTokenizer, seed: int = SEED) -> CLIPTextModel:
    """A new text encoder with the config stage 1b gives the text tower it exports as RUN/text_encoder."""
    torch.manual_seed(seed)
    return CLIPTextModel(text_config(tiny_clip_config(), tokenizer)).eval()


def tiny_unet(vae: Autoencoder, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
              seed: int = SEED) -> UNet2DConditionModel:
    """A new UNet as the diffusion stage builds it from TINY_UNET for this autoencoder and text encoder."""
    torch.manual_seed(seed)
    return build_unet(UNetConfig(**TINY_UNET), FrozenAutoencoder(vae), TextConditioner(tokenizer, text_encoder),
                      IMAGE_SIZE).eval()


def tiny_scheduler() -> DPMSolverMultistepScheduler:
    """The scheduler the diffusion stage exports: DPM-Solver++ on the default training schedule."""
    return inference_scheduler(build_noise_scheduler(NoiseConfig()))


def tiny_components(kind: str = "kl", factor: int = 2, seed: int = SEED) -> dict:
    """vae, text_encoder, tokenizer, unet, scheduler: the keyword arguments of export_pipeline, as the
    diffusion stage passes them."""
    tokenizer = tiny_tokenizer()
    vae = tiny_autoencoder(kind, factor, seed)
    text_encoder = tiny_text_encoder(tokenizer, seed)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                unet=tiny_unet(vae, text_encoder, tokenizer, seed), scheduler=tiny_scheduler())


def make_tiny_pipeline(tmp_path: str | Path, kind: str = "kl", factor: int = 2, seed: int = SEED,
                       name: str = "pipeline") -> Path:
    """Export a tiny pipeline to tmp_path/name, as `ldm train diffusion` exports RUN/pipeline, and return that path."""
    return export_pipeline(Path(tmp_path) / name, **tiny_components(kind, factor, seed))


# The `unet:` section of a tiny SDXL-style diffusion config: TINY_UNET with SDXL's added embedding.
TINY_SDXL_UNET = {**TINY_UNET, "addition_embed_type": "text_time", "addition_time_embed_dim": 8}


def tiny_projected_text_encoder(tokenizer: CLIPTokenizer, seed: int = SEED) -> CLIPTextModelWithProjection:
    """SDXL's second text encoder, tiny: the text tower's config with the CLIP's projection width."""
    torch.manual_seed(seed + 1)
    config = text_config(tiny_clip_config(), tokenizer)
    config.projection_dim = TINY_CLIP["projection_dim"]
    return CLIPTextModelWithProjection(config).eval()


def tiny_sdxl_components(seed: int = SEED, first_encoder: bool = True) -> dict:
    """export_pipeline's keyword arguments for a tiny SDXL pipeline: a KL autoencoder, a CLIPTextModel
    (or none) and a CLIPTextModelWithProjection, a text_time UNet sized by them, DPM-Solver++."""
    tokenizer = tiny_tokenizer()
    vae = tiny_autoencoder("kl", 2, seed)
    first = (tokenizer, tiny_text_encoder(tokenizer, seed)) if first_encoder else None
    second = (tokenizer, tiny_projected_text_encoder(tokenizer, seed))
    conditioner = TextTimeConditioner([first, second] if first else [second])
    torch.manual_seed(seed)
    unet = build_unet(UNetConfig(**TINY_SDXL_UNET), FrozenAutoencoder(vae), conditioner, IMAGE_SIZE).eval()
    return dict(vae=vae, unet=unet, scheduler=tiny_scheduler(), **text_components(conditioner))


def make_tiny_sdxl_pipeline(tmp_path: str | Path, seed: int = SEED, first_encoder: bool = True,
                            name: str = "sdxl") -> Path:
    """A tiny SDXL pipeline folder (StableDiffusionXLPipeline's layout, written by save_pretrained)."""
    return export_pipeline(Path(tmp_path) / name, **tiny_sdxl_components(seed, first_encoder))
