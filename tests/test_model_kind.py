"""A model folder of a kind ldm does not take yet is refused in one line that says what it is,
before any loader runs (ldm/core/model_kind.py): through generate, animate, evaluate and train."""

from __future__ import annotations

import json
import shutil

import pytest

from ldm.cli import main
from ldm.core.model_kind import is_inpainting, unsupported_kind


def variant(pipeline, tmp_path, name, index=None, unet=None):
    """The project's own tiny export, with its model_index.json or UNet config changed."""
    folder = tmp_path / name
    shutil.copytree(pipeline, folder)
    for path, changes in ((folder / "model_index.json", index), (folder / "unet" / "config.json", unet)):
        if changes:
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


KINDS = {
    # SDXL's base layout is supported (tests/test_sdxl.py); its refiner (aesthetic-score time ids) and
    # inpainting layout are not
    "sdxl-refiner": ({"_class_name": "StableDiffusionXLImg2ImgPipeline", "requires_aesthetics_score": True,
                      "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]},
                     {"addition_embed_type": "text_time"}, "is an SDXL refiner (aesthetic-score conditioning)"),
    "sdxl-inpainting": ({"_class_name": "StableDiffusionXLInpaintPipeline"}, None, "is an SDXL inpainting pipeline"),
    "sdxl-inpainting-unet": (None, {"addition_embed_type": "text_time", "in_channels": 9},
                             "is an SDXL inpainting UNet"),
    "depth-unet": (None, {"in_channels": 5}, "is a UNet of 5 input channels for 4 latent channels"),
    "transformer": ({"_class_name": "PixArtAlphaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]},
                    None, "is a PixArt pipeline (a transformer instead of a UNet)"),
}


def test_the_projects_own_exports_are_supported(kl_pipeline_path, vq_pipeline_path):
    assert unsupported_kind(kl_pipeline_path) is None and unsupported_kind(vq_pipeline_path) is None


def test_a_diffusers_inpainting_folder_is_taken_for_inpainting_only(kl_pipeline_path, tmp_path, capsys):
    """SD-inpainting's layout (StableDiffusionInpaintPipeline, a 9-channel UNet) is supported for
    inpainting (tests/test_inpainting_model.py); what needs text-to-image refuses it in one line."""
    folder = variant(kl_pipeline_path, tmp_path, "inpainting", {"_class_name": "StableDiffusionInpaintPipeline"},
                     {"in_channels": 9})
    assert unsupported_kind(folder) is None and is_inpainting(folder) and not is_inpainting(kl_pipeline_path)
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(folder), "a red circle", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert "is an inpainting model" in err and "cannot make images without a mask to repaint" in err


@pytest.mark.parametrize("kind", list(KINDS))
def test_generate_names_the_kind(kl_pipeline_path, tmp_path, capsys, kind):
    index, unet, message = KINDS[kind]
    folder = variant(kl_pipeline_path, tmp_path, kind, index, unet)
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(folder), "a red circle", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "ldm takes Stable Diffusion 1.x/2.x-style pipelines" in err and "SDXL base" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_animate_and_evaluate_name_an_sdxl_refiner_folder(kl_pipeline_path, tmp_path, capsys):
    index, unet, message = KINDS["sdxl-refiner"]
    folder = variant(kl_pipeline_path, tmp_path, "sdxl", index, unet)
    for command in (["animate", str(folder), "--prompts", "a", "b", "--out", str(tmp_path / "walk")],
                    ["evaluate", "diffusion", str(folder), "--data", str(tmp_path)]):
        with pytest.raises(SystemExit):
            main(command)
        assert message in capsys.readouterr().err


def test_train_names_an_sdxl_refiner_pretrained_folder(kl_pipeline_path, tmp_path, capsys):
    index, unet, message = KINDS["sdxl-refiner"]
    folder = variant(kl_pipeline_path, tmp_path, "sdxl", index, unet)
    with pytest.raises(SystemExit) as stop:
        main(["train", "diffusion/ldm_shapes.yaml", f"pretrained={folder}", "vae=null", "text_encoder=null",
              "noise=null", f"run_dir={tmp_path / 'run'}", f"data.source={tmp_path}"])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
