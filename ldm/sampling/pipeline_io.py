"""RUN/pipeline on disk: export it whole or not at all, check it, load it.

A pipeline folder is what `save_pretrained` writes (model_index.json plus one folder per component,
weights in safetensors). With a KL autoencoder the folder is written by
`diffusers.StableDiffusionPipeline` itself (no safety checker), so it also loads in plain diffusers:

    StableDiffusionPipeline.from_pretrained("runs/shapes/pipeline", safety_checker=None)

An SDXL-style UNet (text_time) is written by `diffusers.StableDiffusionXLPipeline` and loads in it
(and here as `LatentDiffusionXLPipeline`). With a VQ autoencoder, which Stable Diffusion's class
cannot take, it is written by `LatentDiffusionPipeline` and loads through it (or `load_pipeline`). A
KL inpainting model of a 4-channel autoencoder (a UNet of 9 input channels, stage 2's `inpainting:`)
is written by `StableDiffusionInpaintPipeline`, and loads in it as in `load_pipeline` (diffusers' class
runs 9-channel inpainting UNets only: one of another autoencoder's 2C+1 channels is written and loaded
as a VQ one is):

    StableDiffusionInpaintPipeline.from_pretrained("runs/shapes-inpaint/pipeline", safety_checker=None)

`load_pipeline(..., vae=FOLDER)` decodes with another autoencoder, such as a decoder fine-tuned with
`train.decoder_only` (`ldm generate/animate --vae`), the way diffusers takes
`from_pretrained(base, vae=...)`. `check_autoencoder_swap` first makes sure it reads and writes the
same latents.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import SafetensorError, safe_open
from transformers import CLIPTokenizer

from ldm.components.autoencoder import AUTOENCODER_CLASSES, Autoencoder, load_vae
from ldm.components.pretrained import weight_files
from ldm.components.prompt_tokens import check_prompt_lengths
from ldm.components.text_time import is_text_time
from ldm.core.atomic import atomic_folder, read_json_mapping
from ldm.core.errors import LdmError, first_line
from ldm.core.layout import (
    MODEL_CONFIG,
    MODEL_INDEX,
    MODEL_WEIGHTS,
    SCHEDULER,
    TEXT_ENCODER,
    TEXT_ENCODER_2,
    TOKENIZER,
    TOKENIZER_2,
    UNET,
    VAE,
)
from ldm.core.model_kind import check_supported, is_inpainting_unet, refuse_inpainting
from ldm.core.trust import check_no_code
from ldm.sampling.embeddings import check_embeddings, load_embeddings
from ldm.sampling.lora import LoraChoice, load_loras
from ldm.sampling.pipeline import LatentDiffusionPipeline
from ldm.sampling.pipeline_xl import LatentDiffusionXLPipeline

# The files `save_pretrained` writes for each component; a folder missing one cannot load.
REQUIRED_FILES = (
    f"{UNET}/{MODEL_CONFIG}",
    f"{UNET}/{MODEL_WEIGHTS}",
    f"{VAE}/{MODEL_CONFIG}",
    f"{VAE}/{MODEL_WEIGHTS}",
    f"{TEXT_ENCODER}/{MODEL_CONFIG}",
    f"{TEXT_ENCODER}/model.safetensors",  # transformers' name for its weights
    f"{TOKENIZER}/tokenizer_config.json",
    f"{SCHEDULER}/scheduler_config.json",
)
# An SDXL folder's second text encoder and tokenizer (its first ones may be absent)
SDXL_FILES = (f"{TEXT_ENCODER_2}/{MODEL_CONFIG}", f"{TEXT_ENCODER_2}/model.safetensors",
              f"{TOKENIZER_2}/tokenizer_config.json")
# What an autoencoder must share with the one a UNet was trained on to read and write its latents.
LATENT_SETTINGS = ("_class_name", "latent_channels", "scaling_factor", "shift_factor")
# The weights that make the latents (the encoder side): a decoder-only fine-tune leaves them as they were.
ENCODER_PREFIXES = ("encoder.", "quant_conv.", "quantize.")
# The windows a prompt may take (ldm.components.prompt_tokens), kept in model_index.json as a private
# key: diffusers drops "_" keys when it builds a pipeline from the file, so plain diffusers loads the
# folder as before (its pipelines encode one window only: long prompts need ldm generate).
PROMPT_CHUNKS = "_prompt_chunks"
SD_INPAINTING_CHANNELS = 9  # the only inpainting UNet StableDiffusionInpaintPipeline runs (4 latent channels)
# Scheduler settings that suit latents (which are not bounded to [-1, 1]); Stable Diffusion's
# loader rewrites them to these values anyway, so both kinds of export store them the same way.
LATENT_SCHEDULER_SETTINGS = {"steps_offset": 1, "clip_sample": False}


def export_pipeline(out_dir: str | Path, vae: Autoencoder, text_encoder, tokenizer, unet,
                    scheduler, prompt_chunks: int = 1, text_encoder_2=None, tokenizer_2=None) -> Path:
    """Write RUN/pipeline (safetensors), replacing a previous export only once the new one is whole.
    `prompt_chunks` above 1 (a model trained on long captions) is noted in model_index.json
    (`PROMPT_CHUNKS`), whence `load_pipeline` takes it. An SDXL-style UNet (text_time) is written by
    diffusers' StableDiffusionXLPipeline, with `text_encoder_2` (and `text_encoder`, which may be None)."""
    settings = {key: value for key, value in LATENT_SCHEDULER_SETTINGS.items() if key in scheduler.config}
    scheduler = type(scheduler).from_config(scheduler.config, **settings)  # a copy: the caller's is kept
    if is_text_time(unet):
        if not isinstance(vae, AutoencoderKL):
            raise LdmError("an SDXL-style (text_time) pipeline needs a KL autoencoder (StableDiffusionXLPipeline "
                           "takes no VQ one)")
        # force_zeros_for_empty_prompt: the unconditional input is zeros, as this project's SDXL-style
        # caption dropout trains it (ldm.components.dual_text_encoder); no watermarker (a pip extra).
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, unet=unet,
                                         scheduler=scheduler, force_zeros_for_empty_prompt=True,
                                         add_watermarker=False)
    elif isinstance(vae, AutoencoderKL) and unet.config.in_channels in (unet.config.out_channels,
                                                                        SD_INPAINTING_CHANNELS):
        # diffusers' class for the UNet's layout: the one its users load such a folder with
        kind = StableDiffusionInpaintPipeline if is_inpainting_unet(unet.config) else StableDiffusionPipeline
        pipe = kind(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = LatentDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler)
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if prompt_chunks > 1:
            index = json.loads((tmp / MODEL_INDEX).read_text())
            (tmp / MODEL_INDEX).write_text(json.dumps({**index, PROMPT_CHUNKS: prompt_chunks}, indent=2))
    return out_dir


