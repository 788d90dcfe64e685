"""Shared pytest fixtures: tiny pipelines exported once per test session (see tests/tiny.py)."""

from __future__ import annotations

import pytest
import torch
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
