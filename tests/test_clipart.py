"""The clip-art recipe: captions from category and title with authors' names dropped, a held-out
split, and configs that load (the data itself is `apt-get install openclipart-png`: not needed here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ldm.stages.registry import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_clipart_data.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_clipart_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# openclipart's names: title_author_NN, cut at about 24 characters; some unsigned.
NAMES = ["animals/birds/owl_nicu_buculei_01.png", "food/fruit/apple_nicu_buculei_02.png",
         "tools/hammer_nicu_buculei_01.png", "people/dancing_couple_nicu_bucu_01.png",
         "animals/mammals/big_cats/tiger_dan_gerhards_01.png", "science/venus_dan_gerhards_01.png",
         "geography/mount_hood_dan_gerhards_01.png", "shapes/stars/star_32pt05step.png",
         "animals/bugs/bee1_01.png", "office/red_stapler_01.png"]


def test_captions_keep_title_and_categories_and_drop_authors():
    script = load_script()
    files = [Path(name) for name in NAMES]
    authors = script.learn_authors(files)
    assert "nicu_buculei" in authors and "dan_gerhards" in authors
    captions = {name: script.caption(Path(name), authors) for name in NAMES}
    assert captions["animals/mammals/big_cats/tiger_dan_gerhards_01.png"] == "tiger, big cats, mammals, animals"
    assert captions["people/dancing_couple_nicu_bucu_01.png"] == "dancing couple, people"  # a name cut short
    assert captions["shapes/stars/star_32pt05step.png"] == "star, stars, shapes"
    assert captions["animals/bugs/bee1_01.png"] == "bee, bugs, animals"
    assert captions["office/red_stapler_01.png"] == "red stapler, office"  # "stapler" ends one name only


def test_the_script_writes_an_imagefolder_with_a_held_out_split(tmp_path):
    source = tmp_path / "png"
    for name in NAMES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (30, 20), (200, 0, 0, 128)).save(source / name)
    out = tmp_path / "clipart"
    result = subprocess.run([sys.executable, str(SCRIPT), str(out), "--source", str(source), "--test-fraction",
                             "0.2"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    rows = {split: [json.loads(line) for line in (out / split / "metadata.jsonl").read_text().splitlines()]
            for split in ("train", "test")}
    assert len(rows["train"]) == 8 and len(rows["test"]) == 2
    for split, split_rows in rows.items():
        for row in split_rows:
            assert (out / split / row["file_name"]).is_file()
            assert "nicu" not in row["text"] and "gerhards" not in row["text"]


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*/*_clipart64.yaml")), ids=lambda p: p.name)
def test_clipart_configs_load(config):
    cfg = load_config(config)
    assert cfg.data.resolution == 64 and cfg.data.max_pixels == 16777216
    assert cfg.train.max_minutes > 0  # planned to a time budget, as measured (docs/benchmarks.md)
