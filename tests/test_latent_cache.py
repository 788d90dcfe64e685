"""The latent cache: built once, reused, rebuilt when an input changes, all captions kept."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.latent_cache.read import LatentCacheDataset, load_cache
from ldm.data.latent_datamodule import LatentCacheDataModule
from ldm.data.transforms import preprocess


def _datamodule(tmp_path, run, source=None, **data):
    cfg = DataConfig(source=str(source or tmp_path / "shapes"), resolution=16, batch_size=8, **data)
    return LatentCacheDataModule(cfg, run / "diffusion" / "cache", FrozenAutoencoder.load(run / "vae"),
                                 TextConditioner.load(str(run)))


def _prepared(tmp_path, run, **kwargs) -> LatentCacheDataModule:
    dm = _datamodule(tmp_path, run, **kwargs)
    dm.setup()
    return dm


def test_cache_is_reused_and_rebuilt_when_an_input_changes(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    first = _prepared(tmp_path, run)
    assert first.reused is False
    again = _prepared(tmp_path, run)
    assert again.reused is True and again.folder == first.folder

    # A changed autoencoder (one weight) gives a new cache.
    vae = FrozenAutoencoder.load(run / "vae").vae
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(0.1)
    vae.save_pretrained(run / "vae")
    changed = _prepared(tmp_path, run)
    assert changed.reused is False and changed.folder != first.folder

    # A changed data setting, and changed images, each give a new cache.
    resized = _prepared(tmp_path, run, max_samples=10)
    assert resized.reused is False and resized.folder != changed.folder
    image = tmp_path / "shapes" / "train" / "000000.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(image)
    edited = _prepared(tmp_path, run)
    assert edited.reused is False and edited.folder != changed.folder


def test_cache_holds_the_posterior_and_batches_read_from_it(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    dm = _prepared(tmp_path, run, val_fraction=0.25)
    assert len(dm.train_set) == 18 and len(dm.val_set) == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["mean"].shape == (8, 4, 8, 8) and batch["std"].shape == (8, 4, 8, 8)
    assert batch["embeddings"].shape == (8, 77, 32)

    # Row 0 of the cache is the autoencoder's posterior of image 0, preprocessed as training does.
    cache = load_cache(dm.folder)[0].with_format("torch")  # one part: no buckets
    source = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "shapes"), split="train")
    pixels = preprocess(source[0]["image"], 16, True, False, None)[None]
    mean, std = dm.autoencoder.moments(pixels)
    assert torch.allclose(cache[0]["mean"], mean[0], atol=1e-5)
    assert torch.allclose(cache[0]["std"], std[0], atol=1e-5)
    assert cache[0]["captions"] == [source[0]["text"]]


def test_every_caption_of_an_image_is_cached_and_one_drawn_per_sample(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    source = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "shapes"), split="train")
    source = source.map(lambda row: {"text": [row["text"], "a plain caption", "another one"]})
    source.save_to_disk(str(tmp_path / "multi"))
    dm = _prepared(tmp_path, run, source=tmp_path / "multi", val_fraction=0.0)
    row = load_cache(dm.folder)[0].with_format("numpy")[0]
    assert row["embeddings"].shape == (3, 77, 32)
    drawn = {tuple(dm.train_set[(0, seed)]["embeddings"][0, -1, :3].tolist()) for seed in range(20)}
    assert len(drawn) == 3


def test_vq_cache_stores_points_not_distributions(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path, kind="vq")
    dm = _prepared(tmp_path, run)
    batch = next(iter(dm.train_dataloader()))
    assert "std" not in batch and batch["mean"].shape == (8, 4, 8, 8)


def test_cache_refuses_what_it_cannot_hold(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path, n_images=2)
    for setting in ({"random_flip": True}, {"streaming": True}, {"center_crop": False}):
        with pytest.raises(LdmError, match="cache: false"):
            _datamodule(tmp_path, run, **setting)


def test_batches_gather_the_right_rows_across_record_batches(tmp_path):
    """A cache written in several record batches, with 1-3 captions a row: every batch read from
    the numpy views equals what `datasets` itself reads for those rows."""
    features = datasets.Features({
        "mean": datasets.Array3D((2, 2, 2), "float32"), "std": datasets.Array3D((2, 2, 2), "float32"),
        "embeddings": datasets.Array3D((None, 3, 4), "float16"),
        "captions": datasets.Sequence(datasets.Value("string"))})

    def part(first: int, count: int) -> datasets.Dataset:
        rows = range(first, first + count)
        return datasets.Dataset.from_dict({
            "mean": [np.full((2, 2, 2), r, np.float32) for r in rows],
            "std": [np.full((2, 2, 2), -r, np.float32) for r in rows],
            "embeddings": [np.full((1 + r % 3, 3, 4), r, np.float16) + np.arange(1 + r % 3)[:, None, None]
                           for r in rows],
            "captions": [[f"{r}-{k}" for k in range(1 + r % 3)] for r in rows]}, features=features)

    datasets.concatenate_datasets([part(0, 5), part(5, 7), part(12, 4)]).save_to_disk(
        str(tmp_path / "cache"), max_shard_size="1KB")  # several shards, so several record batches
    cache = datasets.load_from_disk(str(tmp_path / "cache"))
    assert cache.data.table.column("mean").num_chunks > 1
    rows = np.array([15, 0, 7, 4, 11, 5, 9])
    dataset = LatentCacheDataset([cache], rows, train=True)
    reference = cache.with_format("numpy")
    batch = dataset.__getitems__([(i, 100 + i) for i in range(len(rows))])
    for i, row in enumerate(rows):
        assert (batch["mean"][i].numpy() == reference[int(row)]["mean"]).all()
        assert (batch["std"][i].numpy() == reference[int(row)]["std"]).all()
        picked = batch["embeddings"][i, 0, 0].item() - row  # which of the row's captions was drawn
        assert picked in range(1 + row % 3)
        assert (batch["embeddings"][i].numpy() == reference[int(row)]["embeddings"][int(picked)]).all()
    # The sample seed decides the caption: the same keys read the same batch again.
    again = dataset.__getitems__([(i, 100 + i) for i in range(len(rows))])
    assert torch.equal(again["embeddings"], batch["embeddings"])


def test_a_pickled_dataset_reopens_the_cache_instead_of_copying_it(tmp_path, make_stage1_run):
    """What a spawned DataLoader worker receives: the cache's file names, not its contents."""
    import pickle

    run = make_stage1_run(tmp_path)
    dm = _prepared(tmp_path, run, val_fraction=0.25)
    payload = pickle.dumps(dm.train_set)
    assert len(payload) < 20_000  # the cache holds 24 x 77 x 32 fp16 embeddings alone: 118 kB
    copy = pickle.loads(payload)
    keys = [(i, i) for i in range(len(copy))]
    for name, values in dm.train_set.__getitems__(keys).items():
        assert torch.equal(copy.__getitems__(keys)[name], values)
