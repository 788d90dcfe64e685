"""Train each autoencoder kind within a time budget and print what it reaches.

    ldm data shapes data/shapes --n 10000 --size 32 --seed 0
    python -m benchmarks autoencoder                       # kl and vq, 5 minutes each
    python -m benchmarks autoencoder --kinds vq --minutes 2 --set train.max_steps=800

For each kind it trains configs/autoencoder/<kind>_f4_shapes.yaml (capped at --minutes of training)
into a fresh run folder, then reloads the export RUN/vae and measures, on the run's held-out
validation split (data.val_fraction): PSNR, SSIM and, for VQ, codebook usage and perplexity. It
prints the steps trained, the measured steps per second, and whether the issue's targets are met.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import add_overrides
from ldm.components.autoencoder import load_vae, reconstruct
from ldm.data.datamodule import collate, load_splits
from ldm.metrics.image_quality import psnr, ssim
from ldm.stages.autoencoder.codebook import perplexity, usage
from ldm.stages.registry import load_config, train_stage

TARGETS = {"kl": {"psnr": 31.0}, "vq": {"psnr": 27.0, "codebook_usage": 0.60}}


def add_arguments(parser) -> None:
    parser.add_argument("--kinds", nargs="+", default=["kl", "vq"], choices=["kl", "vq"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per kind")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    add_overrides(parser, "data.source=Q/data data.batch_size=8", option="--set")


@torch.no_grad()
def validate(vae_path: Path, cfg) -> dict:
    vae = load_vae(vae_path)
    _, val = load_splits(cfg.data)
    loader = torch.utils.data.DataLoader(val, batch_size=64, collate_fn=collate)
    psnrs, ssims, counts = [], [], None
    for batch in loader:
        pixels = batch["pixel_values"]
        rec, indices = reconstruct(vae, pixels)
        psnrs.append(psnr(rec, pixels))
        ssims.append(ssim(rec, pixels))
        if indices is not None:
            found = torch.bincount(indices, minlength=vae.config.num_vq_embeddings)
            counts = found if counts is None else counts + found
    result = {"images": len(val), "psnr": torch.cat(psnrs).mean().item(), "ssim": torch.cat(ssims).mean().item(),
              "scaling_factor": vae.config.scaling_factor}
    if counts is not None:
        result.update(codebook_usage=usage(counts), codebook_perplexity=perplexity(counts))
    return result


def train_kind(kind: str, minutes: float, overrides: list[str], run_root: Path) -> dict:
    config = Path(f"configs/autoencoder/{kind}_f4_shapes.yaml")
    cfg = load_config(config, [f"run_dir={run_root / kind}", f"train.max_minutes={minutes}", *overrides])
    start = time.perf_counter()
    vae_path = train_stage(cfg).export
    seconds = time.perf_counter() - start
    state = torch.load(cfg.checkpoint_dir / "last.ckpt", map_location="cpu", weights_only=True)
    steps = state["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
    result = {"kind": kind, "steps": steps, "seconds": round(seconds, 1), "steps_per_second": steps / seconds,
              **validate(vae_path, cfg)}
    result["targets_met"] = all(result[k] >= v for k, v in TARGETS[kind].items())
    return result


def run(args) -> dict:
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ae-bench-"))
    results = [train_kind(kind, args.minutes, args.overrides, root) for kind in args.kinds]
    print()
    for r in results:
        extra = (f"  codebook usage {100 * r['codebook_usage']:.0f}%  perplexity {r['codebook_perplexity']:.0f}"
                 if "codebook_usage" in r else "")
        print(f"{r['kind']}: {r['steps']} steps in {r['seconds']:.0f} s ({r['steps_per_second']:.2f} steps/s)  "
              f"PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}{extra}  targets met: {r['targets_met']}")
    print(json.dumps(results, indent=1))
    print(f"runs in {root}")
    return {"kinds": results, "runs": str(root)}
