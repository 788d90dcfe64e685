"""Inpainting (`ldm generate --init-image IMG --mask MASK`): what is outside the mask is the init
image's own pixels, what is inside is repainted, for KL and VQ pipelines and every sampler, and bad
masks are one line before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import IMAGE_SIZE, shapes_examples

from ldm.apps.generate import GenerateOptions, generate
from ldm.cli import main
from ldm.core.errors import LdmError
from ldm.core.images import read_png_metadata
from ldm.sampling.inpaint import Inpainting, composite, feathered
from ldm.sampling.pipeline_io import load_pipeline
from ldm.sampling.samplers import SAMPLERS, make_sampler

PROMPT = "a blue square"
FAST = dict(steps=3, guidance=3.0)
HALF = IMAGE_SIZE // 2


def pixels(image_or_path) -> np.ndarray:
    image = image_or_path if isinstance(image_or_path, Image.Image) else Image.open(image_or_path)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def left_half_mask() -> Image.Image:
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    mask.paste(255, (0, 0, HALF, IMAGE_SIZE))
    return mask


@pytest.fixture
def files(tmp_path):
    """init.png (a shapes image), left.png (its left half white), white.png, black.png."""
    shapes_examples(1)[0][0].save(tmp_path / "init.png")
    left_half_mask().save(tmp_path / "left.png")
    Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 255).save(tmp_path / "white.png")
    Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0).save(tmp_path / "black.png")
    return tmp_path


def inpaint(pipeline, files, out, mask="left.png", **kwargs):
    options = GenerateOptions(str(pipeline), [PROMPT], out=str(files / out), init_image=str(files / "init.png"),
                              mask=str(files / mask) if mask else None, **{**FAST, **kwargs})
    return generate(options)


def kept(feather: int) -> np.ndarray:
    """Where the overlay takes the init image whole (beyond the feathered edge)."""
    return np.asarray(feathered(left_half_mask(), feather)) == 0


def test_outside_the_mask_is_the_init_image_and_inside_is_repainted(kl_pipeline_path, files):
    [path] = inpaint(kl_pipeline_path, files, "out", strength=1.0, feather=2)
    init, made = pixels(files / "init.png"), pixels(path)
    outside = kept(2)
    assert outside[:, HALF + 3 * 2:].all()  # the blend stays within ~2.5 feathers of the mask
    assert np.array_equal(made[outside], init[outside])
    assert np.abs(made[:, :HALF] - init[:, :HALF]).mean() > 10  # the masked half is new
    meta = read_png_metadata(path)
    assert meta["mask"] == str((files / "left.png").resolve()) and (meta["feather"], meta["repaint"]) == ("2", "0")


def test_an_all_white_mask_is_image_to_image(kl_pipeline_path, files, sampler="euler-ancestral"):
    """The blend keeps nothing and the overlay takes everything from the generated image; the
    inpainting draws from its own copies of the generators, so even a stochastic sampler's noise is
    image-to-image's."""
    [a] = inpaint(kl_pipeline_path, files, "white", mask="white.png", strength=0.7, sampler=sampler)
    [b] = inpaint(kl_pipeline_path, files, "img2img", mask=None, strength=0.7, sampler=sampler)
    assert np.array_equal(pixels(a), pixels(b))


def test_same_seed_same_bytes_with_repaint(kl_pipeline_path, files):
    first = inpaint(kl_pipeline_path, files, "a", n=2, seed=4, repaint=1, sampler="ddpm")
    again = inpaint(kl_pipeline_path, files, "b", n=2, seed=4, repaint=1, sampler="ddpm")
    alone = inpaint(kl_pipeline_path, files, "c", n=1, seed=5, repaint=1, sampler="ddpm")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert first[1].read_bytes() == alone[0].read_bytes()  # an image does not depend on its batch


