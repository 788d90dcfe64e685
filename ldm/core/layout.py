"""The names of what a run writes, and telling a local folder from a hub id.

All stages of one model share a run folder (RUN, the config's `run_dir`):

    RUN/vae/            stage 1 export: diffusers AutoencoderKL or VQModel
    RUN/text_encoder/   stage 1b exports: the CLIP text encoder and its tokenizer (what stage 2 reads),
    RUN/tokenizer/
    RUN/clip/           and the whole CLIP with its processor (CLIP score, walk metrics)
    RUN/pipeline/       stage 2 export: what generate, animate and evaluate read
    RUN/lora/           stage 2 export of a LoRA run instead: the adapters and a note of their base
    RUN/samples/        what `ldm generate` writes by default (and the quickstart's sample grid)
    RUN/<stage>/        a stage's checkpoints/, config.yaml, logs, loss plot and grids; the CLIP
                        stage's is RUN/clip_training/, because RUN/clip is its export
    RUN/diffusion/cache/  the latent cache of the diffusion stage
"""

from __future__ import annotations

import re

VAE = "vae"
TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"
# SDXL's second text encoder and its tokenizer (a StableDiffusionXLPipeline folder's names)
TEXT_ENCODER_2 = "text_encoder_2"
TOKENIZER_2 = "tokenizer_2"
CLIP = "clip"
PIPELINE = "pipeline"
LORA = "lora"
EMBEDDINGS = "embeddings"  # a textual-inversion run's export: RUN/embeddings/learned_embeds.safetensors
LEARNED_EMBEDS = "learned_embeds.safetensors"  # the file name diffusers' textual-inversion script writes
SAMPLES = "samples"
# The parts of a diffusers pipeline folder (RUN/pipeline or a Stable Diffusion folder).
UNET = "unet"
SCHEDULER = "scheduler"
CLIP_TRAINING = "clip_training"
# In RUN/<stage>/:
CHECKPOINTS = "checkpoints"
STAGE_CONFIG = "config.yaml"  # the resolved config the stage trained with
LOSS_PLOT = "loss.png"  # drawn from the CSV log at the end of training
METRICS_CSV = "csv/metrics.csv"  # Lightning's CSVLogger output
RECONSTRUCTION_GRIDS = "reconstructions"  # the autoencoder's validation grids, one PNG a validation
SAMPLE_GRIDS = "samples"  # the diffusion stage's validation grids, one PNG a validation
LATENT_CACHE = "cache"  # the diffusion stage's latent cache (ldm.data.latent_cache)

# The files diffusers' save_pretrained writes for a pipeline and for a model (its own constants,
# spelled here so that looking into a folder does not import diffusers, which takes seconds;
# tests/test_packaging.py checks they are still diffusers'). A transformers model (the text encoder,
# the CLIP) has its config.json too.
MODEL_INDEX = "model_index.json"
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "diffusion_pytorch_model.safetensors"
MODEL_WEIGHTS_INDEX = "diffusion_pytorch_model.safetensors.index.json"

# "name" or "owner/name" of the Hugging Face hub; a local path that does not exist must not be
# mistaken for one, so a leading "." (./x, ../x) never is.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith(".")
