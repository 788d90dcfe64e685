"""Stage 1: a few training steps of each kind on tiny images, export, reload, scale, resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from diffusers import AutoencoderKL, VQModel

from ldm.components import autoencoder as vae_lib
from ldm.core.errors import LdmError
from ldm.data.datamodule import load_splits
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.stages.autoencoder.codebook import CodebookCare, perplexity, usage
from ldm.stages.autoencoder.losses import (
    AutoencoderLoss,
    PatchDiscriminator,
    adaptive_weight,
    edge_loss,
    hinge_discriminator_loss,
)
from ldm.stages.autoencoder.module import AutoencoderModule
from ldm.stages.registry import load_config, train

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


def trained_module(config, run) -> tuple[AutoencoderModule, int]:
    """The Lightning module as the run's last checkpoint holds it, and the checkpoint's global_step."""
    state = torch.load(run / "autoencoder" / "checkpoints" / "last.ckpt", weights_only=True)
    module = AutoencoderModule(load_config(config))
    module.load_state_dict(state["state_dict"])
    return module.eval(), state["global_step"]


def training_images(config, n):
    train_set, _ = load_splits(load_config(config).data)
    return torch.stack([train_set[i]["pixel_values"] for i in range(n)])


def assert_export_reconstructs_like_the_module(module, out, cls):
    reloaded = cls.from_pretrained(out).eval()
    assert isinstance(vae_lib.load_vae(out), cls)
    assert vae_lib.downsampling_factor(reloaded) == 4
    pixels = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert (module.vae(pixels).sample - reloaded(pixels).sample).abs().max() < 1e-5


def test_kl_with_gan_trains_exports_and_measures_the_latent_scale(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "kl",
                          latent_scale={"samples": 24, "shift": True})
    out = train(config).export

    run = tmp_path / "run"
    assert out == run / "vae" and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert (run / "autoencoder" / "loss.png").is_file()
    assert list((run / "autoencoder" / "reconstructions").glob("step*.png"))
    metrics = (run / "autoencoder" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for name in ("val/psnr", "val/ssim", "train/kl", "train/perceptual", "train/gan",
                 "train/adaptive_weight", "train/disc_loss"):
        assert name in metrics
    module, global_step = trained_module(config, run)
    assert global_step == 8  # 4 batches, two optimizer steps each (autoencoder, discriminator)
    assert_export_reconstructs_like_the_module(module, out, AutoencoderKL)

    # scaling_factor and shift_factor make the training images' latents zero-mean, unit-std.
    vae = vae_lib.load_vae(out)
    assert json.loads((out / "config.json").read_text())["shift_factor"] == vae_lib.shift_factor(vae) != 0
    with torch.no_grad():
        latents = vae_lib.encode(vae, training_images(config, 24))
    assert latents.std().item() == pytest.approx(1.0, abs=0.2)
    assert abs(latents.mean().item()) < 0.2


def test_vq_without_gan_trains_exports_and_tracks_the_codebook(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "vq", loss={"disc": 0.0})
    out = train(config).export

    run = tmp_path / "run"
    metrics = (run / "autoencoder" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for name in ("val/psnr", "val/codebook_usage", "val/codebook_perplexity", "train/codebook",
                 "train/commitment", "train/codebook_usage", "train/codebook_revived"):
        assert name in metrics
    assert "disc" not in metrics
    module, global_step = trained_module(config, run)
    assert global_step == 4 and module.loss.discriminator is None  # one optimizer
    assert_export_reconstructs_like_the_module(module, out, VQModel)
    assert "shift_factor" not in json.loads((out / "config.json").read_text())


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


def test_edge_loss_prices_a_blurred_edge_not_a_flat_offset():
    """A step edge blurred over two pixels costs the edge term twice what it costs l1 (l1 sees half
    the error on each side of it), while a flat colour offset, which l1 charges in full, costs the
    edge term nothing: it weighs what blur does, and a perfect copy costs nothing."""
    sharp = -torch.ones(1, 3, 8, 8)
    sharp[..., 4:] = 1.0
    blurred = sharp.clone()
    blurred[..., 3], blurred[..., 4] = -0.5, 0.5
    l1 = (blurred - sharp).abs().mean()
    assert edge_loss(sharp, sharp).item() == 0.0
    assert edge_loss(blurred, sharp) == pytest.approx(2 * l1)
    assert edge_loss(sharp + 0.25, sharp).item() == pytest.approx(0.0, abs=1e-6)
    loss = AutoencoderLoss({"l1": 1.0, "l2": 0.0, "edge": 2.0, "disc": 0.0}, None, 3, 64)
    assert loss.reconstruction(sharp, blurred)["edge"] == edge_loss(blurred, sharp)
    assert "edge" not in loss.reconstruction(sharp, blurred, edges=False)  # before loss.edge_start
    assert "edge" not in AutoencoderLoss({"l1": 1.0, "disc": 0.0}, None, 3, 64).reconstruction(sharp, blurred)


def test_codebook_revives_dead_codes_from_recent_encoder_outputs():
    care = CodebookCare(num_codes=8, dim=2, recent=16)
    vectors = torch.randn(10, 2)
    care.observe(vectors, torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]))
    assert usage(care.counts) == pytest.approx(2 / 8)
    entropy = -(0.2 * torch.log(torch.tensor(0.2)) + 0.8 * torch.log(torch.tensor(0.8)))
    assert perplexity(care.counts) == pytest.approx(torch.exp(entropy).item())
    dead = care.dead_codes(care.counts)
    assert dead.tolist() == [2, 3, 4, 5, 6, 7]
    new = care.replacements(len(dead))
    assert all(any(torch.equal(row, v) for v in vectors) for row in new)  # drawn from what it saw


def test_perceptual_loss_is_lpips_from_a_local_file_else_ssim(tmp_path):
    from safetensors.torch import save_file

    from ldm.stages.autoencoder.losses import SSIMLoss, perceptual_loss
    from ldm.stages.autoencoder.lpips import LPIPS, TAP_CHANNELS, vgg16_features

    assert isinstance(perceptual_loss(None), SSIMLoss)
    torch.manual_seed(0)
    weights = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    weights.update({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(TAP_CHANNELS)})
    save_file(weights, tmp_path / "lpips.safetensors")
    lpips = perceptual_loss(str(tmp_path / "lpips.safetensors"))
    assert isinstance(lpips, LPIPS) and not any(p.requires_grad for p in lpips.parameters())
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    assert lpips(x, x).item() == 0.0 and lpips(x.flip(-1), x).item() > 0
    save_file({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(LdmError, match="does not hold LPIPS VGG16 weights"):
        LPIPS(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_decoder_only_fine_tune_keeps_the_encoder_and_the_latent_scale(shapes, tmp_path, kind):
    """From a pretrained autoencoder (as RUN/vae): only the decoder side trains, the encoder side
    (encoder, quant_conv, the VQ codebook) stays bit-identical, and scaling_factor is kept."""
    pretrained = tmp_path / "pretrained"
    blocks = dict(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  block_out_channels=(8, 16, 16), norm_num_groups=8, latent_channels=4, scaling_factor=0.37)
    torch.manual_seed(0)
    if kind == "kl":
        start = AutoencoderKL(**blocks)
    else:
        start = VQModel(num_vq_embeddings=32, vq_embed_dim=4, **blocks)
    start.save_pretrained(pretrained)
    # model: sizes that differ from the loaded ones are ignored; the loaded model is trained.
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", kind,
                          model={"pretrained": str(pretrained), "channels": [64, 64, 64]},
                          train={"decoder_only": True, "gradient_checkpointing": kind == "kl"},
                          loss={"disc": 0.5 if kind == "kl" else 0.0})
    out = train(config).export

    tuned = vae_lib.load_vae(out)
    before, after = start.state_dict(), tuned.state_dict()
    encoder_side = [k for k in before if k.startswith(("encoder.", "quant_conv.", "quantize."))]
    decoder_side = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder_side and all(torch.equal(before[k], after[k]) for k in encoder_side)
    assert any(not torch.equal(before[k], after[k]) for k in decoder_side)
    assert tuned.config.scaling_factor == 0.37


def test_decoder_only_needs_a_pretrained_autoencoder(shapes, tmp_path):
    config = write_config(tmp_path / "ae.yaml", shapes, tmp_path / "run", "kl", train={"decoder_only": True})
    with pytest.raises(LdmError, match="train.decoder_only needs model.pretrained"):
        train(config)