def prompt_chunks_of(path: str | Path) -> int:
    """The windows of 75 tokens a pipeline's prompts may take, as it was trained (1 when not noted)."""
    return int(json.loads((Path(path) / MODEL_INDEX).read_text()).get(PROMPT_CHUNKS, 1))


def is_sdxl_folder(path: str | Path) -> bool:
    """Whether a pipeline folder has SDXL's layout (a second text encoder), read from model_index.json."""
    return TEXT_ENCODER_2 in read_json_mapping(Path(path) / MODEL_INDEX)


def required_files(path: Path) -> tuple[str, ...]:
    """The files a pipeline folder of its layout cannot load without (an SDXL one's first text
    encoder is optional, as in diffusers)."""
    index = read_json_mapping(path / MODEL_INDEX)
    if TEXT_ENCODER_2 not in index:  # not the SDXL layout (`is_sdxl_folder`)
        return REQUIRED_FILES
    first = [name for name in (TEXT_ENCODER, TOKENIZER) if (index.get(name) or [None])[0] is None]
    return tuple(file for file in REQUIRED_FILES if file.split("/")[0] not in first) + SDXL_FILES


def check_pipeline_folder(path: str | Path, text_to_image: str | None = None) -> Path:
    """The folder, or an LdmError naming the first missing part. Reads no weights. `text_to_image`:
    what the caller does with it that an inpainting model cannot (None: an inpainting model will do)."""
    path = check_no_code(path)
    if not path.is_dir():
        raise LdmError(f"pipeline folder not found: {path} (train the diffusion stage first; it "
                       "exports RUN/pipeline)")
    check_supported(path)  # an SDXL refiner, ControlNet, ... folder is named before a missing part is
    if text_to_image is not None:
        refuse_inpainting(path, text_to_image)
    for part in (MODEL_INDEX, *required_files(path)):
        if not (path / part).is_file():
            raise LdmError(f"{path} is not a complete pipeline: {part} is missing")
    return path


