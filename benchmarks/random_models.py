"""Models of a config's sizes with random weights: a speed does not depend on the weights, so the speed
benchmarks need no trained run (and nothing is downloaded)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from benchmarks.harness import CONFIGS
from ldm.components.autoencoder import FrozenAutoencoder
from ldm.core import layout
from ldm.data.shapes.generator import make_example
from ldm.stages.autoencoder.module import build_autoencoder
from ldm.stages.clip.tokenizer import train_tokenizer
from ldm.stages.registry import load_config

TOKENS = 77  # CLIP's context length
CLIP_VOCAB = 49408
VIT_L_TEXT = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}  # SD 1.x's
PLACEHOLDERS = ["run_dir=/tmp/unused", "data.source=/tmp/unused"]  # configs need them; nothing is read


def shapes_captions(n: int) -> list[str]:
    """`n` captions of the shapes data (seed 0): what a random stage 1's tokenizer learns from."""
    rng = random.Random(0)
    return [make_example(rng, 32, False)[1]["text"] for _ in range(n)]


def autoencoder(config: str) -> tuple[FrozenAutoencoder, int]:
    """configs/autoencoder/`config`'s model, randomly initialised, and its resolution."""
    cfg = load_config(CONFIGS / "autoencoder" / config, PLACEHOLDERS)
    return FrozenAutoencoder(build_autoencoder(cfg.model, cfg.data.resolution)), cfg.data.resolution


def clip_text_sizes(config: str = "clip_shapes.yaml") -> dict:
    """The text tower sizes of configs/clip/`config`, as VIT_L_TEXT gives them."""
    text = load_config(CONFIGS / "clip" / config, PLACEHOLDERS).model.text
    return {name: getattr(text, name) for name in VIT_L_TEXT}


def text_encoder(text: dict, tokenizer: CLIPTokenizer | None = None) -> CLIPTextModel:
    """A CLIP text encoder of these sizes, for `tokenizer`'s ids (else CLIP's vocabulary and 77 tokens)."""
    ids = {}
    if tokenizer is not None:
        ids = {"vocab_size": len(tokenizer), "max_position_embeddings": tokenizer.model_max_length,
               "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    config = CLIPTextConfig(**{"vocab_size": CLIP_VOCAB, "max_position_embeddings": TOKENS, **ids},
                            hidden_size=text["hidden_size"], num_hidden_layers=text["num_layers"],
                            num_attention_heads=text["num_heads"], intermediate_size=text["intermediate_size"])
    return CLIPTextModel(config).eval().requires_grad_(False)


def stage1(run: Path, autoencoder_config: str, text: dict, captions: list[str], vocab_size: int = 1000) -> Path:
    """RUN/vae, RUN/text_encoder and RUN/tokenizer as stage 1 and 1b export them: the autoencoder of
    configs/autoencoder/`autoencoder_config` and a text encoder of sizes `text`, random (seed 0), the
    tokenizer learned from `captions`. A stage-2 config reads them with vae=RUN/vae text_encoder=RUN."""
    torch.manual_seed(0)
    frozen, _ = autoencoder(autoencoder_config)
    frozen.vae.save_pretrained(run / layout.VAE)
    tokenizer = train_tokenizer(captions, vocab_size)
    torch.manual_seed(0)
    text_encoder(text, tokenizer).save_pretrained(run / layout.TEXT_ENCODER)
    tokenizer.save_pretrained(run / layout.TOKENIZER)
    return run
