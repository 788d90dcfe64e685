import json
import re

from PIL import Image

from ldm.data.shapes.generator import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    SIZES,
    held_out_prompts,
    make_shapes_dataset,
)


def read_rows(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_same_seed_gives_identical_files(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", n=40, size=32, seed=3)
    b = make_shapes_dataset(tmp_path / "b", n=40, size=32, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    c = make_shapes_dataset(tmp_path / "c", n=40, size=32, seed=4)
    assert (c / "train" / "metadata.jsonl").read_bytes() != (a / "train" / "metadata.jsonl").read_bytes()


def test_captions_match_attribute_fields(tmp_path):
    out = make_shapes_dataset(tmp_path / "s", n=300, size=32, seed=0)
    rows = read_rows(out / "train")
    assert len(rows) == 300
    for row in rows:
        text = row["text"].lower()
        assert row["colour"] in COLOURS and row["shape"] in SHAPES and row["size"] in SIZES
        assert row["position"] in POSITIONS and row["background"] in BACKGROUNDS
        # every word the caption uses for an attribute is the true one
        assert re.search(rf"\b{row['colour']} {row['shape']}\b", text)
        for vocabulary, true in ((COLOURS, {row["colour"], row["colour2"]}),
                                 (SHAPES, {row["shape"], row["shape2"]}),
                                 (BACKGROUNDS, {row["background"], row["colour"], row["colour2"]}),
                                 (POSITIONS, {row["position"], row["position2"]})):
            mentioned = {word for word in vocabulary if re.search(rf"\b{word}\b", text)}
            assert mentioned <= true, (text, mentioned, true)
        if row["num_objects"] == 2:
            assert re.search(rf"\b{row['colour2']} {row['shape2']}\b", text)
            assert row["position2"] != row["position"]
        image = Image.open(out / "train" / row["file_name"])
        assert image.size == (32, 32) and image.mode == "RGB"


def test_composition_varies_and_held_out_combinations_stay_out_of_training(tmp_path):
    out = make_shapes_dataset(tmp_path / "s", n=400, size=32, seed=1)
    train, test = read_rows(out / "train"), read_rows(out / "test")
    held = set(HELD_OUT)
    for row in train:
        assert (row["colour"], row["shape"], row["position"]) not in held
        if row["num_objects"] == 2:
            assert (row["colour2"], row["shape2"], row["position2"]) not in held
    assert {(r["colour"], r["shape"], r["position"]) for r in test} == held
    assert all(r["num_objects"] == 1 for r in test)
    # all attribute values, two-object images, and several wordings occur in training
    assert {r["colour"] for r in train} == set(COLOURS)
    assert {r["shape"] for r in train} == set(SHAPES)
    assert {r["background"] for r in train} == set(BACKGROUNDS)
    assert 0.15 < sum(r["num_objects"] == 2 for r in train) / len(train) < 0.35
    openings = {" ".join(r["text"].lower().split()[:2]) for r in train}
    assert len(openings) >= 5
    assert len(held_out_prompts()) == len(HELD_OUT)


def test_an_interrupted_run_leaves_the_earlier_dataset_whole(tmp_path, monkeypatch):
    import pytest

    from ldm.data.shapes import generator

    out = make_shapes_dataset(tmp_path / "shapes", n=8, size=16, seed=0, n_test=4)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    made = []

    def fail_on_the_fifth(*args, **kwargs):
        made.append(1)
        if len(made) == 5:
            raise KeyboardInterrupt  # Ctrl-C halfway through the new dataset's images
        return real(*args, **kwargs)

    real = generator.make_example
    monkeypatch.setattr(generator, "make_example", fail_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        make_shapes_dataset(out, n=20, size=16, seed=1, n_test=4)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]  # no temporary folder left
