"""A tiny RUN for the evaluation tests: a tiny pipeline and a tiny CLIP, each written by its stage's
export function (RUN/pipeline; RUN/clip with its processor), and a 16 px shapes dataset with its
held-out split."""

from __future__ import annotations

import json
from pathlib import Path

from tiny import IMAGE_SIZE, make_tiny_pipeline, tiny_clip, tiny_tokenizer

from ldm.data.shapes.generator import make_shapes_dataset
from ldm.stages.clip.export import export as export_clip


def make_eval_run(root: Path) -> Path:
    """root/run with pipeline/ and clip/ (text_encoder/, tokenizer/ too), and root/shapes."""
    run = root / "run"
    make_tiny_pipeline(run, kind="kl")
    tokenizer = tiny_tokenizer()
    export_clip(tiny_clip(tokenizer), tokenizer, run, IMAGE_SIZE)
    make_shapes_dataset(root / "shapes", n=16, size=IMAGE_SIZE, seed=0, n_test=16)
    return run


# The documented schema of one evaluation (ldm/eval_results.py), checked key by key.
EVALUATION_KEYS = {"schema": int, "kind": str, "target": str, "settings": dict, "metrics": list, "seconds": float}
METRIC_KEYS = {"key": str, "name": str, "value": (float, type(None)), "unit": str, "better": str, "note": str}


def check_schema(item: dict) -> None:
    assert set(item) == set(EVALUATION_KEYS), sorted(item)
    for key, kind in EVALUATION_KEYS.items():
        assert isinstance(item[key], kind), (key, item[key])
    assert item["schema"] == 1
    assert item["kind"] in ("autoencoder", "diffusion", "walk")
    assert item["metrics"], "an evaluation with no figures"
    keys = [m["key"] for m in item["metrics"]]
    assert len(keys) == len(set(keys)), f"duplicate metric keys: {keys}"
    for metric in item["metrics"]:
        assert set(metric) == set(METRIC_KEYS), sorted(metric)
        for key, kind in METRIC_KEYS.items():
            assert isinstance(metric[key], kind), (key, metric)
        assert metric["better"] in ("higher", "lower", "")
    json.dumps(item, allow_nan=False)  # strictly valid JSON: no inf or nan anywhere
