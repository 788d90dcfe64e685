"""`ldm data check`: the same counts and reasons as training, previews equal to the expected decodes,
bucket and caption statistics, and a non-zero exit where training would fail."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
from image_kinds import write_image_kinds, write_mixed_aspect_folder
from PIL import Image
from tiny import tiny_tokenizer

from ldm.cli import main
from ldm.data.check import check_data
from ldm.data.config import DataConfig
from ldm.data.datamodule import load_splits

BLUE = (51, 102, 204)
LONG = " ".join(["a very long caption about a picture"] * 20)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """The image kinds with captions: two share one, one is empty, one is long."""
    folder = tmp_path_factory.mktemp("kinds")
    good, bad = write_image_kinds(folder, BLUE)
    names = sorted([*good, *bad])
    captions = {name: f"a picture called {name}" for name in names}
    captions.update({"gray.png": "a shared caption", "la.png": "a shared caption", "rgba.png": "",
                     "palette.png": LONG})
    rows = [{"file_name": name, "text": captions[name]} for name in names]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return folder, good, bad


def test_check_reports_what_training_skips_and_previews_what_it_sees(kinds, tmp_path, capsys):
    folder, good, bad = kinds
    preview = tmp_path / "preview"
    main(["data", "check", str(folder), "--buckets", "24x16", "16x24", "--background", "#3366cc",
          "--val-fraction", "0", "--preview", str(preview)])
    out = capsys.readouterr().out
    assert f"{len(good) + len(bad)} images, {len(good) - 1} usable, {len(bad) + 1} skipped" in out
    for name, reason in {**bad, "rgba.png": "no caption"}.items():
        assert f"{reason}: {folder / name}" in out
    assert f"too many pixels: {folder / 'huge.png'} is 10000x10000" in out
    assert "1 captions are repeated, over 2 images" in out
    assert "1 captions are longer and will be cut" in out
    assert "modes:" in out and "I;16 1" in out and "CMYK 1" in out
    assert "ready to train" in out

    # The same counts and reasons as the one warning of training.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_splits(DataConfig(source=str(folder), val_fraction=0.0, buckets={"sizes": [[24, 16], [16, 24]]}))
    warning = next(str(w.message) for w in caught if "skipped" in str(w.message))
    for reason, n in Counter([*bad.values(), "no caption"]).items():
        assert f"{n} {reason} (" in warning
        assert f"{reason} {n}" in out

    # Previews: each usable image, named after its file, equal to PIL's expected decode (buckets of
    # the images' own sizes: nothing resized or cropped).
    written = sorted(path.name for path in preview.glob("*.png"))
    assert written == sorted(f"{name.rsplit('.', 1)[0]}.png" for name in good if name != "rgba.png")
    for name, expected in good.items():
        if name != "rgba.png":
            shown = np.asarray(Image.open(preview / f"{name.rsplit('.', 1)[0]}.png").convert("RGB"))
            assert np.array_equal(shown, np.asarray(expected)), name


def test_bucket_assignment_and_cropping_are_reported(tmp_path):
    folder = write_mixed_aspect_folder(tmp_path / "mixed", n=24)
    square = check_data(DataConfig(source=str(folder), resolution=32))
    assert [use.size for use in square.buckets] == [(32, 32)]
    assert square.cropped > 0.15 and square.cropped_with_default_buckets < square.cropped
    bucketed = check_data(DataConfig(source=str(folder), resolution=32, buckets={}))
    assert sum(use.images for use in bucketed.buckets) == 24 and len(bucketed.buckets) == 3
    assert bucketed.cropped == pytest.approx(square.cropped_with_default_buckets)
    assert bucketed.fatal is None and bucketed.repeated  # three colours, 24 images: captions repeat


def test_tokens_counted_by_a_tokenizer(kinds, tmp_path, capsys):
    folder, _, _ = kinds
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    main(["data", "check", str(folder), "--tokenizer", str(tmp_path), "--val-fraction", "0"])
    out = capsys.readouterr().out
    assert "estimated" not in out and "tokens, median" in out


def test_exit_status_is_non_zero_where_training_would_fail(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not a png")
        (folder / f"{i}.txt").write_text("a caption")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", str(folder)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "training would fail: dataset" in captured.out and "no usable images" in captured.err
    with pytest.raises(SystemExit):
        main(["data", "check", str(folder), "--buckets", "64"])
    assert "--buckets 64: give sizes as WIDTHxHEIGHT" in capsys.readouterr().err


def test_an_option_out_of_the_data_configs_range_is_named_as_typed(tmp_path, capsys):
    # the range is the data config's (data.max_pixels); the user typed --max-pixels (found by the fuzz run)
    with pytest.raises(SystemExit):
        main(["data", "check", str(tmp_path), "--max-pixels", "483716203518"])
    assert capsys.readouterr().err.strip() == (
        "ldm data: error: --max-pixels must be between 1 and 178956970 (PIL refuses to open larger images), "
        "got 483716203518")


def test_a_preview_folder_inside_the_data_or_holding_previews_is_refused(kinds, tmp_path, capsys):
    """`--preview DIR` once replaced every image of DIR when DIR was the data folder itself."""
    folder, good, _ = kinds
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    for inside in (folder, folder / "previews"):
        with pytest.raises(SystemExit) as stop:
            main(["data", "check", str(folder), "--resolution", "16", "--preview", str(inside)])
        assert stop.value.code == 2
        assert f"--preview {inside} is inside the data ({folder.resolve()})" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before  # nothing written
    preview = tmp_path / "preview"
    main(["data", "check", str(folder), "--resolution", "16", "--val-fraction", "0", "--preview", str(preview)])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["data", "check", str(folder), "--resolution", "16", "--preview", str(preview)])
    assert f"--preview {preview} already holds results this run would replace" in capsys.readouterr().err
