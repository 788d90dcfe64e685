"""Stage 2 variants for M minutes on a quickstart's stage-1 models, judged at guidance 1 and 4.

    python scripts/benchmark_stage2_variants.py Q NAME MINUTES [plain] [config overrides ...]

Trains configs/diffusion/ldm_shapes.yaml (or, with `plain`, scripts/plain_loop.py) for MINUTES into
/tmp/exp/NAME, then scores 8 held-out prompts x 8 seeds at guidance 1 and 4 (prompt fidelity, FID on
the run's CLIP features, edge sharpness); appends a line to /tmp/exp/results.jsonl. The table of
docs/benchmarks.md (session 7, "Stage 2 side by side") was measured with it."""

import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ldm.apps.evaluate import evaluate_diffusion
from ldm.core.config import packaged_configs
from ldm.stages.registry import load_config, train_stage


def main():
    q, name, minutes, *overrides = sys.argv[1:]
    torch.set_num_threads(2)
    out = Path("/tmp/exp") / name
    plain = "plain" in overrides
    overrides = [o for o in overrides if o != "plain"]
    ov = [
        f"run_dir={out}",
        f"vae={q}/vae",
        f"text_encoder={q}",
        f"data.source={q}/data",
        f"train.max_minutes={minutes}",
        "samples.prompts=[]",
        "train.max_steps=100000",
        *overrides,
    ]
    cfg = load_config(str(packaged_configs() / "diffusion" / "ldm_shapes.yaml"), ov)
    t = time.perf_counter()
    if plain:
        import lightning as L
        from plain_loop import PlainLoop, train_for

        from ldm.sampling.pipeline_io import export_pipeline
        from ldm.stages.diffusion.train import build_module
        from ldm.stages.diffusion.validation_grid import inference_scheduler

        L.seed_everything(cfg.train.seed, verbose=False)
        module = build_module(cfg)
        loop = PlainLoop(cfg, module, copy.deepcopy(module.unet), torch.device("cpu"))
        steps = train_for(loop, float(minutes) * 60)
        loop.ema.copy_to(loop.unet.parameters())
        pipe = export_pipeline(
            out / "pipeline",
            vae=module.autoencoder.vae,
            text_encoder=module.conditioner.text_encoder,
            tokenizer=module.conditioner.tokenizer,
            unet=loop.unet.eval(),
            scheduler=inference_scheduler(module.noise_scheduler),
        )
    else:
        st = train_stage(cfg)
        steps, pipe = st.trainer.global_step, st.export
    train_s = time.perf_counter() - t
    res = {"name": name, "steps": steps, "train_s": round(train_s, 1)}
    for g in (1.0, 4.0):
        ev = evaluate_diffusion(
            str(pipe), f"{q}/data", clip=f"{q}/clip", n=8, guidance=g, samples=out / f"samples_g{g:g}"
        )
        m = {x.key: x.value for x in ev.metrics}
        res[f"g{g:g}"] = {
            k: round(m[k], 4)
            for k in m
            if k in ("prompt_fidelity", "fid_clip", "colour", "shape", "sharpness") or k.startswith("fidelity")
        }
    print("RESULT", json.dumps(res), flush=True)
    with open("/tmp/exp/results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


main()
