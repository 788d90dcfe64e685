"""The clip-art recipe (`ldm data clipart`, ldm/data/clipart.py): captions from category and title with
authors' names dropped, a held-out split written whole or not at all, and configs that load (the data
itself is `apt-get install openclipart-png`: not needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ldm.cli import main
from ldm.data import clipart
from ldm.stages.registry import load_config

ROOT = Path(__file__).resolve().parents[1]

# openclipart's names: title_author_NN, cut at about 24 characters; some unsigned.
NAMES = ["animals/birds/owl_nicu_buculei_01.png", "food/fruit/apple_nicu_buculei_02.png",
         "tools/hammer_nicu_buculei_01.png", "people/dancing_couple_nicu_bucu_01.png",
         "animals/mammals/big_cats/tiger_dan_gerhards_01.png", "science/venus_dan_gerhards_01.png",
         "geography/mount_hood_dan_gerhards_01.png", "shapes/stars/star_32pt05step.png",
         "animals/bugs/bee1_01.png", "office/red_stapler_01.png"]


def test_captions_keep_title_and_categories_and_drop_authors():
    files = [Path(name) for name in NAMES]
    authors = clipart.learn_authors(files)
    assert "nicu_buculei" in authors and "dan_gerhards" in authors
    captions = {name: clipart.caption(Path(name), authors) for name in NAMES}
    assert captions["animals/mammals/big_cats/tiger_dan_gerhards_01.png"] == "tiger, big cats, mammals, animals"
    assert captions["people/dancing_couple_nicu_bucu_01.png"] == "dancing couple, people"  # a name cut short
    assert captions["shapes/stars/star_32pt05step.png"] == "star, stars, shapes"
    assert captions["animals/bugs/bee1_01.png"] == "bee, bugs, animals"
    assert captions["office/red_stapler_01.png"] == "red stapler, office"  # "stapler" ends one name only


def clipart_source(root: Path) -> Path:
    source = root / "png"
    for name in NAMES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (30, 20), (200, 0, 0, 128)).save(source / name)
    return source


def test_ldm_data_clipart_writes_an_imagefolder_with_a_held_out_split(tmp_path, capsys):
    out = tmp_path / "clipart"
    main(["data", "clipart", str(out), "--source", str(clipart_source(tmp_path)), "--test-fraction", "0.2"])
    assert "wrote 8 training and 2 held-out images" in capsys.readouterr().out
    rows = {split: [json.loads(line) for line in (out / split / "metadata.jsonl").read_text().splitlines()]
            for split in ("train", "test")}
    assert len(rows["train"]) == 8 and len(rows["test"]) == 2
    for split, split_rows in rows.items():
        for row in split_rows:
            assert (out / split / row["file_name"]).is_file()
            assert "nicu" not in row["text"] and "gerhards" not in row["text"]


def test_ldm_data_clipart_writes_whole_or_nothing(tmp_path, monkeypatch, capsys):
    source, out = clipart_source(tmp_path), tmp_path / "clipart"
    copied = []

    def copy_then_fail(src, dst):  # a disk that fills up after a few files
        if len(copied) == 4:
            raise OSError(28, "No space left on device")
        copied.append(dst)
        return Image.open(src).save(dst)

    monkeypatch.setattr(clipart.shutil, "copyfile", copy_then_fail)
    with pytest.raises(SystemExit) as exit_:
        main(["data", "clipart", str(out), "--source", str(source)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err
    assert len(copied) == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["png"]  # no OUT, no hidden folder


@pytest.mark.parametrize("args, named", [(["--source", "/no/such/png"], "/no/such/png"),
                                         (["--test-fraction", "1.5"], "--test-fraction")])
def test_ldm_data_clipart_refuses_in_one_line(tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "clipart", str(tmp_path / "clipart"), *args])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and named in err
    assert not (tmp_path / "clipart").exists()


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*/*_clipart64.yaml")), ids=lambda p: p.name)
def test_clipart_configs_load(config):
    cfg = load_config(config)
    assert cfg.data.resolution == 64 and cfg.data.max_pixels == 16777216
    assert cfg.train.max_minutes > 0  # planned to a time budget, as measured (docs/benchmarks.md)
