"""Training throughput of stage 2: the cached Lightning path against a plain loop that encodes.

    python scripts/benchmark_diffusion_speed.py [--config configs/diffusion/ldm_shapes.yaml] [--steps 40]

Both train the same UNet (same config, same initial weights) on the same batch size in this
process on this machine:
- ldm: `LatentDiffusion` under Lightning, reading latent moments and caption embeddings from the
  latent cache, at the config's precision (the cache is built first and not timed),
- plain: scripts/plain_loop.py, the loop a diffusers example script runs: it encodes images and
  captions at every step, all in fp32, then the same UNet update (AdamW, clipping, EMA).
The two run in turn, --rounds times; each round times --steps steps of each after --warmup steps.
A step is timed end to end, data loading included, and throughput is the batch size over the
median step time: on a shared machine, bursts of outside load lengthen some steps by tens of
percent, and the median leaves them out where a mean would not. Prints every round's figures and
then those of all rounds together (the figure to quote).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import lightning as L
import torch
from plain_loop import PlainLoop, synchronize

from ldm.stages.diffusion.train import build_datamodule, build_module
from ldm.stages.launch import resolve_precision
from ldm.stages.registry import load_config


class StepClock(L.Callback):
    """The wall time of every training step, end to end (data loading included)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        synchronize(pl_module.device)
        self.ends.append(time.perf_counter())


def cached_step_times(cfg, module, steps: int, warmup: int) -> list[float]:
    datamodule = build_datamodule(cfg, module)
    clock = StepClock()
    trainer = L.Trainer(max_steps=warmup + steps, precision=resolve_precision(cfg.train.precision),
                        gradient_clip_val=cfg.train.gradient_clip, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, accelerator=cfg.train.accelerator, devices=1,
                        callbacks=[clock])
    trainer.fit(module, datamodule=datamodule)
    return durations(clock.ends, warmup)


def plain_step_times(cfg, module, unet, steps: int, warmup: int, device: torch.device) -> list[float]:
    """The peer's loop (scripts/plain_loop.py) on `device`: the end time of each step."""
    ends = []
    for _ in PlainLoop(cfg, module, unet, device).steps():
        ends.append(time.perf_counter())
        if len(ends) == warmup + steps:
            break
    return durations(ends, warmup)


def durations(ends: list[float], warmup: int) -> list[float]:
    """Seconds each step took, from the end of the one before, leaving out the first `warmup`."""
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/diffusion/ldm_shapes.yaml")
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each, each round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each, each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. vae=runs/other/vae")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be at least 1")
    torch.set_num_threads(min(2, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as scratch:  # the cache goes here, not into the real run
        cfg = load_config(args.config, [*args.overrides, f"run_dir={scratch}"])
        module = build_module(cfg)
        plain_unet = copy.deepcopy(module.unet)  # same architecture and initial weights
        print(f"UNet {sum(p.numel() for p in module.unet.parameters()) / 1e6:.2f} M parameters, "
              f"batch {cfg.data.batch_size}, {args.rounds} x {args.steps} timed steps each, "
              f"{torch.get_num_threads()} threads")
        cached, plain = [], []
        for round_ in range(1, args.rounds + 1):
            cached += cached_step_times(cfg, module, args.steps, args.warmup)
            device = next(module.unet.parameters()).device  # where Lightning trained: the same for both
            plain += plain_step_times(cfg, module, plain_unet, args.steps, args.warmup, device)
            print(f"round {round_}: " + report(cfg, cached[-args.steps:], plain[-args.steps:]))
        print(f"all {args.rounds} rounds: " + report(cfg, cached, plain))


def report(cfg, cached: list[float], plain: list[float]) -> str:
    """Images per second of each at its median step time, and their ratio."""
    ldm_rate = cfg.data.batch_size / statistics.median(cached)
    plain_rate = cfg.data.batch_size / statistics.median(plain)
    return (f"ldm (latent cache, {resolve_precision(cfg.train.precision)}) {ldm_rate:6.1f} images/s, "
            f"plain loop (encoding every step, fp32) {plain_rate:6.1f} images/s, "
            f"speed-up {ldm_rate / plain_rate:.2f}x")


if __name__ == "__main__":
    main()
