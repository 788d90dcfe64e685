"""Masked loss (issue 32): masks from alpha, files or a column, moved with their images through crops,
flips and buckets, kept by the latent cache (and in its key), weighting the stage-2 loss per latent
pixel; data.mask: none as before; bad values refused; a tiny masked run through `ldm train`."""

from __future__ import annotations

import dataclasses
import random
import warnings

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from diffusion_fixtures import diffusion_config
from image_kinds import MIXED_SIZES
from PIL import Image

from ldm.cli import main
from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.config import packaged_configs
from ldm.core.errors import LdmError
from ldm.data.check import check_data, format_report
from ldm.data.config import DataConfig
from ldm.data.datamodule import ImageCaptionDataModule, load_splits, make_sample
from ldm.data.decode import decode_image
from ldm.data.latent_datamodule import LatentCacheDataModule
from ldm.data.masks import mask_key, to_latent_grid
from ldm.data.sources import load_source
from ldm.stages.diffusion import module as diffusion_module
from ldm.stages.diffusion.config import NoiseConfig
from ldm.stages.diffusion.losses import DiffusionLoss
from ldm.stages.diffusion.parts import build_noise_scheduler

BLOCK = 4  # pixels of each square of the alpha pattern


def alpha_pattern(width: int, height: int, seed: int) -> np.ndarray:
    """Blocks of alpha 0, 128 and 255 at random: no symmetry, so a missed crop or flip shows."""
    blocks = np.random.default_rng(seed).choice(np.array([0, 128, 255], np.uint8),
                                                (-(-height // BLOCK), -(-width // BLOCK)))
    return np.kron(blocks, np.ones((BLOCK, BLOCK), np.uint8))[:height, :width]


def write_rgba_folder(folder, n: int, sizes=MIXED_SIZES, opaque: int = 0):
    """Caption files of `n` white images whose alpha is a block pattern: over a black background each
    pixel's gray level is its alpha, so an image and a mask that moved with it stay equal. The last
    `opaque` images are RGB (no alpha)."""
    folder.mkdir(parents=True)
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        white = np.full((height, width, 3), 255, np.uint8)
        if i < n - opaque:
            Image.fromarray(np.dstack([white, alpha_pattern(width, height, i)]), "RGBA").save(folder / f"{i:02d}.png")
        else:
            Image.fromarray(white).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("a red circle")
    return folder


def prediction_loss(loss: DiffusionLoss, prediction, latents, noise, t, weight=None):
    """(loss, its gradient with respect to the prediction)."""
    prediction = prediction.clone().requires_grad_(True)
    value = loss(prediction, latents, noise, t, weight)
    (grad,) = torch.autograd.grad(value, prediction)
    return value.detach(), grad


def test_a_zero_mask_where_two_images_differ_gives_them_the_same_loss_and_gradient():
    torch.manual_seed(0)
    scheduler = build_noise_scheduler(NoiseConfig(prediction_type="v_prediction"))  # targets read the latents
    loss = DiffusionLoss(scheduler, "v_prediction", snr_gamma=5.0)
    mask = torch.ones(2, 1, 16, 16)
    mask[:, :, 4:12, 2:10] = 0  # pixels, 2 per latent pixel: cells of the 8x8 latent grid
    weight = loss.mask_weights(to_latent_grid(mask, (8, 8)))
    latents = torch.randn(2, 4, 8, 8)
    other = latents.clone()
    other[:, :, 2:6, 1:5] = torch.randn(2, 4, 4, 4) * 5  # another image where the mask is 0
    noise, t, prediction = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 4, 8, 8)
    first, first_grad = prediction_loss(loss, prediction, latents, noise, t, weight)
    second, second_grad = prediction_loss(loss, prediction, other, noise, t, weight)
    assert torch.equal(first, second) and torch.equal(first_grad, second_grad)
    assert not first_grad[:, :, 2:6, 1:5].any() and first_grad.abs().sum() > 0
    unmasked = [prediction_loss(loss, prediction, x, noise, t)[0] for x in (latents, other)]
    assert not torch.equal(*unmasked)  # without the mask they differ

    # A network that sees each latent pixel alone (a 1x1 convolution): its weights' gradients agree too.
    conv = torch.nn.Conv2d(4, 4, 1)
    grads = []
    for x in (latents, other):
        conv.zero_grad()
        loss(conv(x), x, noise, t, weight).backward()
        grads.append(conv.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_the_weights_are_normalised_per_sample_and_an_empty_mask_trains_nothing():
    loss = DiffusionLoss(build_noise_scheduler(NoiseConfig()), "epsilon", snr_gamma=None, mask_floor=0.0)
    noise, latents, t = torch.zeros(3, 4, 8, 8), torch.zeros(3, 4, 8, 8), torch.tensor([5, 5, 5])
    prediction = torch.full((3, 4, 8, 8), 2.0)  # squared error 4 everywhere
    mask = torch.zeros(3, 1, 8, 8)
    mask[0, :, :2, :2] = 1  # a small subject
    mask[1] = 1  # the whole image
    value, grad = prediction_loss(loss, prediction, latents, noise, t, loss.mask_weights(mask))
    # Samples 0 and 1 weigh 4 each, whatever their mask's area; sample 2 (all zero) weighs 0, not NaN.
    assert torch.isclose(value, torch.tensor(8.0 / 3))
    assert torch.isfinite(grad).all() and not grad[2].any()
    floor = DiffusionLoss(loss.scheduler, "epsilon", snr_gamma=None, mask_floor=0.25)
    assert torch.equal(floor.mask_weights(mask)[2], torch.full((1, 8, 8), 0.25))
    assert torch.isclose(floor(prediction, latents, noise, t, floor.mask_weights(mask)), torch.tensor(4.0))


def old_preprocess(image: Image.Image, side: int, rng: random.Random) -> torch.Tensor:
    """The random crop and flip as they were before masks (cover, crop, flip; same draws)."""
    scale = side / min(image.size)
    if scale != 1.0:
        image = image.resize((max(side, round(image.width * scale)), max(side, round(image.height * scale))),
                             Image.Resampling.BICUBIC)
    left, top = rng.randint(0, image.width - side), rng.randint(0, image.height - side)
    image = image.crop((left, top, left + side, top + side))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(image, np.float32) / 127.5 - 1).permute(2, 0, 1)


def test_without_masks_the_loss_and_the_samples_are_as_before(tmp_path):
    scheduler = build_noise_scheduler(NoiseConfig())
    loss = DiffusionLoss(scheduler, "epsilon", snr_gamma=5.0)
    torch.manual_seed(1)
    prediction, latents, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = torch.tensor([3, 300, 600, 999])
    before = (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * loss.weights(t)).mean()
    assert torch.equal(loss(prediction, latents, noise, t), before)
    ones = torch.ones(4, 1, 8, 8)
    assert torch.allclose(loss(prediction, latents, noise, t, ones), before)

    cfg = DataConfig(source=str(write_rgba_folder(tmp_path / "rgba", 3)), resolution=16, center_crop=False,
                     random_flip=True)
    rows = load_source(cfg)
    for index in range(3):
        row = rows[index]
        sample = make_sample(row, cfg, train=True, seed=index)
        expected = old_preprocess(decode_image(row["image"]), 16, random.Random(index))
        assert "mask" not in sample and torch.equal(sample["pixel_values"], expected)


def test_alpha_masks_move_with_their_images_through_crops_flips_and_buckets(tmp_path):
    cfg = DataConfig(source=str(write_rgba_folder(tmp_path / "rgba", 16, opaque=2)), resolution=16,
                     batch_size=4, val_fraction=0.0, mask="alpha", background="black", center_crop=False,
                     random_flip=True, buckets={})
    dm = ImageCaptionDataModule(cfg)
    with pytest.warns(UserWarning, match=r"data.mask: alpha: 2 of 16 image\(s\) have no transparency"):
        dm.setup()
    shapes, coverage = set(), []
    for batch in dm.train_dataloader():
        pixels, mask = batch["pixel_values"], batch["mask"]
        assert mask.shape == (pixels.shape[0], 1, *pixels.shape[2:])
        # Over black, a white image's gray level is its alpha: wherever the crop and flip took the
        # pixels, the mask went with them.
        assert torch.allclose(mask[:, 0] * 255, (pixels[:, 0] + 1) * 127.5, atol=1.0)
        shapes.add(tuple(pixels.shape[2:]))
        coverage += mask.mean(dim=(1, 2, 3)).tolist()
    assert len(shapes) >= 2  # several buckets
    assert len(coverage) == 16 and sum(share == 1.0 for share in coverage) >= 2 and min(coverage) < 0.9


@pytest.fixture
def stage1(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    return FrozenAutoencoder.load(run / "vae"), TextConditioner.load(str(run)), run


def test_masks_survive_the_latent_cache_whose_key_changes_with_them(tmp_path, stage1):
    autoencoder, conditioner, _ = stage1
    cfg = DataConfig(source=str(write_rgba_folder(tmp_path / "rgba", 8, sizes=[(16, 16), (24, 16)])),
                     resolution=16, batch_size=4, val_fraction=0.0, mask="alpha")
    cached = LatentCacheDataModule(cfg, tmp_path / "cache", autoencoder, conditioner)
    cached.setup()
    masks = cached.train_set.__getitems__([(i, 0) for i in range(8)])["mask"]
    uncached, _ = load_splits(cfg)
    pixel_masks = torch.stack([uncached[i]["mask"] for i in range(8)])
    assert masks.shape == (8, 1, 8, 8) and 0 < float(masks.mean()) < 1
    assert torch.allclose(masks, to_latent_grid(pixel_masks, (8, 8)), atol=1e-6)

    plain = LatentCacheDataModule(dataclasses.replace(cfg, mask="none"), tmp_path / "cache", autoencoder, conditioner)
    plain.setup()
    assert plain.folder != cached.folder and plain.reused is False
    assert "mask" not in plain.train_set.__getitems__([(0, 0)])
    again = LatentCacheDataModule(cfg, tmp_path / "cache", autoencoder, conditioner)
    again.setup()
    assert again.folder == cached.folder and again.reused is True


def test_mask_files_beside_the_images(tmp_path, capsys):
    """cat.png + cat.mask.png, in caption files and in an imagefolder: the mask read (and counted
    where missing), the mask files not trained on, and their changes in the cache key."""
    folder = write_rgba_folder(tmp_path / "files", 4, sizes=[(16, 16)], opaque=4)
    for i in range(3):  # 03.png has none
        Image.fromarray(alpha_pattern(16, 16, i)).save(folder / f"{i:02d}.mask.png")
    cfg = DataConfig(source=str(folder), resolution=16, val_fraction=0.0, mask="file")
    with pytest.warns(UserWarning, match=r"1 of 4 image\(s\) have no .mask file"):
        train, _ = load_splits(cfg)
    assert len(train) == 4
    for i in range(3):
        assert torch.allclose(train[i]["mask"][0] * 255, torch.from_numpy(alpha_pattern(16, 16, i)).float())
    assert torch.equal(train[3]["mask"], torch.ones(1, 16, 16))
    report = check_data(cfg, preview=tmp_path / "preview")
    assert {status: len(files) for status, files in report.masks.items()} == {"found": 3, "missing": 1}
    assert "masks (data.mask: file): 3 found, 1 missing (train at full weight)" in format_report(report)
    with Image.open(tmp_path / "preview" / "00.png") as preview:  # white, dimmed where masked out
        red, pattern = np.asarray(preview)[..., 0], alpha_pattern(16, 16, 0)
    assert (red[pattern == 255] == 255).all() and (red[pattern == 0] < 70).all()
    main(["data", "check", str(folder), "--mask", "file", "--resolution", "16", "--val-fraction", "0"])
    assert "masks (data.mask: file): 3 found, 1 missing" in capsys.readouterr().out

    key = mask_key(load_source(cfg), cfg)
    Image.new("L", (16, 16)).save(folder / "03.mask.png")
    assert mask_key(load_source(cfg), cfg) != key
    assert mask_key(load_source(cfg), dataclasses.replace(cfg, mask="none")) is None

    (folder / "metadata.jsonl").write_text("".join(f'{{"file_name": "{i:02d}.png", "text": "a cat"}}\n'
                                                   for i in range(4)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imagefolder, _ = load_splits(cfg)
    assert not [w for w in caught if "skipped" in str(w.message)]  # no mask file taken for an image
    assert len(imagefolder) == 4 and torch.equal(imagefolder[0]["mask"], train[0]["mask"])


def test_a_mask_column(tmp_path):
    folder = write_rgba_folder(tmp_path / "images", 3, sizes=[(16, 16)], opaque=3)
    for i in range(2):
        Image.fromarray(alpha_pattern(16, 16, i)).save(tmp_path / f"matte{i}.png")
    datasets.Dataset.from_dict({
        "image": [str(folder / f"{i:02d}.png") for i in range(3)], "text": ["a cat"] * 3,
        "matte": [str(tmp_path / "matte0.png"), str(tmp_path / "matte1.png"), None],
    }).cast_column("image", datasets.Image()).cast_column("matte", datasets.Image()).save_to_disk(tmp_path / "saved")
    cfg = DataConfig(source=str(tmp_path / "saved"), resolution=16, val_fraction=0.0, mask="column",
                     mask_column="matte")
    with pytest.warns(UserWarning, match=r"1 of 3 image\(s\) have no mask in column 'matte'"):
        train, _ = load_splits(cfg)
    assert torch.allclose(train[1]["mask"][0] * 255, torch.from_numpy(alpha_pattern(16, 16, 1)).float())
    assert torch.equal(train[2]["mask"], torch.ones(1, 16, 16))
    with pytest.raises(LdmError, match=r"mask column 'mask' not found .* set data.mask_column"):
        load_source(dataclasses.replace(cfg, mask_column="mask"))
    with pytest.raises(LdmError, match="data.mask: file reads mask files .* use data.mask: column"):
        load_source(dataclasses.replace(cfg, mask="file"))


def test_bad_values_are_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "masked.yaml"
    config.write_text(yaml.safe_dump(diffusion_config(tmp_path, tmp_path / "run")))
    for override, key in (("loss.mask_floor=2", "loss.mask_floor"), ("data.mask=foo", "data.mask")):
        with pytest.raises(SystemExit) as stop:
            main(["train", str(config), override])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and key in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_masked_stage2_run_through_ldm_train(tmp_path, make_stage1_run, monkeypatch):
    seen = []
    original = diffusion_module.LatentDiffusion.loss_weights

    def recording(self, batch, latents):
        weights = original(self, batch, latents)
        seen.append(weights.shape if weights is not None else None)
        return weights

    monkeypatch.setattr(diffusion_module.LatentDiffusion, "loss_weights", recording)
    run = make_stage1_run(tmp_path)
    config = diffusion_config(tmp_path, run, samples={"prompts": []}, loss={"mask_floor": 0.1})
    config["data"] = {**config["data"], "source": str(write_rgba_folder(tmp_path / "rgba", 6, sizes=[(16, 16)])),
                      "mask": "alpha", "val_fraction": 0.2}
    config["train"] = {**config["train"], "max_steps": 2, "val_every_n_steps": 2}
    path = tmp_path / "masked.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["train", str(path)])
    assert (run / "pipeline" / "model_index.json").is_file()
    assert seen and all(shape is not None and shape[1:] == (1, 8, 8) for shape in seen)


@pytest.mark.parametrize("stage_config", ["autoencoder/kl_f4_shapes.yaml", "clip/clip_shapes.yaml"])
def test_a_mask_on_a_stage_whose_loss_does_not_read_it_is_refused(tmp_path, capsys, stage_config):
    """The autoencoder and the CLIP train on whole images: a data.mask there is refused, not ignored."""
    with pytest.raises(SystemExit) as stop:
        main(["train", str(packaged_configs() / stage_config), f"run_dir={tmp_path / 'run'}", "data.mask=alpha"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "data.mask" in err and "diffusion stage" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
