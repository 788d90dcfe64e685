"""Tiny, randomly initialised models for tests: fast to build (well under a second), seeded.

    path = make_tiny_pipeline(tmp_path, kind="kl")     # tmp_path/pipeline, written by export_pipeline
    pipe = load_pipeline(path)

The sizes are the smallest that diffusers accepts: 16 px images, f=2 (8x8 latents, 4 channels),
a 2-layer CLIP text encoder of width 32 with a BPE learned from shapes captions, and a UNet whose
cross-attention width is the text encoder's.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, VQModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ldm.data.shapes.generator import make_example
from ldm.sampling.pipeline_io import export_pipeline
from ldm.stages.clip.tokenizer import train_tokenizer

IMAGE_SIZE = 16
LATENT_CHANNELS = 4
TEXT_WIDTH = 32
VOCAB_SIZE = 600
NUM_CAPTIONS = 64
SEED = 0


def shapes_captions(n: int = NUM_CAPTIONS, seed: int = SEED) -> list[str]:
    rng = random.Random(seed)
    return [make_example(rng, IMAGE_SIZE, held_out=False)[1]["text"] for _ in range(n)]


def _autoencoder_blocks(factor: int) -> dict:
    levels = {2: 2, 4: 3}[factor]  # f = 2 ** (levels - 1)
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels,
                block_out_channels=(8, 16, 16)[:levels], layers_per_block=1, norm_num_groups=8,
                sample_size=IMAGE_SIZE)


def tiny_kl(factor: int = 2, seed: int = SEED) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(latent_channels=LATENT_CHANNELS, **_autoencoder_blocks(factor)).eval()


def tiny_vq(factor: int = 2, seed: int = SEED) -> VQModel:
    torch.manual_seed(seed)
    return VQModel(latent_channels=LATENT_CHANNELS, num_vq_embeddings=32, vq_embed_dim=LATENT_CHANNELS,
                   scaling_factor=1.0, **_autoencoder_blocks(factor)).eval()


def tiny_tokenizer() -> CLIPTokenizer:
    return train_tokenizer(shapes_captions(), VOCAB_SIZE)


def tiny_text_encoder(tokenizer: CLIPTokenizer, seed: int = SEED) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=tokenizer.model_max_length,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config).eval()


def tiny_unet(factor: int = 2, seed: int = SEED) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // factor, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8,
    ).eval()


def tiny_scheduler() -> DDPMScheduler:
    """The training scheduler as the diffusion stage would save it (Stable Diffusion's betas)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, steps_offset=1)


def tiny_components(kind: str = "kl", factor: int = 2, seed: int = SEED) -> dict:
    """vae, text_encoder, tokenizer, unet, scheduler: the keyword arguments of export_pipeline."""
    tokenizer = tiny_tokenizer()
    vae = {"kl": tiny_kl, "vq": tiny_vq}[kind](factor, seed)
    return dict(vae=vae, text_encoder=tiny_text_encoder(tokenizer, seed), tokenizer=tokenizer,
                unet=tiny_unet(factor, seed), scheduler=tiny_scheduler())


def make_tiny_pipeline(tmp_path: str | Path, kind: str = "kl", factor: int = 2, seed: int = SEED,
                       name: str = "pipeline") -> Path:
    """Export a tiny pipeline to tmp_path/name and return that path."""
    return export_pipeline(Path(tmp_path) / name, **tiny_components(kind, factor, seed))
