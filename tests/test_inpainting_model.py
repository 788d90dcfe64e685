"""The inpainting model (issue 32): stage 2's `inpainting:` trains SD-inpainting's layout (2C+1 input
channels) on random masks of each kind, from scratch or widening a pretrained UNet; its export loads in
plain diffusers' `StableDiffusionInpaintPipeline` and gives `ldm generate --init-image --mask`'s images;
the commands that make images from text alone refuse it in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
from diffusion_fixtures import diffusion_config
from PIL import Image
from tiny import IMAGE_SIZE, shapes_examples, tiny_autoencoder

from ldm.apps.evaluate.inpainting import REPLACEMENTS, make_case
from ldm.cli import main
from ldm.components.autoencoder import FrozenAutoencoder, encode
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.core.model_kind import is_inpainting, unsupported_kind
from ldm.data.random_masks import box_mask, random_kinds, random_masks, strokes_mask
from ldm.sampling.inpaint import composite
from ldm.sampling.samplers import make_sampler
from ldm.stages.diffusion.config import Config, InpaintingConfig
from ldm.stages.diffusion.inpainting import InpaintingInputs, widen_conv_in
from ldm.stages.diffusion.train import build_module

PROMPT = "a blue square"
HALF = IMAGE_SIZE // 2
STEPS, GUIDANCE, FEATHER = 3, 5.0, 2


# ---- random training masks -----------------------------------------------------------------------

def test_random_masks_are_of_each_kind_and_seeded():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        box = box_mask(16, 12, generator)
        rows, cols = box.nonzero(as_tuple=True)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert box[top:bottom, left:right].all() and box.sum() == (bottom - top) * (right - left)  # one rectangle
        assert 4 <= bottom - top <= 12 and 3 <= right - left <= 9  # sides 1/4 to 3/4 of the image's
        strokes = strokes_mask(16, 16, generator)
        assert set(strokes.unique().tolist()) <= {0.0, 1.0} and 0 < strokes.mean() < 1
    whole = random_masks(3, 8, 8, {"whole": 1.0}, generator)
    assert whole.shape == (3, 1, 8, 8) and whole.all()
    kinds = random_kinds(400, {"box": 0.5, "strokes": 0.5, "whole": 0.0}, generator)
    assert set(kinds) == {"box", "strokes"} and 150 < kinds.count("box") < 250
    shares = InpaintingConfig().shares
    assert torch.equal(random_masks(8, 8, 8, shares, torch.Generator().manual_seed(3)),
                       random_masks(8, 8, 8, shares, torch.Generator().manual_seed(3)))


def test_a_config_with_no_mask_kind_is_one_line(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    config = diffusion_config(tmp_path, run, inpainting={"box": 0, "strokes": 0, "whole": 0})
    with pytest.raises(LdmError, match="inpainting: at least one of box, strokes and whole"):
        build(Config, config)
    with pytest.raises(LdmError, match="inpainting.box"):
        build(Config, diffusion_config(tmp_path, run, inpainting={"box": 2}))


def test_masked_image_latents_are_the_images_own_outside_the_mask_and_gray_inside():
    autoencoder = FrozenAutoencoder(tiny_autoencoder())
    inputs = InpaintingInputs(InpaintingConfig(box=1, strokes=0, whole=0), autoencoder)
    latents = torch.randn(4, 4, 8, 8)
    extra = inputs(latents, torch.Generator().manual_seed(0))
    mask, masked = extra[:, :1], extra[:, 1:]
    assert extra.shape == (4, 5, 8, 8) and set(mask.unique().tolist()) == {0.0, 1.0}
    gray = encode(autoencoder.vae, torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert torch.equal(torch.where(mask > 0, latents, masked), latents)
    assert torch.allclose(torch.where(mask > 0, masked, gray.expand_as(latents)), gray.expand_as(latents))


def test_a_widened_unet_predicts_what_the_pretrained_one_did(kl_pipeline_path):
    unet = UNet2DConditionModel.from_pretrained(kl_pipeline_path / "unet")
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 5, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(latents, 10, text).sample
        widen_conv_in(unet, 9)
        after = unet(torch.cat([latents, torch.randn(2, 5, 8, 8)], dim=1), 10, text).sample
    assert unet.config.in_channels == 9 and torch.equal(before, after)


# ---- an inpainting run through `ldm train`, its export in plain diffusers ---------------------------

@pytest.fixture(scope="module")
def inpainting_run(tmp_path_factory, make_stage1_run):
    """A new inpainting model trained 4 steps through `ldm train` (validation grids on)."""
    root = tmp_path_factory.mktemp("inpainting")
    run = make_stage1_run(root)
    path = root / "inpainting.yaml"
    path.write_text(yaml.safe_dump(diffusion_config(root, run, inpainting={})))
    main(["train", str(path)])
    return run


@pytest.fixture
def files(tmp_path):
    """init.png (a shapes image) and left.png (its left half white)."""
    shapes_examples(1)[0][0].save(tmp_path / "init.png")
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    mask.paste(255, (0, 0, HALF, IMAGE_SIZE))
    mask.save(tmp_path / "left.png")
    return tmp_path


def pixels(image_or_path) -> np.ndarray:
    image = image_or_path if isinstance(image_or_path, Image.Image) else Image.open(image_or_path)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_run_trains_the_inpainting_layout_and_draws_its_grids(inpainting_run):
    pipeline = inpainting_run / "pipeline"
    assert json.loads((pipeline / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"
    assert json.loads((pipeline / "unet" / "config.json").read_text())["in_channels"] == 9
    assert is_inpainting(pipeline) and unsupported_kind(pipeline) is None
    assert sorted((inpainting_run / "diffusion" / "samples").glob("step*.png"))  # drawn with the whole image masked


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_the_export_loads_in_plain_diffusers_and_gives_ldm_generates_images(inpainting_run, files, strength):
    pipeline, out = inpainting_run / "pipeline", files / f"out{strength}"
    main(["generate", str(pipeline), PROMPT, "--init-image", str(files / "init.png"), "--mask",
          str(files / "left.png"), "--strength", str(strength), "--steps", str(STEPS), "--guidance", str(GUIDANCE),
          "--feather", str(FEATHER), "--sampler", "dpmsolver++", "--seed", "3", "--out", str(out)])
    ours = pixels(out / "0000-seed3.png")

    pipe = StableDiffusionInpaintPipeline.from_pretrained(pipeline, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_sampler("dpmsolver++", pipe.scheduler.config)
    init, mask = Image.open(files / "init.png").convert("RGB"), Image.open(files / "left.png")
    theirs = pipe(PROMPT, image=init, mask_image=mask, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  strength=strength, generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(ours - pixels(composite(theirs, init, mask, FEATHER))).max() <= 1
    assert np.array_equal(ours[:, HALF + 3 * FEATHER:], pixels(init)[:, HALF + 3 * FEATHER:])  # kept
    assert np.abs(ours[:, :HALF] - pixels(init)[:, :HALF]).mean() > 5  # repainted


def test_text_to_image_commands_refuse_an_inpainting_model_in_one_line(inpainting_run, files, capsys):
    pipeline = str(inpainting_run / "pipeline")
    for argv, cannot in (
        (["generate", pipeline, PROMPT, "--out", str(files / "a")], "cannot make images without a mask to repaint"),
        (["generate", pipeline, PROMPT, "--init-image", str(files / "init.png"), "--mask", str(files / "left.png"),
          "--repaint", "1", "--out", str(files / "b")], "is an inpainting model, which takes the mask itself"),
        (["evaluate", "diffusion", pipeline, "--data", str(files)], "cannot make images from prompts alone"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and cannot in err and len(err.splitlines()) == 1, err
    assert not (files / "a").exists() and not (files / "b").exists()


# ---- from pretrained UNets --------------------------------------------------------------------------

def finetune(tmp_path, pretrained, **overrides) -> dict:
    config = diffusion_config(tmp_path, tmp_path / "run", pretrained=str(pretrained), **overrides)
    for part in ("vae", "text_encoder", "unet"):
        config.pop(part)
    return config


def test_a_text_to_image_unet_is_widened_and_an_inpainting_one_taken_as_it_is(tmp_path, kl_pipeline_path,
                                                                              inpainting_run):
    base = UNet2DConditionModel.from_pretrained(kl_pipeline_path / "unet")
    widened = build_module(build(Config, finetune(tmp_path, kl_pipeline_path, inpainting={}))).unet
    assert widened.config.in_channels == 9
    assert torch.equal(widened.conv_in.weight[:, :4], base.conv_in.weight)
    assert not widened.conv_in.weight[:, 4:].any()  # the new channels start at zero

    inpainting = inpainting_run / "pipeline"
    trained = UNet2DConditionModel.from_pretrained(inpainting / "unet")
    again = build_module(build(Config, finetune(tmp_path, inpainting, inpainting={}))).unet
    assert torch.equal(again.conv_in.weight, trained.conv_in.weight)

    with pytest.raises(LdmError, match="is an inpainting UNet .*: set `inpainting:`"):
        build_module(build(Config, finetune(tmp_path, inpainting)))
    with pytest.raises(LdmError, match="inpainting with lora: needs an inpainting UNet to start from"):
        build_module(build(Config, finetune(tmp_path, kl_pipeline_path, inpainting={}, lora={"rank": 2})))
    lora = build_module(build(Config, finetune(tmp_path, inpainting, inpainting={}, lora={"rank": 2})))
    assert lora.unet.config.in_channels == 9


# ---- ldm evaluate inpainting ------------------------------------------------------------------------

def test_every_case_masks_its_whole_object():
    for index in range(len(REPLACEMENTS) * 2):
        init, mask, prompt, wanted, drawn = make_case(index, 32, seed=index)
        outside = np.asarray(mask) == 0
        image = pixels(init)
        background = image[outside][0]
        assert (image[outside] == background).all(), index  # nothing of the object outside the mask
        assert prompt == f"a {wanted['colour']} {wanted['shape']} {wanted['position']}"
        assert (wanted["colour"], wanted["shape"]) != (drawn["colour"], drawn["shape"])


@pytest.mark.parametrize("which", ["text-to-image", "inpainting"])
def test_evaluate_inpainting_through_the_command_line(kl_pipeline_path, inpainting_run, tmp_path, capsys, which):
    pipeline = kl_pipeline_path if which == "text-to-image" else inpainting_run / "pipeline"
    out, samples = tmp_path / "inpainting.json", tmp_path / "samples"
    main(["evaluate", "inpainting", str(pipeline), "--cases", "3", "--n", "2", "--steps", "2", "--feather", "0",
          "--samples", str(samples), "--out", str(out)])
    result = json.loads(out.read_text())
    metrics = {m["key"]: m["value"] for m in result["metrics"]}
    assert result["kind"] == "inpainting" and result["settings"]["cases"] == 3
    assert ("blending" in result["settings"]["inpainting"]) == (which == "text-to-image")
    assert metrics["psnr_outside_mask"] is None  # no feather: outside the mask, exactly the init image
    assert 5 < metrics["psnr_outside_mask_decoded"] < 100
    assert 0 <= metrics["inpaint_fidelity"] <= 100 and metrics["init_fidelity"] >= 60
    assert len(list(samples.glob("case*.png"))) == 6 and (samples / "grid.png").is_file()
    assert "Inpainting fidelity inside the mask" in capsys.readouterr().out


def test_evaluate_inpainting_with_a_feather_differs_only_near_the_edge(kl_pipeline_path):
    from ldm.apps.evaluate import evaluate_inpainting

    result = evaluate_inpainting(str(kl_pipeline_path), cases=2, n=1, steps=2, feather=1)
    metrics = {m.key: m.value for m in result.metrics}
    assert metrics["psnr_outside_mask"] > metrics["psnr_outside_mask_decoded"]


# ---- walks over a fixed image ---------------------------------------------------------------------

def walk_args(pipeline, files, out, *extra):
    return ["animate", str(pipeline), "--prompts", "a red circle", "a blue square", "--seeds", "1", "2",
            "--frames", "4", "--linear", "--steps", "2", "--init-image", str(files / "init.png"), "--mask",
            str(files / "left.png"), "--feather", str(FEATHER), "--out", str(out), *extra]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b) ** 2).mean() / 255 ** 2
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


@pytest.mark.parametrize("which", ["text-to-image", "inpainting"])
def test_a_masked_walk_keeps_its_fixed_region_and_resumes(kl_pipeline_path, inpainting_run, files, which):
    from ldm.apps.animate import video

    pipeline = kl_pipeline_path if which == "text-to-image" else inpainting_run / "pipeline"
    out = files / "walk"
    main(walk_args(pipeline, files, out))
    frames = video.read_frames(out / "frames", 4)
    init = pixels(files / "init.png")
    fixed = slice(HALF + 3 * FEATHER, None)  # right of the mask and its feathered band
    for frame in frames:
        assert psnr(frame[:, fixed], init[:, fixed]) >= 40
    assert not np.array_equal(frames[0][:, :HALF], frames[-1][:, :HALF])  # the masked part walks

    first = video.frame_path(out / "frames", 2).read_bytes()
    video.frame_path(out / "frames", 2).unlink()  # an interrupted render: one frame missing
    main(walk_args(pipeline, files, out))
    assert video.frame_path(out / "frames", 2).read_bytes() == first
    Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 255).save(files / "left.png")  # another mask: refused
    with pytest.raises(SystemExit):
        main(walk_args(pipeline, files, out))


def test_a_masked_walk_that_cannot_be_is_one_line(kl_pipeline_path, files, capsys):
    no_init = walk_args(kl_pipeline_path, files, files / "walk")
    del no_init[no_init.index("--init-image"):no_init.index("--init-image") + 2]
    for argv, message in ((walk_args(kl_pipeline_path, files, files / "walk", "--interpolation", "blend"),
                           "--mask takes --interpolation dissolve or slerp"),
                          (no_init, "--mask needs --init-image in a walk")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (files / "walk").exists()


def test_an_inpainting_model_walks_only_with_a_mask(inpainting_run, files, capsys):
    with pytest.raises(SystemExit):
        main(["animate", str(inpainting_run / "pipeline"), "--prompts", "a", "b", "--out", str(files / "w")])
    assert "cannot walk without a mask to repaint" in capsys.readouterr().err
