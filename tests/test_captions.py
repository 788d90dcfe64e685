"""Captions: missing, empty and non-string ones counted (skipped, or kept as the empty prompt when
data.empty_captions says so), list elements as strings, and a folder's own caption mistakes named."""

from __future__ import annotations

import json
import random
import warnings

import datasets
import pytest
from PIL import Image

from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.data.captions import captions_of, clean_captions, pick_caption, vary_tags
from ldm.data.config import DataConfig
from ldm.data.datamodule import load_splits
from ldm.data.latent_datamodule import check_cacheable
from ldm.data.sampler import ResumableShuffleSampler


def test_caption_rules():
    assert clean_captions("  a cat  ") == ["a cat"]
    assert clean_captions("") == clean_captions("   ") == clean_captions(None) == []
    assert clean_captions(42) == clean_captions({"text": "x"}) == []  # not a string: no caption
    assert clean_captions(["a", 5, None, " ", 2.5]) == ["a", "5", "2.5"]  # elements as strings
    assert captions_of(None) == [""]
    assert pick_caption(["x", "y"], random.Random(0), train=False) == "x"
    assert {pick_caption(["x", "y"], random.Random(seed), train=True) for seed in range(20)} == {"x", "y"}


def saved_dataset(folder, captions):
    images = [Image.new("RGB", (16, 16), (i * 30, 0, 0)) for i in range(len(captions))]
    ds = datasets.Dataset.from_dict({"image": images, "text": captions}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(folder))
    return folder


def loaded(cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _ = load_splits(cfg)
    return train, [str(w.message) for w in caught if "caption" in str(w.message)]


def test_missing_and_empty_captions_are_skipped_and_counted(tmp_path):
    source = saved_dataset(tmp_path / "saved", [["a red square"], [], ["", None], None, [" a blue circle", "a disc"]])
    train, messages = loaded(DataConfig(source=str(source), resolution=16, val_fraction=0.0))
    assert len(messages) == 1 and "skipped 3 image(s) of 5" in messages[0] and "3 no caption" in messages[0]
    assert len(train) == 2
    assert train[0]["caption"] == "a red square"
    assert {train[(1, seed)]["caption"] for seed in range(20)} == {"a blue circle", "a disc"}


def test_kept_empty_captions_train_as_the_empty_prompt(tmp_path):
    source = saved_dataset(tmp_path / "saved", ["a red square", "", None, "  "])
    train, messages = loaded(DataConfig(source=str(source), resolution=16, val_fraction=0.0,
                                        empty_captions="keep"))
    assert len(train) == 4
    assert [train[i]["caption"] for i in range(4)] == ["a red square", "", "", ""]
    assert len(messages) == 1 and "3 image(s) with no caption train with the empty prompt" in messages[0]


def write_imagefolder(folder, lines: list[str]):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(folder / f"{i}.png")
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def row(i, text):
    return json.dumps({"file_name": f"{i}.png", "text": text})


@pytest.mark.parametrize("lines, message", [
    ([row(0, "a"), '{"file_name": "1.png", "text": "b"', row(2, "c")],
     r"metadata.jsonl, line 2: not valid JSON"),
    ([row(0, "a"), "[1, 2]", row(2, "c")], r"metadata.jsonl, line 2: not a JSON object"),
    ([row(0, "a"), row(1, "b"), json.dumps({"file_name": "../2.png", "text": "c"})],
     r"metadata.jsonl, line 3: file_name '../2.png' points outside the data folder"),
    ([row(0, "a"), json.dumps({"text": "b"})], r"metadata.jsonl, line 2: no 'file_name'"),
    ([row(0, "a"), row(1, 42), row(2, "c")],
     r"metadata.jsonl, line 2: the caption \('text'\) is a number, where earlier lines have a string"),
])
def test_metadata_mistakes_name_the_file_and_line(tmp_path, lines, message):
    folder = write_imagefolder(tmp_path / "data", lines)
    with pytest.raises(LdmError, match=message):
        load_splits(DataConfig(source=str(folder), resolution=16, val_fraction=0.0))


def test_a_caption_file_that_is_not_utf8_is_named(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, text in enumerate([b"a red square", "une fen\u00eatre".encode("latin-1")]):
        Image.new("RGB", (16, 16)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_bytes(text)
    with pytest.raises(LdmError, match=r"caption file .*1\.txt is not UTF-8 text"):
        load_splits(DataConfig(source=str(folder), resolution=16, val_fraction=0.0))


# ---- tag captions (data.caption_tags) --------------------------------------------------------------

TAGS = "sks dog, red collar, sitting, grass, sunny, park, smiling, close-up"


def test_shuffled_tags_keep_the_first_in_place_and_follow_the_seed():
    orders = set()
    for seed in range(20):
        varied = vary_tags(TAGS, random.Random(seed), keep=1, separator=",")
        tags = varied.split(", ")
        assert tags[0] == "sks dog" and sorted(tags) == sorted(TAGS.split(", "))
        assert varied == vary_tags(TAGS, random.Random(seed), keep=1, separator=",")  # same seed, same order
        orders.add(varied)
    assert len(orders) > 10
    assert vary_tags("a; b ;; c", random.Random(0), keep=3, separator=";") == "a; b; c"  # all kept: as written
    dropped = vary_tags(TAGS, random.Random(0), keep=2, separator=",", shuffle=False, dropout=0.5).split(", ")
    assert dropped[:2] == ["sks dog", "red collar"] and 2 < len(dropped) < 8


def test_tag_captions_change_across_epochs_and_resume_the_same(tmp_path):
    source = saved_dataset(tmp_path / "saved", [TAGS] * 2)
    cfg = DataConfig(source=str(source), resolution=16, val_fraction=0.0, batch_size=1,
                     caption_tags={"keep": 1})
    train, _ = loaded(cfg)
    sampler = ResumableShuffleSampler(len(train), seed=cfg.seed)

    def epoch(number):
        sampler.set_epoch(number)
        return {index: train[(index, seed)]["caption"] for index, seed in sampler}

    first, second = epoch(0), epoch(1)
    assert all(caption.startswith("sks dog, ") for caption in [*first.values(), *second.values()])
    assert first != second  # reshuffled every epoch
    assert epoch(1) == second  # from the seed and epoch alone: a resumed epoch draws the same
    plain, _ = loaded(DataConfig(source=str(source), resolution=16, val_fraction=0.0))
    assert plain[(0, 0)]["caption"] == TAGS


def test_tag_captions_refuse_the_latent_cache_in_one_line():
    cfg = DataConfig(source="data", caption_tags={"keep": 1})
    with pytest.raises(LdmError, match="data.caption_tags needs cache: false") as err:
        check_cacheable(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(LdmError, match="caption_tags.keep"):
        build(DataConfig, {"source": "data", "caption_tags": {"keep": -1}})
    with pytest.raises(LdmError, match="caption_tags.separator"):
        build(DataConfig, {"source": "data", "caption_tags": {"separator": ""}})
