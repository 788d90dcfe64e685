"""Shared pytest fixtures: tiny pipelines exported once per test session (see tests/tiny.py), and the
tiny stage-1 run that the diffusion tests train on, built once per session."""

from __future__ import annotations

import os
import shutil

# No test may reach the network: a drawn or mistyped name that looks like a hub id ("26", "a/b")
# fails at once instead of retrying a download (set before huggingface_hub and datasets are imported).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
import torch
from diffusion_fixtures import build_stage1_run
from tiny import make_tiny_pipeline


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    """The test machines have two cores; more threads only fight each other."""
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def kl_pipeline_path(tmp_path_factory):
    """A tiny KL pipeline folder (16 px, f=2), read-only for the tests that share it."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("kl"), kind="kl")


@pytest.fixture(scope="session")
def vq_pipeline_path(tmp_path_factory):
    """A tiny VQ pipeline folder (16 px, f=2), read-only for the tests that share it."""
    return make_tiny_pipeline(tmp_path_factory.mktemp("vq"), kind="vq")


@pytest.fixture(scope="session")
def make_stage1_run(tmp_path_factory):
    """make_stage1_run(root, kind="kl", n_images=24) -> root/run (vae/, text_encoder/, tokenizer/), with
    root/shapes beside it. Each kind and size is built once per session, then copied for each test,
    which writes its own outputs into the run."""
    built = {}

    def make(root, kind: str = "kl", n_images: int = 24):
        key = (kind, n_images)
        if key not in built:
            built[key] = build_stage1_run(tmp_path_factory.mktemp(f"stage1-{kind}-{n_images}"), kind, n_images)
        template = built[key].parent
        for part in ("run", "shapes"):
            shutil.copytree(template / part, root / part)
        return root / "run"

    return make
