"""Stage 1, start to end: `ldm train configs/autoencoder/kl_f4_shapes.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path

from ldm.core import layout
from ldm.data.datamodule import ImageCaptionDataModule
from ldm.stages.autoencoder.config import Config
from ldm.stages.autoencoder.export import export
from ldm.stages.autoencoder.module import AutoencoderModule
from ldm.stages.trainer import TrainedStage, begin, fit


def train(cfg: Config) -> TrainedStage:
    """Train the autoencoder, then measure its latent scale and export RUN/vae."""
    with begin(cfg):
        module = AutoencoderModule(cfg)
        datamodule = ImageCaptionDataModule(cfg.data)
        trainer = fit(cfg, module, datamodule)
        out = Path(cfg.run_dir) / layout.VAE
        if trainer.is_global_zero:
            export(module, datamodule, out)
    return TrainedStage(out, module, trainer)
