"""The fixtures the fine-tuning tests share (adapters, loggers, prior preservation): a tiny base
pipeline to start from and a small shapes dataset to fine-tune on, made once a test module.
Import both into a test module (`base_fixture, shapes_fixture`) and take `base` and `shapes` as arguments."""

from __future__ import annotations

import pytest
from test_finetune import make_base
from tiny import IMAGE_SIZE

from ldm.data.shapes.generator import make_shapes_dataset


@pytest.fixture(scope="module", name="base")
def base_fixture(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("base") / "pipeline")


@pytest.fixture(scope="module", name="shapes")
def shapes_fixture(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=16, size=IMAGE_SIZE, seed=0, n_test=4)
