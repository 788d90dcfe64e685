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
