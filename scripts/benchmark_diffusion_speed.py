"""Training throughput of stage 2: the cached Lightning path against a plain loop that encodes.

    python scripts/benchmark_diffusion_speed.py [--config configs/diffusion/ldm_shapes.yaml] [--steps 40]

Both train the same UNet (same config, same initial weights) on the same batch size, one after the
other in this process on this machine:
- ldm: `LatentDiffusion` under Lightning, reading latent moments and caption embeddings from the
  latent cache, at the config's precision (the cache is built first and not timed),
- plain: a hand loop over images and captions that runs the autoencoder and the text encoder at
  every step, all in fp32, then the same UNet step (AdamW, MSE on the noise).
Prints images per second of each (after --warmup steps) and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F

from ldm.data.datamodule import ImageCaptionDataModule
from ldm.models.diffusion import build_datamodule, build_module
from ldm.stages import load_config
from ldm.training import resolve_precision
from ldm.vae import encode


class Stopwatch(L.Callback):
    """Wall time from the start of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        synchronize(pl_module.device)
        self.end = time.perf_counter()


def cached_throughput(cfg, module, steps: int, warmup: int) -> float:
    datamodule = build_datamodule(cfg, module)
    stopwatch = Stopwatch(warmup)
    trainer = L.Trainer(max_steps=steps, precision=resolve_precision(cfg.train.precision),
                        gradient_clip_val=cfg.train.gradient_clip, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                        enable_model_summary=False, accelerator=cfg.train.accelerator, devices=1,
                        callbacks=[stopwatch])
    trainer.fit(module, datamodule=datamodule)
    return cfg.data.batch_size * (steps - warmup) / (stopwatch.end - stopwatch.start)


def plain_throughput(cfg, module, unet, steps: int, warmup: int, device: torch.device) -> float:
    """The loop a diffusers training script runs without a cache, in fp32, on `device`."""
    vae, text_encoder = module.autoencoder.vae.to(device), module.conditioner.text_encoder.to(device)
    unet = unet.to(device)
    tokenizer, scheduler = module.conditioner.tokenizer, module.noise_scheduler
    datamodule = ImageCaptionDataModule(cfg.data)
    datamodule.setup()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.train.lr)
    unet.train()
    done, start = 0, None
    while done < steps:
        for batch in datamodule.train_dataloader():
            if done == warmup:
                synchronize(device)
                start = time.perf_counter()
            with torch.no_grad():
                latents = encode(vae, batch["pixel_values"].to(device), sample=True)
                ids = tokenizer(batch["caption"], padding="max_length", truncation=True,
                                max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
                embeddings = text_encoder(ids.to(device)).last_hidden_state
            noise = torch.randn_like(latents)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
            prediction = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=embeddings).sample
            loss = F.mse_loss(prediction, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    synchronize(device)
    return cfg.data.batch_size * (steps - warmup) / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock measures it (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/diffusion/ldm_shapes.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. vae=runs/other/vae")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as scratch:  # the cache goes here, not into the real run
        cfg = load_config(args.config, [*args.overrides, f"run_dir={scratch}"])
        module = build_module(cfg)
        plain_unet = copy.deepcopy(module.unet)  # same architecture and initial weights
        print(f"UNet {sum(p.numel() for p in module.unet.parameters()) / 1e6:.2f} M parameters, "
              f"batch {cfg.data.batch_size}, {args.steps - args.warmup} timed steps each, "
              f"{torch.get_num_threads()} threads")
        ldm_rate = cached_throughput(cfg, module, args.steps, args.warmup)
        print(f"ldm (latent cache, {resolve_precision(cfg.train.precision)}): {ldm_rate:7.1f} images/s")
        device = next(module.unet.parameters()).device  # where Lightning trained: the same for both
        plain_rate = plain_throughput(cfg, module, plain_unet, args.steps, args.warmup, device)
        print(f"plain loop (encoding every step, fp32): {plain_rate:7.1f} images/s")
        print(f"speed-up: {ldm_rate / plain_rate:.2f}x")


if __name__ == "__main__":
    main()
