import json
import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.datamodule import (
    ImageCaptionDataModule,
    load_splits,
    pick_caption,
    require_divisible,
)
from ldm.data.shapes.generator import make_shapes_dataset


def write_folder(folder, n, corrupt=(), size=24, captions="jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"img{i:03d}.png"
        if i in corrupt:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
        else:
            Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(folder / name)
        if captions == "txt":
            (folder / name).with_suffix(".txt").write_text(f"caption {i}\n")
        rows.append({"file_name": name, "text": f"caption {i}"})
    if captions == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder


def test_corrupt_images_are_skipped_and_counted_in_one_warning(tmp_path):
    folder = write_folder(tmp_path / "imgs", 50, corrupt={3, 17, 40})
    cfg = DataConfig(source=str(folder), resolution=16, val_fraction=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = load_splits(cfg)
    ours = [w for w in caught if "skipped" in str(w.message)]
    assert len(ours) == 1
    assert "skipped 3 image(s) of 50" in str(ours[0].message)
    assert "3 not an image (" in str(ours[0].message)
    assert "img003.png" in str(ours[0].message)
    assert len(train) == 47 and val is None
    for i in range(len(train)):  # every remaining sample decodes
        assert train[i]["pixel_values"].shape == (3, 16, 16)


def test_empty_or_missing_folder_fails_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LdmError, match=f"no images found in data folder {tmp_path / 'empty'}"):
        load_splits(DataConfig(source=str(tmp_path / "empty")))
    with pytest.raises(LdmError, match="data folder not found"):
        load_splits(DataConfig(source=str(tmp_path / "nowhere" / "x")))


def test_all_corrupt_is_an_empty_dataset_error(tmp_path):
    folder = write_folder(tmp_path / "bad", 4, corrupt={0, 1, 2, 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(LdmError, match="no usable images"):
            load_splits(DataConfig(source=str(folder)))


def test_missing_caption_column_is_named(tmp_path):
    folder = write_folder(tmp_path / "imgs", 6)
    with pytest.raises(LdmError, match="caption column 'prompt' not found"):
        load_splits(DataConfig(source=str(folder), caption_column="prompt"))


def test_caption_txt_files_beside_images(tmp_path):
    folder = write_folder(tmp_path / "imgs", 6, captions="txt")
    train, val = load_splits(DataConfig(source=str(folder), resolution=16, val_fraction=0.0))
    assert sorted(train[i]["caption"] for i in range(6)) == [f"caption {i}" for i in range(6)]
    write_folder(tmp_path / "nocap", 3, captions="none")
    with pytest.raises(LdmError, match="no captions"):
        load_splits(DataConfig(source=str(tmp_path / "nocap")))


def test_saved_dataset_with_caption_lists(tmp_path):
    images = [Image.new("RGB", (20, 20), (i * 40, 0, 0)) for i in range(5)]
    ds = datasets.Dataset.from_dict({"img": images, "captions": [[f"a{i}", f"b{i}"] for i in range(5)]})
    ds = ds.cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(source=str(tmp_path / "saved"), image_column="img", caption_column="captions",
                     resolution=16, val_fraction=0.2)
    train, val = load_splits(cfg)
    assert len(train) == 4 and len(val) == 1
    torch.manual_seed(0)
    seen = {train[0]["caption"] for _ in range(30)}
    assert len(seen) == 2  # one of the list picked at random per sample
    assert val[0]["caption"].startswith("a")  # validation takes the first caption


def test_pick_caption_handles_lists_and_missing():
    import random

    assert pick_caption(["x", "y"], random.Random(0), train=False) == "x"
    assert pick_caption([], random.Random(0), train=True) == ""
    assert pick_caption(None, random.Random(0), train=True) == ""


def test_datamodule_batches_shapes_data(tmp_path):
    out = make_shapes_dataset(tmp_path / "s", n=40, size=32, seed=0)
    dm = ImageCaptionDataModule(DataConfig(source=str(out), resolution=32, batch_size=8, val_fraction=0.25))
    dm.setup("fit")
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (8, 3, 32, 32)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert len(batch["caption"]) == 8 and all(isinstance(c, str) and c for c in batch["caption"])
    test = ImageCaptionDataModule(DataConfig(source=str(out), split="test", val_fraction=0.0))
    test.setup()
    assert len(test.train_set) == 64


def test_streaming_serves_batches(tmp_path):
    out = make_shapes_dataset(tmp_path / "s", n=40, size=32, seed=0)
    cfg = DataConfig(source=str(out), resolution=16, batch_size=4, streaming=True, val_fraction=0.1)
    dm = ImageCaptionDataModule(cfg)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert sum(len(b["caption"]) for b in batches) == 40 - 8  # two validation batches held out
    assert batches[0]["pixel_values"].shape == (4, 3, 16, 16)
    assert sum(len(b["caption"]) for b in dm.val_dataloader()) == 8


def test_resize_crop_and_resolution_check(tmp_path):
    folder = write_folder(tmp_path / "imgs", 3, size=40)  # 48x40 images, not square
    train, _ = load_splits(DataConfig(source=str(folder), resolution=32, val_fraction=0.0, center_crop=False))
    assert train[0]["pixel_values"].shape == (3, 32, 32)
    require_divisible(32, 4, "f")
    with pytest.raises(LdmError, match="not divisible by f=8"):
        require_divisible(36, 8, "f")