def scheduler_config(path: str | Path) -> dict:
    """RUN/pipeline's scheduler config (what its samplers are built from), read without loading anything."""
    return json.loads((Path(path) / SCHEDULER / "scheduler_config.json").read_text())


def vae_factor(path: str | Path) -> int:
    """The downsampling factor of RUN/pipeline's autoencoder, read from its config without loading it."""
    return autoencoder_factor(Path(path) / VAE)


def autoencoder_factor(folder: str | Path) -> int:
    """The downsampling factor of the autoencoder in `folder` (RUN/vae, RUN/pipeline/vae), from its config."""
    config = json.loads((Path(folder) / MODEL_CONFIG).read_text())
    if config.get("_class_name") not in AUTOENCODER_CLASSES:
        raise LdmError(f"{folder}/config.json: _class_name {config.get('_class_name')!r} is not one "
                       f"of {', '.join(AUTOENCODER_CLASSES)}")
    return 2 ** (len(config["block_out_channels"]) - 1)


def check_image_size(factor: int, height: int | None, width: int | None) -> None:
    """--height and --width (None: the model's) must be positive multiples of the autoencoder's
    downsampling `factor`, the only sizes a latent maps back to."""
    for name, side in (("height", height), ("width", width)):
        if side is not None and (side < factor or side % factor):
            raise LdmError(f"--{name} {side} is not a positive multiple of the autoencoder's "
                           f"downsampling factor {factor}")


def image_size(path: str | Path) -> int:
    """The side of the square images the pipeline's UNet was trained at (pixels), read from the configs
    without loading weights; the pipeline takes other sizes too (any multiple of `vae_factor`)."""
    unet = json.loads((Path(path) / UNET / MODEL_CONFIG).read_text())
    return unet["sample_size"] * vae_factor(path)


def is_distilled(path: str | Path) -> bool:
    """Whether RUN/pipeline's UNet takes the guidance scale as an input (a latent consistency
    model's, `ldm.stages.distill`), read from its config without loading it."""
    unet = json.loads((Path(path) / UNET / MODEL_CONFIG).read_text())
    return unet.get("time_cond_proj_dim") is not None


def check_autoencoder_swap(pipeline: str | Path, vae: str | Path) -> Path:
    """`vae`, checked to decode `pipeline`'s latents: the same kind, latent channels, downsampling
    factor, scaling and shift as the pipeline's own autoencoder, or an LdmError naming what differs.
    Reads configs only."""
    vae = check_no_code(vae)
    if not (vae / MODEL_CONFIG).is_file():
        raise LdmError(f"--vae {vae}: no autoencoder there (config.json is missing; RUN/vae is one)")
    own_folder = Path(pipeline) / VAE
    own, new = (json.loads((folder / MODEL_CONFIG).read_text()) for folder in (own_folder, vae))
    differ = [key for key in LATENT_SETTINGS if own.get(key) != new.get(key)]
    if autoencoder_factor(own_folder) != autoencoder_factor(vae):
        differ.append("downsampling factor")
    if differ:
        raise LdmError(f"--vae {vae} cannot decode the latents of {pipeline}: its {', '.join(differ)} "
                       f"{'differs' if len(differ) == 1 else 'differ'} from the pipeline's autoencoder")
    return vae


def warn_if_other_encoder(pipeline: str | Path, vae: str | Path) -> None:
    """Warn when `vae`'s encoder weights differ from the pipeline's: the UNet learnt the old encoder's
    latents, which a decoder trained with `train.decoder_only` keeps and another autoencoder may not."""
    own, new = _encoder_weights(Path(pipeline) / VAE), _encoder_weights(Path(vae))
    if own.keys() != new.keys() or not all(torch.equal(tensor, new[name]) for name, tensor in own.items()):
        warnings.warn(f"--vae {vae}: its encoder differs from {pipeline}'s, so its latents are not the ones "
                      "the UNet learnt (a decoder trained with train.decoder_only keeps them)", stacklevel=3)


