"""benchmarks/baselines/plain_loop.py, the peer loop both stage-2 benchmarks measure against: it builds from a
stage's config and module and takes real steps (its EMA follows the UNet), so the benchmarks cannot
rot unseen between the sessions that run them."""

from __future__ import annotations

import copy

import torch
import yaml
from diffusion_fixtures import diffusion_config

from benchmarks.baselines.plain_loop import PlainLoop, train_for
from ldm.stages.diffusion.train import build_module
from ldm.stages.registry import load_config


def test_plain_loop_trains_the_unet_and_its_ema(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    path = tmp_path / "diffusion.yaml"
    path.write_text(yaml.safe_dump(diffusion_config(tmp_path, run)))
    cfg = load_config(str(path))
    module = build_module(cfg)
    unet = copy.deepcopy(module.unet)
    before = [p.detach().clone() for p in unet.parameters()]
    loop = PlainLoop(cfg, module, unet, torch.device("cpu"))
    assert train_for(loop, seconds=0.0) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, unet.parameters()))
    assert loop.ema is not None and loop.ema.optimization_step == 1
