"""What the stage-2 benchmarks share: the shapes stage-2 config on a quickstart's stage-1 models and
data, ldm trained on it, and the figures `ldm evaluate diffusion` gives an exported pipeline."""

from __future__ import annotations

from pathlib import Path

from ldm.apps.evaluate import evaluate_diffusion
from ldm.core.config import packaged_configs
from ldm.stages.registry import load_config, train_stage

SHAPES = packaged_configs() / "diffusion" / "ldm_shapes.yaml"


def quickstart_config(q: Path, run_dir: Path, minutes: float, overrides: list[str] = ()):
    """configs/diffusion/ldm_shapes.yaml on quickstart folder `q`'s vae/, text_encoder/ and data/,
    into `run_dir`, planned to `minutes`, without sample grids; `overrides` last."""
    return load_config(SHAPES, [f"run_dir={run_dir}", f"vae={q / 'vae'}", f"text_encoder={q}",
                                f"data.source={q / 'data'}", f"train.max_minutes={minutes}",
                                "samples.prompts=[]", *overrides])


def train_ldm(cfg) -> tuple[Path, int]:
    """`ldm train` of `cfg`: (its exported pipeline, the steps it took)."""
    trained = train_stage(cfg)
    return trained.export, trained.trainer.global_step


def judge(q: Path, pipeline: Path, n: int, guidance: float, samples: Path) -> dict[str, float]:
    """The quickstart's evaluation of `pipeline`: the held-out prompts, n seeds each, 20 steps, the
    run's CLIP for FID; every figure by its key (prompt_fidelity, fid_clip, sharpness, ...)."""
    result = evaluate_diffusion(str(pipeline), str(q / "data"), clip=str(q / "clip"), n=n, guidance=guidance,
                                samples=samples)
    return {metric.key: float(metric.value) for metric in result.metrics}
