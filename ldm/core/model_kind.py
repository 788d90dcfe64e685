"""What kind of model a folder holds, read from its configs before any loader runs, so that a model
ldm cannot use yet is refused in one line that says what it is, instead of failing deep inside a
loader (an SDXL pipeline once ended `ldm generate` in "TypeError: argument of type 'NoneType' is not
iterable").

ldm takes the Stable Diffusion 1.x/2.x layout (one CLIP text encoder, a UNet2DConditionModel with
as many input channels as latent channels), the SDXL base layout (`StableDiffusionXLPipeline`: two
text encoders, a text_time UNet with size conditioning) and its own exports (KL and VQ). Read here:
the pipeline class in model_index.json and its components, and the UNet's config.
"""

from __future__ import annotations

from pathlib import Path

from ldm.core.atomic import read_json_mapping
from ldm.core.errors import LdmError
from ldm.core.layout import MODEL_CONFIG, MODEL_INDEX, UNET

TAKES = ("ldm takes Stable Diffusion 1.x/2.x-style pipelines (one CLIP text encoder, a text-conditioned "
         "UNet), SDXL base pipelines (StableDiffusionXLPipeline) and its own exports")
SDXL_PIPELINE = "StableDiffusionXLPipeline"  # the SDXL layout ldm takes (the base model's)

# model_index.json classes, by a part of their name -> what the folder is
PIPELINE_KINDS = [
    ("XLImg2Img", "an SDXL refiner or image-to-image pipeline (aesthetic-score conditioning)"),
    ("Inpaint", "an inpainting pipeline (a 9-channel UNet that also takes a mask)"),
    ("ControlNet", "a ControlNet pipeline"),
    ("Video", "a video pipeline"),
    ("Flux", "a Flux pipeline (a transformer instead of a UNet)"),
    ("StableDiffusion3", "a Stable Diffusion 3 pipeline (a transformer instead of a UNet)"),
    ("PixArt", "a PixArt pipeline (a transformer instead of a UNet)"),
    ("Kandinsky", "a Kandinsky pipeline"),
    ("IF", "a DeepFloyd IF pipeline (pixel space, T5 text encoder)"),
    ("XL", "an SDXL pipeline other than the base text-to-image layout"),
]


def unsupported_kind(folder: str | Path) -> str | None:
    """What `folder` (a pipeline folder or one model's) is, when ldm cannot use it; None when it can
    or when its configs do not say (the loaders then say what is missing)."""
    folder = Path(folder)
    index = read_json_mapping(folder / MODEL_INDEX)
    if index:
        name = str(index.get("_class_name", ""))
        if index.get("requires_aesthetics_score"):
            return f"an SDXL refiner (aesthetic-score conditioning), {name}"
        for part, what in PIPELINE_KINDS:
            if part in name and name != SDXL_PIPELINE:
                return f"{what}, {name}"
        if "transformer" in index:
            return f"a pipeline with a transformer instead of a UNet ({name})"
        if "text_encoder_2" in index and name != SDXL_PIPELINE:
            return f"a pipeline with two text encoders ({name})"
    unet_config = folder / UNET / MODEL_CONFIG if (folder / UNET).is_dir() else folder / MODEL_CONFIG
    return _unet_kind(read_json_mapping(unet_config))


def _unet_kind(config: dict) -> str | None:
    if not config:
        return None
    name = config.get("_class_name")
    if name == "ControlNetModel":
        return "a ControlNet model"
    if name != "UNet2DConditionModel":
        return None  # another model's folder (an autoencoder, a text encoder): not a UNet question
    if config.get("in_channels") == 9:
        return "an inpainting UNet (9 input channels: latents, mask and masked image)"
    return None


def check_supported(folder: str | Path) -> Path:
    """`folder`, or an LdmError that says what it is and what ldm takes."""
    what = unsupported_kind(folder)
    if what is not None:
        raise LdmError(f"{folder} is {what}: {TAKES}; this kind is not supported yet")
    return Path(folder)

