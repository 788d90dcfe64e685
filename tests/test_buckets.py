"""Aspect-ratio buckets: the bucket list, each image's bucket, one bucket per batch, a seeded and
resumable order, disjoint shares per process, the latent cache per bucket, and both image stages
training on them."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
import yaml
from diffusion_fixtures import diffusion_config
from image_kinds import write_mixed_aspect_folder
from PIL import Image

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.data.buckets import assign_buckets, bucket_sizes, cropped_share
from ldm.data.config import DataConfig
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible_sizes
from ldm.data.latent_cache.read import load_cache
from ldm.data.latent_datamodule import LatentCacheDataModule
from ldm.data.sampler import BucketBatchSampler
from ldm.stages.autoencoder.module import AutoencoderModule
from ldm.stages.diffusion.config import Config as DiffusionConfig
from ldm.stages.diffusion.module import LatentDiffusion
from ldm.stages.diffusion.train import train as train_diffusion
from ldm.stages.registry import train


def test_bucket_list_follows_area_sides_and_step():
    sizes = bucket_sizes(DataConfig(source="x", resolution=64, buckets={}))
    assert (64, 64) in sizes and (32, 128) in sizes and (128, 32) in sizes
    assert all(w % 8 == 0 and h % 8 == 0 and 32 <= min(w, h) and max(w, h) <= 128 for w, h in sizes)
    assert all(w * h <= 64 * 64 for w, h in sizes)
    assert set(sizes) == {(h, w) for w, h in sizes}  # every shape also turned
    ratios = [w / h for w, h in sizes]
    assert ratios == sorted(ratios)
    explicit = DataConfig(source="x", buckets={"sizes": [[64, 64], [96, 48]]})
    assert bucket_sizes(explicit) == [(64, 64), (96, 48)]
    assert bucket_sizes(DataConfig(source="x", resolution=32)) == [(32, 32)]  # no buckets: the square


def test_each_image_goes_to_the_closest_aspect_ratio():
    sizes = [(32, 64), (48, 48), (64, 32)]
    assert assign_buckets([100, 30, 200, 90], [200, 30, 100, 100], sizes).tolist() == [0, 1, 2, 1]
    assert cropped_share(200, 100, (64, 32)) == pytest.approx(0.0)
    assert cropped_share(150, 100, (48, 48)) == pytest.approx(1 / 3)


def test_bucket_settings_are_checked():
    with pytest.raises(ValueError, match="data.buckets needs data.streaming: false"):
        DataConfig(source="x", streaming=True, buckets={})
    with pytest.raises(ValueError, match="min_side=64 is above data.buckets.max_side=32"):
        DataConfig(source="x", buckets={"min_side": 64, "max_side": 32})
    with pytest.raises(LdmError, match="size 36x36 is not divisible by f=8"):
        require_divisible_sizes(DataConfig(source="x", buckets={"sizes": [[36, 36]]}), 8, "f")


def test_batch_sampler_one_bucket_per_batch_seeded_and_resumable():
    buckets = np.array([0] * 11 + [1] * 7 + [2] * 3)
    sampler = BucketBatchSampler(buckets, batch_size=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 2 + 1
    assert all(len({buckets[i] for i, _ in batch}) == 1 for batch in batches)
    assert sorted(i for batch in batches for i, _ in batch) == list(range(len(buckets)))
    assert batches == list(sampler)  # the same (seed, epoch), the same batches and sample seeds
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_epoch(0)
    sampler.skip_batches(4)  # a resumed epoch starts where the checkpoint left it
    assert list(sampler) == batches[4:]
    assert list(sampler) == batches  # once


def test_two_processes_see_disjoint_shares_that_cover_the_data():
    buckets = np.array([0] * 16 + [1] * 8)  # 6 batches of 4: no padding needed for 2 processes
    shares = [[i for batch in BucketBatchSampler(buckets, 4, seed=1, rank=rank, world_size=2) for i, _ in batch]
              for rank in (0, 1)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(24))
    odd = [len(BucketBatchSampler(np.array([0] * 9), 4, rank=rank, world_size=2)) for rank in (0, 1)]
    assert odd == [2, 2]  # 3 batches padded to 4: every process takes as many steps


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return write_mixed_aspect_folder(tmp_path_factory.mktemp("mixed") / "data", n=40)


def bucketed(source, **data) -> DataConfig:
    return DataConfig(source=str(source), resolution=32, batch_size=4, val_fraction=0.2, buckets={"step": 8},
                      **data)


def test_batches_hold_one_bucket_each_resized_to_cover_and_cropped(mixed):
    dm = ImageCaptionDataModule(bucketed(mixed, center_crop=False))
    dm.setup()
    sizes = bucket_sizes(dm.cfg)
    shapes = Counter()
    for batch in dm.train_dataloader():
        shape = tuple(batch["pixel_values"].shape[2:])
        assert (shape[1], shape[0]) in sizes
        shapes[shape] += 1
    assert len(shapes) == 3  # portrait, square and landscape, each in batches of their own
    for batch in dm.val_dataloader():
        assert batch["pixel_values"].shape[0] >= 1
    # 2:1 and 4:3 images go to 40x24 (5:3), the closest of 32x32, 40x24, 48x16 (3:1), ...
    wide = [i for i in range(len(dm.train_set)) if dm.train_set.ds[i]["_ldm_width"] in (64, 40)]
    assert {dm.train_set.sizes[dm.train_set.bucket_of[i]] for i in wide} == {(40, 24)}


def test_latent_cache_holds_each_bucket_in_its_own_part(mixed, tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    cfg = DataConfig(source=str(mixed), resolution=16, batch_size=4, val_fraction=0.2, buckets={})
    dm = LatentCacheDataModule(cfg, tmp_path / "cache", FrozenAutoencoder.load(run / "vae"),
                               TextConditioner.load(str(run)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
    parts = load_cache(dm.folder)
    assert len(parts) >= 3 and sum(len(part) for part in parts) == 40
    shapes = {tuple(part.features["mean"].shape) for part in parts}
    assert len(shapes) == len(parts)
    seen = set()
    for batch in dm.train_dataloader():
        assert batch["mean"].shape[1:] == batch["std"].shape[1:]
        seen.add(tuple(batch["mean"].shape[1:]))
    assert seen <= shapes and len(seen) >= 2


def record_shapes(monkeypatch, module_class) -> list:
    """The pixel or latent shapes each training step of `module_class` receives."""
    seen, original = [], module_class.training_step

    def recording(self, batch, batch_idx):
        seen.append(tuple((batch.get("pixel_values") if "pixel_values" in batch else batch["mean"]).shape[2:]))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(module_class, "training_step", recording)
    return seen


def test_the_autoencoder_trains_on_buckets(mixed, tmp_path, monkeypatch):
    seen = record_shapes(monkeypatch, AutoencoderModule)
    config = {
        "stage": "autoencoder", "run_dir": str(tmp_path / "run"),
        "data": {"source": str(mixed), "resolution": 32, "batch_size": 4, "val_fraction": 0.2, "buckets": {}},
        "model": {"kind": "kl", "downsampling_factor": 4, "channels": [8, 16, 16], "latent_channels": 4,
                  "norm_num_groups": 8},
        "loss": {"l1": 1.0, "disc": 0.0},
        "latent_scale": {"samples": 16},
        "train": {"max_steps": 6, "lr": 1e-3, "val_every_n_steps": 6, "checkpoint_every_n_steps": 6,
                  "log_every_n_steps": 1, "accelerator": "cpu", "devices": 1},
    }
    path = tmp_path / "ae.yaml"
    path.write_text(yaml.safe_dump(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(path)
    assert len(seen) == 6 and len(set(seen)) >= 2
    assert (tmp_path / "run" / "vae" / "config.json").is_file()


def test_the_diffusion_stage_trains_on_buckets_from_the_cache(mixed, tmp_path, monkeypatch, make_stage1_run):
    seen = record_shapes(monkeypatch, LatentDiffusion)
    run = make_stage1_run(tmp_path)
    config = diffusion_config(tmp_path, run, samples={"prompts": []})
    config["data"] = {**config["data"], "source": str(mixed), "buckets": {}}
    config["train"] = {**config["train"], "max_steps": 6}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_diffusion(build(DiffusionConfig, config))
    assert len(seen) == 6 and len(set(seen)) >= 2
    assert all(math.prod(shape) <= (16 // 2) ** 2 for shape in seen)  # latents of 16x16-area buckets
    assert (run / "pipeline" / "model_index.json").is_file()
    assert torch.load(run / "diffusion" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_generate_makes_images_at_a_bucket_size(kl_pipeline_path, tmp_path):
    from ldm.cli import main

    main(["generate", str(kl_pipeline_path), "a red circle", "--width", "24", "--height", "16", "--steps", "2",
          "--n", "1", "--out", str(tmp_path / "out")])
    (image,) = [path for path in (tmp_path / "out").glob("*.png") if path.name != "grid.png"]
    with Image.open(image) as png:
        assert png.size == (24, 16)


def test_a_resnet_clip_trains_on_buckets_and_a_vit_refuses_them(mixed, tmp_path, monkeypatch):
    from ldm.stages.clip.config import Config as ClipConfig
    from ldm.stages.clip.module import ClipModule
    from ldm.stages.clip.train import train as train_clip

    seen = record_shapes(monkeypatch, ClipModule)
    text = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    config = {
        "stage": "clip", "run_dir": str(tmp_path / "run"),
        "data": {"source": str(mixed), "resolution": 32, "batch_size": 4, "val_fraction": 0.2, "buckets": {}},
        "model": {"vision": {"kind": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
                  "text": text, "projection_dim": 16},
        "tokenizer": {"vocab_size": 600, "max_length": 16},
        "train": {"max_steps": 6, "val_every_n_steps": 6, "checkpoint_every_n_steps": 6, "log_every_n_steps": 1},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_clip(build(ClipConfig, config))
    assert len(seen) == 6 and len(set(seen)) >= 2
    config["model"]["vision"] = {"kind": "vit", **text, "patch_size": 8}
    with pytest.raises(LdmError, match="data.buckets needs model.vision.kind: resnet"):
        build(ClipConfig, config)
