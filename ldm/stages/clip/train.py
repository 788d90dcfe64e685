"""Stage 1b, start to end: `ldm train configs/clip/clip_shapes.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

from pathlib import Path

from ldm.data.datamodule import ImageCaptionDataModule
from ldm.stages.clip.config import Config
from ldm.stages.clip.export import export
from ldm.stages.clip.module import ClipModule
from ldm.stages.trainer import TrainedStage, begin, fit


def train(cfg: Config) -> TrainedStage:
    """Learn the tokenizer, train the CLIP, export RUN/text_encoder, RUN/tokenizer and RUN/clip.

    The export's path is RUN itself: what the diffusion stage's `text_encoder:` key takes.
    """
    with begin(cfg):
        module = ClipModule(cfg)  # the tokenizer and the CLIP are made inside fit (configure_model)
        trainer = fit(cfg, module, ImageCaptionDataModule(cfg.data))
        if trainer.is_global_zero:
            export(module.clip, module.tokenizer, cfg.run_dir, cfg.data.resolution)
    return TrainedStage(Path(cfg.run_dir), module, trainer)
