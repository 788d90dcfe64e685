"""Quality in the same time: stage 2 trained by ldm against the plain diffusers loop, on the same data.

    python scripts/benchmark_diffusion_peer.py --config configs/diffusion/ldm_clipart64.yaml --minutes 10 \
        run_dir=runs/clipart vae=runs/clipart/vae text_encoder=runs/clipart data.source=data/clipart

Both start from the same UNet (same config, same initial weights) with the same frozen autoencoder and
text encoder (stage 1 and 1b must be trained first):
- ldm: `ldm train` of the config, capped at --minutes of wall time (the latent cache's build counts),
- plain: scripts/plain_loop.py (encoding every step, fp32) for the same wall time ldm took.
Each is then exported as a pipeline (EMA weights) and evaluated with `ldm evaluate diffusion` against
the held-out split (--split): CLIP score with the run's own CLIP and FID on its image features, the
real images' own figures beside them. Prints a table; the pipelines and their samples are kept in
RUN/peer/ to look at.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import lightning as L
import torch
from plain_loop import PlainLoop, train_for

from ldm.apps.evaluate import evaluate_diffusion
from ldm.metrics.results import format_table
from ldm.sampling.pipeline_io import export_pipeline
from ldm.stages.diffusion.train import build_module
from ldm.stages.diffusion.validation_grid import inference_scheduler
from ldm.stages.registry import load_config, train_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/diffusion/ldm_clipart64.yaml")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of each (default 10)")
    parser.add_argument("--split", default="test", help="held-out split to compare with (default test)")
    parser.add_argument("--n", type=int, default=4, help="images per prompt (default 4)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("overrides", nargs="*", help="config overrides: run_dir=..., vae=..., text_encoder=...")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    cfg = load_config(args.config, [*args.overrides, f"train.max_minutes={args.minutes}",
                                    "train.max_steps=1000000", "samples.prompts=[]"])
    peer_dir = Path(cfg.run_dir) / "peer"
    start = time.perf_counter()
    ours = train_stage(cfg)
    seconds = time.perf_counter() - start
    ldm_steps = ours.trainer.global_step
    print(f"ldm: {ldm_steps} steps in {seconds / 60:.1f} min (cache and export included)")

    L.seed_everything(cfg.train.seed, verbose=False)  # as `ldm train` seeds: the same initial UNet
    module = build_module(cfg)
    loop = PlainLoop(cfg, module, copy.deepcopy(module.unet), torch.device("cpu"))
    plain_steps = train_for(loop, seconds)
    print(f"plain loop: {plain_steps} steps in the same {seconds / 60:.1f} min")
    if loop.ema is not None:
        loop.ema.copy_to(loop.unet.parameters())
    plain_pipeline = export_pipeline(peer_dir / "plain_pipeline", vae=module.autoencoder.vae,
                                     text_encoder=module.conditioner.text_encoder,
                                     tokenizer=module.conditioner.tokenizer, unet=loop.unet.eval(),
                                     scheduler=inference_scheduler(module.noise_scheduler))

    clip = Path(cfg.text_encoder) / "clip"
    results = []
    for name, pipeline in (("ldm", ours.export), ("plain loop", plain_pipeline)):
        result = evaluate_diffusion(str(pipeline), cfg.data.source, clip=str(clip), split=args.split, n=args.n,
                                    steps=args.steps, guidance=args.guidance,
                                    samples=peer_dir / f"samples-{name.replace(' ', '-')}")
        result.kind = f"{name} ({ldm_steps if name == 'ldm' else plain_steps} steps)"
        results.append(result)
    print(format_table(results))


if __name__ == "__main__":
    main()