def test_every_sampler_keeps_the_unmasked_latents_with_and_without_repaint(kl_pipeline_path):
    """Outside the mask the final latents are the init image's own (its posterior sample from the
    image's generator), whatever the sampler; RePaint's resampling changes the repainted half."""
    pipe = load_pipeline(kl_pipeline_path)
    pipe.set_progress_bar_config(disable=True)
    init, mask = shapes_examples(1)[0][0], left_half_mask()
    config = pipe.scheduler.config
    known = pipe.encode_image(init, 1, torch.Generator().manual_seed(0))
    right = (slice(None), slice(None), slice(None), slice(HALF // pipe.vae_scale_factor, None))
    for name in SAMPLERS:
        made = {}
        for repaint in (0, 1):
            pipe.scheduler = make_sampler(name, config)
            generator = [torch.Generator().manual_seed(0)]
            made[repaint] = pipe(PROMPT, num_inference_steps=2, guidance_scale=3.0, generator=generator, image=init,
                                 strength=1.0, output_type="latent",
                                 step_wrapper=Inpainting(pipe, init, mask, generator, repaint)).images
            assert torch.equal(made[repaint][right], known[right]), (name, repaint)
        assert not torch.equal(made[0], made[1]), name


def test_a_vq_pipeline_inpaints(vq_pipeline_path, files):
    [path] = inpaint(vq_pipeline_path, files, "vq", feather=0, repaint=1)
    init, made = pixels(files / "init.png"), pixels(path)
    assert np.array_equal(made[:, HALF:], init[:, HALF:])
    assert not np.array_equal(made[:, :HALF], init[:, :HALF])


def test_composite_with_no_feather_is_sharp():
    init = Image.new("RGB", (8, 8), (10, 20, 30))
    made = Image.new("RGB", (8, 8), (200, 100, 0))
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 3, 8))
    out = pixels(composite(made, init, mask, feather=0))
    assert (out[:, :3] == (200, 100, 0)).all() and (out[:, 3:] == (10, 20, 30)).all()


def test_a_mask_of_another_size_is_resized_with_a_warning(kl_pipeline_path, files):
    left_half_mask().resize((32, 32), Image.Resampling.NEAREST).save(files / "big.png")
    with pytest.warns(UserWarning, match="--mask .*big.png is 32x32 and --init-image is 16x16: the mask is resized"):
        [path] = inpaint(kl_pipeline_path, files, "big", mask="big.png", feather=0)
    assert np.array_equal(pixels(path)[:, HALF:], pixels(files / "init.png")[:, HALF:])


def test_from_the_command_line(kl_pipeline_path, files, capsys):
    main(["generate", str(kl_pipeline_path), PROMPT, "--init-image", str(files / "init.png"), "--mask",
          str(files / "left.png"), "--strength", "1", "--feather", "1", "--repaint", "1", "--steps", "3",
          "--sampler", "ddim", "--out", str(files / "cli")])
    made = files / "cli" / "0000-seed0.png"
    meta = read_png_metadata(made)
    assert (meta["feather"], meta["repaint"], meta["strength"]) == ("1", "1", "1.0")
    assert np.array_equal(pixels(made)[kept(1)], pixels(files / "init.png")[kept(1)])
    assert "wrote 1 images" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--init-image", "INIT", "--mask", "NOWHERE"], "--mask not found: .*nowhere.png"),
    (["--init-image", "INIT", "--mask", "NOT_AN_IMAGE"], "cannot read --mask: "),
    (["--mask", "LEFT"], "--mask needs --init-image"),
    (["--init-image", "INIT", "--mask", "BLACK"], "--mask .*black.png is all black: nothing to inpaint"),
    (["--init-image", "INIT", "--repaint", "2"], "--repaint needs --mask"),
    (["--init-image", "INIT", "--mask", "LEFT", "--feather", "-1"], "argument --feather: must be from 0 to 256"),
    (["--init-image", "INIT", "--mask", "LEFT", "--repaint", "1000"], "argument --repaint: must be from 0 to 100"),
], ids=["missing", "corrupt", "no-init-image", "all-black", "repaint-without-mask", "feather", "repaint"])
def test_a_bad_mask_is_one_line_before_loading(kl_pipeline_path, files, monkeypatch, capsys, args, message):
    def no_loading(*_, **__):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("ldm.sampling.pipeline_io.load_pipeline", no_loading)
    (files / "not_an_image.png").write_text("hello")
    names = {"INIT": "init.png", "NOWHERE": "nowhere.png", "NOT_AN_IMAGE": "not_an_image.png", "LEFT": "left.png",
             "BLACK": "black.png"}
    argv = ["generate", str(kl_pipeline_path), PROMPT, *[str(files / names[a]) if a in names else a for a in args],
            "--out", str(files / "out")]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and __import__("re").search(message, error), error
    assert not (files / "out").exists()


@pytest.mark.parametrize("bad, message", [
    (dict(feather=-1), "--feather must be at least 0, got -1"),
    (dict(repaint=101), "--repaint must be at most 100, got 101"),
])
def test_options_refuse_a_value_out_of_range(bad, message):
    with pytest.raises(LdmError) as err:
        GenerateOptions("PIPE", [PROMPT], **bad)
    assert str(err.value) == message
