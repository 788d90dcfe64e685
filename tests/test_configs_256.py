"""The 256 px GPU configs build and train: each configs/*/*_256.yaml runs two steps on the CPU, so
they cannot rot unseen.

The full-size models (the Stable-Diffusion-sized VAE and UNet) are built from each config on the
meta device, which allocates nothing: every block type, layer count and width is checked. Training
two steps at full width would need about 12 GiB and 5 minutes on a 2-core CPU (the UNet has over
400 M parameters), so the training run keeps every key of the config but divides the channel widths
by 8; and what a CPU needs: 64 px images (shapes data upscaled; the models take any multiple of their
factor), a batch of 1, full precision, no workers, two steps. The diffusion config's text encoder is
the tests' tiny CLIP (the 256 px recipe takes any stage-1b or pretrained one).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from ldm.stages.registry import load_config, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIDE = 64
CPU = ["data.resolution=64", "data.batch_size=1", "data.num_workers=0", "data.val_fraction=0.25",
       "train.max_steps=2", "train.warmup_steps=0", "train.val_every_n_steps=2", "train.checkpoint_every_n_steps=1000",
       "train.limit_val_batches=1", "train.log_every_n_steps=1", "train.warmup_steps=0",
       "train.accelerator=cpu", "train.devices=1", "train.precision=32-true"]
STAGE_OVERRIDES = {"autoencoder": ["latent_scale.samples=2"], "diffusion": ["samples.prompts=[]"]}


def configs_256() -> list[Path]:
    return sorted(CONFIGS.glob("*/*_256.yaml"))


def narrower(cfg) -> list[str]:
    """Overrides that divide the config's channel widths by 8 and leave the rest as it is."""
    if cfg.stage == "autoencoder":
        return [f"model.channels=[{', '.join(str(c // 8) for c in cfg.model.channels)}]", "model.norm_num_groups=8",
                "loss.disc_channels=8"]
    return [f"unet.block_out_channels=[{', '.join(str(c // 8) for c in cfg.unet.block_out_channels)}]",
            "unet.norm_num_groups=8"]


def test_the_full_size_models_build(tmp_path):
    from ldm.stages.autoencoder.module import build_autoencoder
    from ldm.stages.diffusion.parts import build_unet

    sizes = {}
    for path in configs_256():
        cfg = load_config(path, ["run_dir=/tmp/x", "data.source=/tmp/x"])
        with torch.device("meta"):  # shapes only: nothing is allocated
            if cfg.stage == "autoencoder":
                model = build_autoencoder(cfg.model, cfg.data.resolution)
            else:
                frozen = SimpleNamespace(factor=8, latent_channels=4)  # the kl_f8_256 autoencoder's
                model = build_unet(cfg.unet, frozen, SimpleNamespace(hidden_size=768), cfg.data.resolution)
        sizes[cfg.stage] = sum(p.numel() for p in model.parameters())
    assert sizes["autoencoder"] > 50e6 and sizes["diffusion"] > 300e6, sizes


def test_the_256_configs_are_the_ones_this_file_knows():
    stages = {load_config(path, ["run_dir=/tmp/x", "data.source=/tmp/x"]).stage for path in configs_256()}
    assert stages <= {"autoencoder", "diffusion"}  # a 256 px CLIP config would need its own run here
    assert any(path.parent.name == "autoencoder" for path in configs_256())


def test_each_256_config_trains_two_steps_on_the_cpu(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path, n_images=8)  # a tiny text encoder and tokenizer, and shapes data
    common = [*CPU, f"data.source={tmp_path / 'shapes'}", f"run_dir={run}"]
    vae = None
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(configs_256(), key=lambda p: p.parent.name != "autoencoder"):  # stage 1 first
            cfg = load_config(path, common)
            extra = [*STAGE_OVERRIDES.get(cfg.stage, []), *narrower(cfg)]
            if cfg.stage == "autoencoder":
                extra.append(f"run_dir={tmp_path / 'stage1'}")
            else:
                extra += [f"vae={vae}", f"text_encoder={run}"]
            trained = train(path, [*common, *extra])
            assert trained.trainer.global_step == 2 * getattr(trained.module, "optimizer_steps_per_batch", 1)
            assert (trained.export / "config.json").is_file() or (trained.export / "model_index.json").is_file()
            if cfg.stage == "autoencoder":
                vae = trained.export
