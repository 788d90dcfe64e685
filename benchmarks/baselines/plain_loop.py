"""The peer that stage 2 is measured against: the training loop a diffusers example script runs.

A hand loop over images and captions that runs the autoencoder and the text encoder at every step
(no latent cache), all in fp32, then the UNet update with the config's AdamW (learning rate, weight
decay), gradient clipping and EMA, so that a comparison shows what ldm's training path buys, not a
feature the peer leaves out (it has no caption dropout, min-SNR weighting or noise offset, as
diffusers' train_text_to_image.py has none by default). The diffusion-speed benchmark times its steps;
diffusion-peer, quality-per-minute and stage2-variants train it for a time (`train_and_export`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from benchmarks.harness import synchronize
from ldm.components.autoencoder import encode
from ldm.data.datamodule import ImageCaptionDataModule
from ldm.sampling.pipeline_io import export_pipeline
from ldm.sampling.samplers import inference_scheduler
from ldm.stages.diffusion.parts import build_ema
from ldm.stages.diffusion.train import build_module


class PlainLoop:
    """`unet` trained by the peer's loop on `device`; `module` lends its frozen autoencoder, text
    encoder, tokenizer and noise schedule. `steps()` yields each step's loss; the caller stops it."""

    def __init__(self, cfg, module, unet, device: torch.device):
        self.cfg, self.device = cfg, device
        self.vae, self.text_encoder = module.autoencoder.vae.to(device), module.conditioner.text_encoder.to(device)
        self.tokenizer, self.scheduler = module.conditioner.tokenizer, module.noise_scheduler
        self.unet = unet.to(device)
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.ema = build_ema(cfg.ema, unet.parameters())

    def steps(self) -> Iterator[float]:
        datamodule = ImageCaptionDataModule(self.cfg.data)
        datamodule.setup()
        self.unet.train()
        while True:
            for batch in datamodule.train_dataloader():
                yield self.step(batch)

    def step(self, batch: dict) -> float:
        device, scheduler, tokenizer = self.device, self.scheduler, self.tokenizer
        with torch.no_grad():
            latents = encode(self.vae, batch["pixel_values"].to(device), sample=True)
            ids = tokenizer(batch["caption"], padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
            embeddings = self.text_encoder(ids.to(device)).last_hidden_state
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
        prediction = self.unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=embeddings).sample
        loss = F.mse_loss(prediction, target)
        loss.backward()
        if self.cfg.train.gradient_clip:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.cfg.train.gradient_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        synchronize(device)
        return loss.item()


def train_for(loop: PlainLoop, seconds: float) -> int:
    """Run the loop for `seconds` of wall time; returns the number of steps."""
    start, steps = time.perf_counter(), 0
    for _ in loop.steps():
        steps += 1
        if time.perf_counter() - start >= seconds:
            return steps
    return steps


def train_and_export(cfg, seconds: float, out: Path) -> tuple[Path, int]:
    """The peer trained on the CPU for `seconds` from the UNet `ldm train` would start from (the
    config's seed), exported with its EMA weights as a pipeline at `out`; (the pipeline, its steps)."""
    L.seed_everything(cfg.train.seed, verbose=False)  # as `ldm train` seeds: the same initial UNet
    module = build_module(cfg)
    loop = PlainLoop(cfg, module, copy.deepcopy(module.unet), torch.device("cpu"))
    steps = train_for(loop, seconds)
    if loop.ema is not None:
        loop.ema.copy_to(loop.unet.parameters())
    pipeline = export_pipeline(out, vae=module.autoencoder.vae, text_encoder=module.conditioner.text_encoder,
                               tokenizer=module.conditioner.tokenizer, unet=loop.unet.eval(),
                               scheduler=inference_scheduler(module.noise_scheduler))
    return pipeline, steps
