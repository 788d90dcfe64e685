"""What kind of model a folder holds, read from its configs before any loader runs, so that a model
ldm cannot use yet is refused in one line that says what it is, instead of failing deep inside a
loader (an SDXL pipeline once ended `ldm generate` in "TypeError: argument of type 'NoneType' is not
iterable").

ldm takes the Stable Diffusion 1.x/2.x layout (one CLIP text encoder, a UNet2DConditionModel with
as many input channels as latent channels), the SDXL base layout (`StableDiffusionXLPipeline`: two
text encoders, a text_time UNet with size conditioning) and its own exports (KL and VQ), and the
inpainting layout of SD 1.x/2.x and of its own exports (`StableDiffusionInpaintPipeline`'s: a UNet of
2C+1 input channels, the noisy latents, the mask and the masked image's latents; ldm's `inpainting:`
exports and diffusers' SD-inpainting folders). An inpainting model only repaints the masked part of
an image, so the commands that make images from text alone refuse it in one line
(`refuse_inpainting`). Read here: the pipeline class in model_index.json and its components, and the
UNet's config.
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
    ("XLInpaint", "an SDXL inpainting pipeline (ldm inpaints with the SD 1.x/2.x layout)"),
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
    return _unet_kind(unet_config(folder))


def _unet_kind(config: dict) -> str | None:
    if not config:
        return None
    name = config.get("_class_name")
    if name == "ControlNetModel":
        return "a ControlNet model"
    if name != "UNet2DConditionModel":
        return None  # another model's folder (an autoencoder, a text encoder): not a UNet question
    inputs, outputs = config.get("in_channels"), config.get("out_channels")
    if config.get("addition_embed_type") == "text_time" and is_inpainting_unet(config):
        return "an SDXL inpainting UNet (ldm inpaints with the SD 1.x/2.x layout)"
    if inputs is not None and outputs is not None and inputs not in (outputs, 2 * outputs + 1):
        return (f"a UNet of {inputs} input channels for {outputs} latent channels (neither text-to-image, "
                f"{outputs}, nor inpainting, {2 * outputs + 1}: e.g. a depth- or image-conditioned model)")
    return None


def is_inpainting_unet(config) -> bool:
    """Whether a UNet config is the inpainting layout: 2C+1 input channels for C latent channels."""
    return config.get("in_channels") == 2 * config.get("out_channels", 0) + 1


def unet_config(folder: str | Path) -> dict:
    """The UNet config of a pipeline folder or of a UNet's own folder ({} when there is none)."""
    folder = Path(folder)
    return read_json_mapping(folder / UNET / MODEL_CONFIG if (folder / UNET).is_dir() else folder / MODEL_CONFIG)


def is_inpainting(folder: str | Path) -> bool:
    """Whether `folder` (a pipeline or a UNet folder) holds an inpainting UNet, read from its config."""
    config = unet_config(folder)
    return config.get("_class_name") == "UNet2DConditionModel" and is_inpainting_unet(config)


def refuse_inpainting(folder: str | Path, cannot: str) -> None:
    """An LdmError when `folder` is an inpainting model, saying what it does and that it `cannot` ..."""
    if is_inpainting(folder):
        raise LdmError(f"{folder} is an inpainting model (its UNet also takes a mask and the masked image): it "
                       f"repaints the masked part of an image (ldm generate --init-image IMG --mask MASK, "
                       f"ldm evaluate inpainting) and cannot {cannot}")


def check_supported(folder: str | Path) -> Path:
    """`folder`, or an LdmError that says what it is and what ldm takes."""
    what = unsupported_kind(folder)
    if what is not None:
        raise LdmError(f"{folder} is {what}: {TAKES}; this kind is not supported yet")
    return Path(folder)