def _encoder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The encoder-side tensors of an autoencoder folder, read from its safetensors files."""
    weights = {}
    for file in weight_files(folder):
        with safe_open(str(file), framework="pt") as f:
            weights.update({name: f.get_tensor(name) for name in f.keys() if name.startswith(ENCODER_PREFIXES)})
    return weights


def check_prompts(path: str | Path, prompts: list[str], prompt_chunks: int | None = None,
                  embeddings: list[str] = ()) -> int:
    """The windows a prompt may take (`prompt_chunks`, or the pipeline's own), after checking that
    the textual-inversion `embeddings` fit the pipeline and that every prompt fits the windows, or
    an LdmError. Reads the tokenizer and configs, no weights."""
    if is_sdxl_folder(path):
        if embeddings:  # diffusers loads an SDXL embedding as two files, one per text encoder
            raise LdmError(f"--embedding: {path} is an SDXL pipeline; textual-inversion embeddings are taken "
                           "for one-text-encoder (SD 1.x/2.x-style) pipelines only")
        tokenizer = CLIPTokenizer.from_pretrained(Path(path) / TOKENIZER_2)  # its first may be absent
    else:
        tokenizer = CLIPTokenizer.from_pretrained(Path(path) / TOKENIZER)
        width = json.loads((Path(path) / TEXT_ENCODER / MODEL_CONFIG).read_text())["hidden_size"]
        check_embeddings(list(embeddings), tokenizer, width)
    limit = prompt_chunks or prompt_chunks_of(path)
    check_prompt_lengths(tokenizer, prompts, limit)
    return limit


def load_pipeline(path: str | Path, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None,
                  loras: list[LoraChoice] = (), vae: str | Path | None = None,
                  prompt_chunks: int | None = None, embeddings: list[str] = ()) -> LatentDiffusionPipeline:
    """Load a checked RUN/pipeline as a `LatentDiffusionPipeline`, frozen, on `device`, with
    `loras` (checked beforehand with `ldm.sampling.lora.check_loras`) loaded at their scales,
    decoding with `vae` instead of its own autoencoder when given (checked here), prompts of up to
    `prompt_chunks` windows (None: as many as it was trained with) and the tokens of the
    textual-inversion `embeddings` files (checked beforehand with `check_prompts`)."""
    path = check_pipeline_folder(path)
    parts = {}
    if vae is not None:
        warn_if_other_encoder(path, check_autoencoder_swap(path, vae))
        parts["vae"] = load_vae(vae, dtype)
    pipeline_class = LatentDiffusionXLPipeline if is_sdxl_folder(path) else LatentDiffusionPipeline
    try:
        pipe = pipeline_class.from_pretrained(path, dtype=dtype, use_safetensors=True, **parts)
    except (OSError, ValueError, SafetensorError) as err:  # a truncated or corrupt weights file
        raise LdmError(f"cannot load the pipeline in {path}: {first_line(err)}") from None
    pipe.prompt_chunks = prompt_chunks or prompt_chunks_of(path)
    load_embeddings(pipe, list(embeddings))
    load_loras(pipe, list(loras))  # before moving: the adapters follow the models to the device
    for model in (pipe.vae, pipe.text_encoder, getattr(pipe, TEXT_ENCODER_2, None), pipe.unet):
        if model is not None:
            model.requires_grad_(False).eval()
    if device is not None:
        pipe.to(device)
    # Convolutions run faster on channels-last tensors on GPUs (tensor cores) and on CPUs in fp32
    # (oneDNN); the results are the same up to float rounding. Not for bf16/fp16 on a CPU, where it
    # measured slower (docs/benchmarks.md).
    if pipe.device.type != "cpu" or pipe.unet.dtype == torch.float32:
        for model in (pipe.vae, pipe.unet):
            model.to(memory_format=torch.channels_last)
    return pipe
