"""Sharded sources (WebDataset tar files, parquet files), streamed: loaded, split among processes, and
resumed where a checkpoint left them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from diffusion_fixtures import diffusion_config
from launching import kill_after_first_checkpoint, ldm_train
from shards import rows, write_parquet, write_webdataset
from test_reproducible import assert_identical

from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import STREAM_POSITION, StreamPosition, collate, load_splits, make_loader
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.data.sources import load_source
from ldm.stages.checkpoints import data_fingerprint
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=24, size=16, seed=0, n_test=4)


@pytest.fixture(scope="module")
def tars(shapes, tmp_path_factory):
    return write_webdataset(shapes, tmp_path_factory.mktemp("wds"), shards=4)


def webdataset_config(tars, **settings) -> DataConfig:
    return DataConfig(source=str(tars[0].parent / "*.tar"), image_column="png", caption_column="txt",
                      resolution=16, **settings)


def test_webdataset_and_parquet_shards_load_in_order_whole_or_streamed(shapes, tars, tmp_path):
    captions = [caption for _, _, caption in rows(shapes)]
    cfg = webdataset_config(tars)
    assert load_source(cfg)["txt"] == captions
    streamed = load_source(webdataset_config(tars, streaming=True))
    assert streamed.num_shards == 4 and [row["txt"] for row in streamed] == captions
    parquet = [str(path) for path in write_parquet(shapes, tmp_path / "pq", shards=2)]
    assert load_source(DataConfig(source=parquet, resolution=16))["text"] == captions
    streamed = load_source(DataConfig(source=parquet, resolution=16, streaming=True))
    assert [row["text"] for row in streamed] == captions
    assert data_fingerprint(parquet) != data_fingerprint(parquet[:1])


def test_shard_sources_say_what_is_wrong(tars, tmp_path):
    for source, message in ((str(tmp_path / "none-*.tar"), "no files match"),
                            (str(tmp_path / "missing.parquet"), "shard file not found"),
                            ([str(tars[0]), str(tmp_path / "a.parquet")], "not found"),
                            ([str(tars[0]), str(tmp_path)], "names shard files")):
        with pytest.raises(LdmError, match=message):
            load_source(DataConfig(source=source))
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(LdmError, match="mixes parquet and webdataset"):
        load_source(DataConfig(source=[str(tars[0]), str(tmp_path / "a.parquet")]))
    with pytest.raises(LdmError, match="image column 'image' not found"):
        load_source(DataConfig(source=str(tars[0])))


def captions_of(dataset) -> list[str]:
    return [sample["caption"] for sample in dataset]


def test_each_process_streams_its_own_shards_and_holds_out_its_own_validation(shapes, tars):
    cfg = webdataset_config(tars, streaming=True, batch_size=2, shuffle_buffer=0)
    seen = {}
    for rank in range(2):
        train, val = load_splits(cfg, rank, 2)
        seen[rank] = captions_of(train), captions_of(val)
        assert len(seen[rank][1]) == 4  # two batches of 2
    everything = [caption for part in seen.values() for captions in part for caption in captions]
    assert sorted(everything) == sorted(caption for _, _, caption in rows(shapes))  # each row once


def batches(loader, count: int | None = None) -> list[dict]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            break
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stream_resumes_where_its_last_trained_batch_left_it(tars, workers):
    cfg = webdataset_config(tars, streaming=True, batch_size=3, shuffle_buffer=0, num_workers=workers,
                            val_fraction=0.0, random_flip=True, center_crop=False)  # random crops and flips

    def loader(resume: dict | None = None):
        train, _ = load_splits(cfg)
        if resume is not None:
            train.resume_from(resume)
        return make_loader(train, cfg, collate, None, train=True)

    uninterrupted = loader()
    whole = [batches(uninterrupted), batches(uninterrupted)]  # two epochs
    assert len(whole[0]) == 8

    position = StreamPosition()
    for batch in batches(loader(), 3):  # trained 3 batches, then killed
        position.advance(batch.pop(STREAM_POSITION))
    resumed_loader = loader(position.state())
    resumed = [batches(resumed_loader), batches(resumed_loader)]
    for got, want in zip(resumed[0] + resumed[1], whole[0][3:] + whole[1]):
        assert got["caption"] == want["caption"]
        assert torch.equal(got["pixel_values"], want["pixel_values"])  # the same crops and flips
    assert len(resumed[0]) == 5 and len(resumed[1]) == 8


def test_a_resumed_shuffled_stream_says_it_is_not_exact(tars):
    train, _ = load_splits(webdataset_config(tars, streaming=True, val_fraction=0.0, shuffle_buffer=8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.resume_from({"epoch": 0, "workers": {}})
    assert any("data.shuffle_buffer: 0 resumes exactly" in str(w.message) for w in caught)


def streamed_config(root: Path, run: Path, source, **data) -> dict:
    """The diffusion stage on a streamed source, encoding every step (cache: false), exactly resumable."""
    config = diffusion_config(root, run, cache=False, samples={"prompts": []})
    config["data"] = {**config["data"], "source": source, "streaming": True, "shuffle_buffer": 0, **data}
    return config


def test_parquet_shards_train_the_diffusion_stage_streamed(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    files = [str(path) for path in write_parquet(tmp_path / "shapes", tmp_path / "pq", shards=3)]
    train(build(Config, streamed_config(tmp_path, run, files)))
    assert (run / "pipeline" / "model_index.json").is_file()
    assert not (run / "diffusion" / "cache").exists()


@pytest.mark.slow
def test_a_streamed_webdataset_run_killed_and_resumed_equals_its_uninterrupted_twin(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    write_webdataset(tmp_path / "shapes", tmp_path / "wds", shards=4)
    # 24 images: 8 held out for validation, 16 train in batches of 4, so 10 steps cross two epochs.
    settings = {"max_steps": 10, "val_every_n_steps": 5, "checkpoint_every_n_steps": 3, "limit_val_batches": 1,
                "log_every_n_steps": 1, "lr": 1e-3}
    configs = {}
    for name in ("whole", "crash"):
        config = streamed_config(tmp_path, run, str(tmp_path / "wds" / "*.tar"), image_column="png",
                                 caption_column="txt", random_flip=True)
        config.update(run_dir=str(tmp_path / name), train=settings)
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config))
    uninterrupted = ldm_train(configs["whole"])
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stdout.read()[-3000:]

    killed = ldm_train(configs["crash"])
    checkpoints = tmp_path / "crash" / "diffusion" / "checkpoints"
    if not kill_after_first_checkpoint(killed, checkpoints, within_s=1.0):
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    resumed = ldm_train(configs["crash"], "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()[-3000:]
    assert_identical(tmp_path / "whole" / "pipeline", tmp_path / "crash" / "pipeline")
