"""Stage 1: a few training steps of each kind on tiny images, export, reload, scale, resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from diffusers import AutoencoderKL, VQModel

from ldm import vae as vae_lib
from ldm.data.shapes import make_shapes_dataset
from ldm.errors import LdmError
from ldm.models.autoencoder import AutoencoderModule, measure_latent_scale
from ldm.models.autoencoder_losses import PatchDiscriminator, adaptive_weight, hinge_discriminator_loss
from ldm.models.codebook import CodebookCare, perplexity, usage
from ldm.stages import load_config, train

SIZE = 16


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=40, size=SIZE, seed=0, n_test=4)


def write_config(path, data, run_dir, kind="kl", **sections):
    """A tiny stage-1 config (16 px, f=4, 8-channel levels): trains a step in well under a second."""
    cfg = {
        "stage": "autoencoder",
        "run_dir": str(run_dir),
        "data": {"source": str(data), "resolution": SIZE, "batch_size": 8, "val_fraction": 0.2},
        "model": {"kind": kind, "downsampling_factor": 4, "channels": [8, 16, 16], "latent_channels": 4,
                  "norm_num_groups": 8, "num_codes": 32},
        "loss": {"l1": 1.0, "l2": 1.0, "perceptual": 0.1, "disc": 0.5, "disc_start": 2,
                 "disc_layers": 2, "disc_channels": 8},
        "codebook": {"revive_every": 2, "recent_vectors": 256},
        "latent_scale": {"samples": 16},
        "train": {"max_steps": 4, "lr": 1e-3, "val_every_n_steps": 4, "checkpoint_every_n_steps": 2,
                  "log_every_n_steps": 1, "accelerator": "cpu", "devices": 1, "warmup_steps": 1},
    }
    for section, values in sections.items():
        cfg[section].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_trains_exports_and_reloads_the_same_reconstructions(kind, shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", kind)
    out = train(config)

    run = tmp_path / "run"
    assert out == run / "vae" and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert (run / "autoencoder" / "loss.png").is_file()
    assert list((run / "autoencoder" / "reconstructions").glob("step*.png"))
    metrics = (run / "autoencoder" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/psnr" in metrics and "val/ssim" in metrics and "train/disc_loss" in metrics
    if kind == "vq":
        assert "val/codebook_usage" in metrics and "train/codebook_revived" in metrics

    cls = AutoencoderKL if kind == "kl" else VQModel
    reloaded = cls.from_pretrained(out)
    assert isinstance(vae_lib.load_vae(out), cls)
    assert vae_lib.downsampling_factor(reloaded) == 4

    # The Lightning module restored from the last checkpoint reconstructs what the export does.
    cfg = load_config(config)
    state = torch.load(run / "autoencoder" / "checkpoints" / "last.ckpt", weights_only=True)
    module = AutoencoderModule(cfg)
    module.load_state_dict(state["state_dict"])
    pixels = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        ours = module.vae.eval()(pixels).sample
        theirs = reloaded.eval()(pixels).sample
    assert (ours - theirs).abs().max() < 1e-5


def test_scaling_factor_gives_unit_std_latents(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "kl", latent_scale={"samples": 24, "shift": True})
    out = train(config)
    exported = json.loads((out / "config.json").read_text())
    vae = vae_lib.load_vae(out)
    assert exported["scaling_factor"] == pytest.approx(vae.config.scaling_factor) and exported["shift_factor"] is not None

    cfg = load_config(config)
    from ldm.data.datamodule import ImageCaptionDataModule

    dm = ImageCaptionDataModule(cfg.data)
    dm.setup()
    pixels = torch.stack([dm.train_set[i]["pixel_values"] for i in range(24)])
    with torch.no_grad():
        latents = vae_lib.encode(vae, pixels)
    assert latents.std().item() == pytest.approx(1.0, abs=0.15)
    assert abs(latents.mean().item()) < 0.15


def test_resume_restores_discriminator_optimizers_and_step(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "vq")
    train(config)
    ckpt_dir = tmp_path / "run" / "autoencoder" / "checkpoints"
    first = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert first["global_step"] == 8  # 4 batches, two optimizer steps each
    assert any(k.startswith("loss.discriminator.") for k in first["state_dict"])
    assert any(k.startswith("codebook.") for k in first["state_dict"])
    assert len(first["optimizer_states"]) == 2 and len(first["lr_schedulers"]) == 2

    with pytest.raises(LdmError, match="pass --resume"):
        train(config, ["train.max_steps=6"])
    train(config, ["train.max_steps=6"], resume=True)
    second = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert second["global_step"] == 12  # two more batches, not six
    assert second["lr_schedulers"][0]["last_epoch"] == 6
    # The discriminator's Adam state carried over: six steps, not the two of a fresh start.
    disc_state = second["optimizer_states"][1]["state"]
    assert disc_state and all(int(s["step"]) == 6 for s in disc_state.values())


def test_misspelled_key_fails_before_training_naming_it(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "kl", loss={"disc_strat": 5})
    with pytest.raises(LdmError, match=r"unknown config key 'loss.disc_strat'.*did you mean 'disc_start'"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_factor_must_divide_the_resolution(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "kl")
    with pytest.raises(LdmError, match=r"data.resolution=18 is not divisible by model.downsampling_factor=4"):
        train(config, ["data.resolution=18"])
    with pytest.raises(LdmError, match=r"model.channels must have log2\(f\) \+ 1 = 4 entries"):
        train(config, ["model.downsampling_factor=8"])
    assert not (tmp_path / "run").exists()


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    layer = torch.nn.Parameter(torch.ones(3))
    rec_loss = (layer * torch.tensor([3.0, 0.0, 4.0])).sum()  # gradient norm 5
    gan_loss = (layer * 0.5).sum()  # gradient norm 0.5 * sqrt(3)
    expected = 5.0 / (0.5 * 3**0.5 + 1e-4)
    assert adaptive_weight(rec_loss, gan_loss, layer).item() == pytest.approx(expected, rel=1e-4)


def test_hinge_loss_and_patch_discriminator():
    assert hinge_discriminator_loss(torch.full((2,), 2.0), torch.full((2,), -2.0)).item() == 0.0
    assert hinge_discriminator_loss(torch.zeros(2), torch.zeros(2)).item() == pytest.approx(1.0)
    logits = PatchDiscriminator(layers=2, channels=8)(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 1, 6, 6)  # one logit per overlapping patch


def test_codebook_revives_dead_codes_from_recent_encoder_outputs():
    care = CodebookCare(num_codes=8, dim=2, recent=16)
    vectors = torch.randn(10, 2)
    care.observe(vectors, torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]))
    assert usage(care.counts) == pytest.approx(2 / 8)
    assert perplexity(care.counts) == pytest.approx(torch.exp(-(0.2 * torch.log(torch.tensor(0.2)) + 0.8 * torch.log(torch.tensor(0.8)))).item())
    dead = care.dead_codes(care.counts)
    assert dead.tolist() == [2, 3, 4, 5, 6, 7]
    new = care.replacements(len(dead))
    assert all(any(torch.equal(row, v) for v in vectors) for row in new)  # drawn from what it saw
