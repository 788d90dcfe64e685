"""The names of what a run writes, and telling a local folder from a hub id.

All stages of one model share a run folder (RUN, the config's `run_dir`):

    RUN/vae/            stage 1 export: diffusers AutoencoderKL or VQModel
    RUN/text_encoder/   stage 1b exports: the CLIP text encoder and its tokenizer (what stage 2 reads),
    RUN/tokenizer/
    RUN/clip/           and the whole CLIP with its processor (CLIP score, walk metrics)
    RUN/pipeline/       stage 2 export: what generate, animate and evaluate read
    RUN/lora/           stage 2 export of a LoRA run instead: the adapters and a note of their base
    RUN/<stage>/        a stage's checkpoints/, logs, loss plot and grids; the CLIP stage's is
                        RUN/clip_training/, because RUN/clip is its export
"""

from __future__ import annotations

import re

VAE = "vae"
TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"
CLIP = "clip"
PIPELINE = "pipeline"
LORA = "lora"
# The parts of a diffusers pipeline folder (RUN/pipeline or a Stable Diffusion folder).
UNET = "unet"
SCHEDULER = "scheduler"
CLIP_TRAINING = "clip_training"
CHECKPOINTS = "checkpoints"
LOSS_PLOT = "loss.png"  # in RUN/<stage>/, drawn from the CSV log at the end of training
METRICS_CSV = "csv/metrics.csv"  # in RUN/<stage>/: Lightning's CSVLogger output

# The files diffusers' save_pretrained writes for a model (its own constants, spelled here so that
# looking into a folder does not import diffusers, which takes seconds; tests/test_packaging.py
# checks they are still diffusers').
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "diffusion_pytorch_model.safetensors"
MODEL_WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"

# "name" or "owner/name" of the Hugging Face hub; a local path that does not exist must not be
# mistaken for one, so a leading "." (./x, ../x) never is.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith(".")
