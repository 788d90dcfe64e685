"""Training throughput of stage 2: the cached Lightning path against a plain loop that encodes.

    python -m benchmarks diffusion-speed [--config configs/diffusion/ldm_shapes.yaml] [--steps 40] [overrides]
    python -m benchmarks diffusion-speed --config configs/diffusion/ldm_kl_f8_256.yaml \
        --random-stage1 kl_f8_256.yaml data.source=DATA train.precision=bf16-mixed     # on a GPU

Both train the same UNet (same config, same initial weights) on the same batch size in this
process on this machine:
- ldm: `LatentDiffusion` under Lightning, reading latent moments and caption embeddings from the
  latent cache, at the config's precision (the cache is built first and not timed),
- plain: benchmarks/baselines/plain_loop.py, the loop a diffusers example script runs: it encodes
  images and captions at every step, all in fp32, then the same UNet update (AdamW, clipping, EMA).
The two run in turn, --rounds times; each round times --steps steps of each after --warmup steps.
A step is timed end to end, data loading included, and throughput is the batch size over the
median step time: on a shared machine, bursts of outside load lengthen some steps by tens of
percent, and the median leaves them out where a mean would not. Prints every round's figures and
then those of all rounds together (the figure to quote).

MFU (model FLOPs utilisation): the UNet's training FLOPs an image (forward and backward, as torch's
FlopCounterMode counts them) times the images a second, over the GPU's dense bf16 peak (known for
H100, H200, A100, L40S and L4; --peak-tflops for another device, or to report it on a CPU). Both sides
do the same UNet work an image, so their MFUs differ as their throughputs do.

--random-stage1 AUTOENCODER_CONFIG: no trained stage 1 needed: the autoencoder of
configs/autoencoder/AUTOENCODER_CONFIG and a CLIP ViT-L/14-sized text encoder (768 wide, 12 layers),
random (speed does not depend on the weights), stand in for `vae` and `text_encoder`.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import random_models
from benchmarks.baselines.plain_loop import PlainLoop
from benchmarks.harness import add_overrides, durations, synchronize
from ldm.stages.diffusion.train import build_datamodule, build_module
from ldm.stages.launch import resolve_precision
from ldm.stages.registry import load_config

# dense bf16 tensor-core peaks in TFLOP/s, by a part of the device's name (the first that matches)
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="configs/diffusion/ldm_shapes.yaml")
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each, each round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each, each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--random-stage1", metavar="AUTOENCODER_CONFIG",
                        help="random stage-1 models: this autoencoder config's and a ViT-L/14-sized text encoder")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: known GPUs)")
    add_overrides(parser, "vae=runs/other/vae")


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
    """The peer's loop (benchmarks/baselines/plain_loop.py) on `device`: each timed step's seconds."""
    ends = []
    for _ in PlainLoop(cfg, module, unet, device).steps():
        ends.append(time.perf_counter())
        if len(ends) == warmup + steps:
            break
    return durations(ends, warmup)


def unet_training_flops(module) -> int:
    """FLOPs of one image's UNet forward and backward (the work both sides do for it)."""
    unet, tokens = module.unet, module.conditioner.tokenizer.model_max_length
    side, device = unet.config.sample_size, next(unet.parameters()).device
    latents = torch.randn(1, unet.config.in_channels, side, side, device=device)
    text = torch.randn(1, tokens, unet.config.cross_attention_dim, device=device)
    with FlopCounterMode(display=False) as counter:
        unet(latents, torch.tensor([500], device=device), encoder_hidden_states=text).sample.square().mean().backward()
    unet.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_flops(given_tflops: float | None) -> float | None:
    """FLOP/s that MFU is measured against: --peak-tflops, else the GPU's dense bf16 peak if known."""
    if given_tflops:
        return given_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for part, tflops in PEAK_BF16_TFLOPS if part in name), None)


def rates(cfg, cached: list[float], plain: list[float]) -> dict[str, float]:
    """Images per second of each at its median step time."""
    return {"ldm": cfg.data.batch_size / statistics.median(cached),
            "plain": cfg.data.batch_size / statistics.median(plain)}


def report(cfg, rate: dict[str, float], mfu: dict[str, float] | None) -> str:
    """Both throughputs (and MFUs), and their ratio."""
    share = {name: f", MFU {100 * mfu[name]:.1f}%" if mfu else "" for name in rate}
    return (f"ldm (latent cache, {resolve_precision(cfg.train.precision)}) {rate['ldm']:6.1f} images/s{share['ldm']}, "
            f"plain loop (encoding every step, fp32) {rate['plain']:6.1f} images/s{share['plain']}, "
            f"speed-up {rate['ldm'] / rate['plain']:.2f}x")


def stage1_overrides(args, scratch: Path) -> list[str]:
    """vae= and text_encoder= of random stage-1 models (--random-stage1), else nothing."""
    if not args.random_stage1:
        return []
    run = random_models.stage1(scratch / "stage1", args.random_stage1, random_models.VIT_L_TEXT,
                               random_models.shapes_captions(2000))
    return [f"vae={run / 'vae'}", f"text_encoder={run}"]


def measure(args, cfg) -> dict:
    module = build_module(cfg)
    plain_unet = copy.deepcopy(module.unet)  # same architecture and initial weights
    flops, peak = unet_training_flops(module), peak_flops(args.peak_tflops)
    print(f"UNet {sum(p.numel() for p in module.unet.parameters()) / 1e6:.2f} M parameters, "
          f"{flops / 1e9:.2f} GFLOP an image a training step, batch {cfg.data.batch_size}, "
          f"{args.rounds} x {args.steps} timed steps each, {torch.get_num_threads()} threads")
    cached, plain = [], []
    for round_ in range(1, args.rounds + 1):
        cached += cached_step_times(cfg, module, args.steps, args.warmup)
        device = next(module.unet.parameters()).device  # where Lightning trained: the same for both
        plain += plain_step_times(cfg, module, plain_unet, args.steps, args.warmup, device)
        rate = rates(cfg, cached[-args.steps:], plain[-args.steps:])
        print(f"round {round_}: " + report(cfg, rate, peak and {k: v * flops / peak for k, v in rate.items()}))
    rate = rates(cfg, cached, plain)
    mfu = peak and {name: value * flops / peak for name, value in rate.items()}
    print(f"all {args.rounds} rounds: " + report(cfg, rate, mfu))
    return {"images_per_second": rate, "speed_up": rate["ldm"] / rate["plain"], "mfu": mfu,
            "unet_gflop_per_image": flops / 1e9, "peak_tflops": peak and peak / 1e12,
            "batch": cfg.data.batch_size, "precision": resolve_precision(cfg.train.precision)}


def run(args) -> dict:
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        raise SystemExit("--warmup, --steps and --rounds must be at least 1")
    with tempfile.TemporaryDirectory() as scratch:  # the cache goes here, not into the real run
        overrides = [*stage1_overrides(args, Path(scratch)), *args.overrides, f"run_dir={scratch}"]
        return measure(args, load_config(args.config, overrides))
