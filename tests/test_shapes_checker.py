"""The attribute checker reads real shapes images correctly (it judges generated ones)."""

import json

import numpy as np
from PIL import Image

from ldm.data.shapes.checker import prompt_fidelity, read_image
from ldm.data.shapes.generator import make_shapes_dataset


def test_checker_reads_real_held_out_images(tmp_path):
    out = make_shapes_dataset(tmp_path / "shapes", n=8, size=32, seed=1, n_test=120)
    rows = [json.loads(line) for line in (out / "test" / "metadata.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["num_objects"] == 1]
    images = [Image.open(out / "test" / row["file_name"]) for row in rows]
    scores = prompt_fidelity(images, rows)
    assert scores["colour_and_shape"] >= 0.98, scores
    assert scores["position"] >= 0.98, scores


def test_checker_finds_no_object_in_a_blank_image():
    blank = np.full((32, 32, 3), 128, dtype=np.uint8)
    assert read_image(blank).colour is None
    assert prompt_fidelity([blank], [{"colour": "red", "shape": "circle"}])["colour_and_shape"] == 0.0


def test_a_new_colour_is_drawn_alone_and_read_back(tmp_path):
    """`ldm data shapes --colours pink`: only pink, named in the captions, and the checker reads it."""
    from ldm.cli import main

    main(["data", "shapes", str(tmp_path / "pink"), "--n", "60", "--n-test", "20", "--seed", "2",
          "--colours", "pink"])
    for split in ("train", "test"):
        metadata = tmp_path / "pink" / split / "metadata.jsonl"
        rows = [json.loads(line) for line in metadata.read_text().splitlines()]
        assert {row["colour"] for row in rows} == {"pink"}
        assert all("pink" in row["text"].lower() for row in rows)
    rows = [row for row in rows if row["num_objects"] == 1]
    images = [Image.open(tmp_path / "pink" / "test" / row["file_name"]) for row in rows]
    assert prompt_fidelity(images, rows)["colour_and_shape"] >= 0.95
