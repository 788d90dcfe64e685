"""One decoding function for every image: each kind people have decodes to what PIL's own tools say
it should, the broken ones are skipped with their reason, and training sees exactly those pixels."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from image_kinds import HUGE_SIDE, write_image_kinds
from PIL import Image

from ldm.core.errors import LdmError
from ldm.core.images import to_tensor
from ldm.data.config import DataConfig
from ldm.data.datamodule import load_splits
from ldm.data.decode import (
    UndecodableImage,
    decode_image,
    inspect_image,
    read_image_file,
)
from ldm.data.labelled import load_labelled_images

BLUE = (51, 102, 204)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    good, bad = write_image_kinds(folder, BLUE)
    return folder, good, bad


def test_every_kind_decodes_to_what_pils_tools_say(kinds):
    folder, good, _ = kinds
    for name, expected in good.items():
        decoded = decode_image(folder / name, background="#3366cc")
        assert decoded.mode == "RGB", name
        assert decoded.size == expected.size, name
        assert np.array_equal(np.asarray(decoded), np.asarray(expected)), name


def test_the_three_silent_damages_are_gone(kinds):
    folder, _, _ = kinds
    sixteen = np.asarray(decode_image(folder / "sixteen.png"))
    assert 60 < sixteen.mean() < 200  # convert("RGB") clipped it to 255 everywhere
    assert np.asarray(Image.open(folder / "sixteen.png").convert("RGB")).mean() > 250  # what it was
    assert decode_image(folder / "exif6.jpg").size == (16, 24)  # upright: a quarter turn
    transparent = np.asarray(decode_image(folder / "rgba.png"))[:, 0]  # column 0 has alpha 0
    assert (transparent == 255).all()  # white by default, not the colour under the alpha
    assert (np.asarray(decode_image(folder / "rgba.png", background="black"))[:, 0] == 0).all()


def test_broken_files_raise_their_reason_before_any_pixel_is_allocated(kinds):
    folder, _, bad = kinds
    for name, reason in bad.items():
        for read in (decode_image, inspect_image):
            with pytest.raises(UndecodableImage) as caught:
                read(folder / name)
            assert caught.value.reason == reason, (name, read.__name__)
    with pytest.raises(UndecodableImage, match=f"{HUGE_SIDE}x{HUGE_SIDE}"):
        decode_image(folder / "huge.png")
    with pytest.raises(UndecodableImage, match="above data.max_pixels=100"):
        decode_image(folder / "rgba.png", max_pixels=100)
    with pytest.raises(UndecodableImage, match="file not found"):
        decode_image(folder / "nowhere.png")


def test_inspect_reads_the_upright_size_format_and_mode(kinds):
    folder, _, _ = kinds
    info = {name: inspect_image(folder / name) for name in ("exif3.jpg", "exif6.jpg", "sixteen.png", "palette.png")}
    assert (info["exif3.jpg"].width, info["exif3.jpg"].height) == (24, 16)
    assert (info["exif6.jpg"].width, info["exif6.jpg"].height) == (16, 24)
    assert info["sixteen.png"].mode == "I;16" and info["palette.png"].mode == "P"
    assert info["exif6.jpg"].format == "JPEG"


def test_a_large_jpeg_is_decoded_at_reduced_size_but_still_covers_the_target(tmp_path):
    gradient = np.linspace(0, 255, 1600, dtype=np.float32)
    pixels = np.stack([np.add.outer(gradient[:1200], gradient) / 2] * 3, axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    reduced = decode_image(tmp_path / "big.jpg", cover=(64, 64))
    assert reduced.size == (200, 150)  # 1/8: the smallest JPEG scale that covers 64x64
    full = decode_image(tmp_path / "big.jpg")
    assert full.size == (1600, 1200)
    small_from_full = np.asarray(full.resize((64, 48), Image.Resampling.BICUBIC), dtype=np.float32)
    small_from_reduced = np.asarray(reduced.resize((64, 48), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(small_from_full - small_from_reduced).mean() < 2.0


def test_command_line_images_fail_in_one_line(kinds):
    folder, _, _ = kinds
    with pytest.raises(LdmError, match="cannot read --init-image: .*truncated.png: image file is truncated"):
        read_image_file(folder / "truncated.png", "--init-image")
    with pytest.raises(LdmError, match="image not found"):
        read_image_file(folder / "nowhere.png")


def test_training_sees_the_expected_pixels_and_counts_the_skipped(kinds, tmp_path):
    folder, good, bad = kinds
    rows = [{"file_name": name, "text": f"a picture called {name}"} for name in sorted([*good, *bad])]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    # Buckets of the images' own sizes: nothing is resized, so samples are the decodes themselves.
    cfg = DataConfig(source=str(folder), val_fraction=0.0, background="#3366cc", resolution=16,
                     buckets={"sizes": [[24, 16], [16, 24]]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _ = load_splits(cfg)
    ours = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(ours) == 1
    assert f"skipped 3 image(s) of {len(rows)}" in ours[0]
    for reason in ("1 too many pixels (", "1 truncated (", "1 not an image ("):
        assert reason in ours[0]
    assert len(train) == len(good)
    for index in range(len(train)):
        sample = train[index]
        name = sample["caption"].removeprefix("a picture called ")
        assert np.array_equal(sample["pixel_values"].numpy(), to_tensor(good[name]).numpy()), name


def test_evaluation_skips_and_counts_what_training_skips(kinds):
    folder, good, bad = kinds
    rows = [{"file_name": name, "text": ""} for name in sorted([*good, *bad])]  # blank: no caption needed
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    cfg = DataConfig(source=str(folder), split="train", resolution=16, background="#3366cc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels, _ = load_labelled_images(cfg, columns=[])
    ours = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(ours) == 1 and "1 too many pixels (" in ours[0]
    assert len(pixels) == len(good)
