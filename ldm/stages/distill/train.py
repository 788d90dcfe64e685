"""Latent consistency distillation, start to end: `ldm train configs/distill/lcm_shapes.yaml`.

The teacher pipeline gives every part: its autoencoder and text encoder make (or find) the latent
cache, as for the diffusion stage; its UNet is the teacher, and the student starts as a copy of it
(with a guidance-scale input, or with LoRA adapters). The export is RUN/pipeline with LCMScheduler
(whole UNet: plain `StableDiffusionPipeline.from_pretrained` samples it in 1-8 steps), or RUN/lora,
an LCM-LoRA that `load_lora_weights` loads onto the teacher (`ldm generate TEACHER --lora RUN/lora
--sampler lcm --steps 4 --guidance 1`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core import layout
from ldm.core.errors import LdmError
from ldm.data.datamodule import require_divisible_sizes
from ldm.data.latent_datamodule import check_cacheable
from ldm.sampling.guidance import embeds_guidance
from ldm.sampling.pipeline_io import is_sdxl_folder
from ldm.sampling.samplers import consistency_scheduler
from ldm.stages.diffusion.export import export, export_lora
from ldm.stages.diffusion.parts import add_unet_lora, build_ema, enable_gradient_checkpointing, trained_parameters
from ldm.stages.diffusion.pretrained import base_model, load_unet, pipeline_noise_scheduler, pipeline_sources
from ldm.stages.diffusion.train import build_datamodule
from ldm.stages.distill.config import Config
from ldm.stages.distill.module import ConsistencyDistillation
from ldm.stages.trainer import TrainedStage, begin, fit


def with_guidance_input(teacher: UNet2DConditionModel, dim: int) -> UNet2DConditionModel:
    """The teacher's UNet with a guidance-scale input (diffusers' `time_cond_proj_dim`: a linear
    projection of the scale's embedding added to the timestep's). The projection starts at zero, so
    the student starts as exactly the teacher (diffusers' script leaves it random)."""
    student = UNet2DConditionModel.from_config({**teacher.config, "time_cond_proj_dim": dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("time_embedding.cond_proj") for name in missing), missing
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


def build_student(cfg: Config, teacher: UNet2DConditionModel) -> UNet2DConditionModel:
    if cfg.lora is None:
        return with_guidance_input(teacher, cfg.consistency.guidance_embedding_dim)
    student = copy.deepcopy(teacher)
    add_unet_lora(student, cfg.lora)
    return student


def build_module(cfg: Config) -> ConsistencyDistillation:
    sources = pipeline_sources(cfg.teacher)
    if is_sdxl_folder(sources.pipeline):  # its UNet takes pooled text and time ids the solver does not pass
        raise LdmError(f"teacher: {cfg.teacher} is an SDXL pipeline; latent consistency distillation takes "
                       "SD 1.x/2.x-style teachers (one text encoder) only, for now")
    autoencoder = FrozenAutoencoder.load(str(sources.vae))
    require_divisible_sizes(cfg.data, autoencoder.factor, "the autoencoder's downsampling factor")
    conditioner = TextConditioner.load(str(sources.text_encoder), dropout=0.0)
    teacher = load_unet(sources.unet)
    if embeds_guidance(teacher):
        raise LdmError(f"teacher: {cfg.teacher} is already distilled (its UNet takes the guidance scale as an "
                       "input); distil the pipeline it was distilled from")
    student = build_student(cfg, teacher)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(student, None)
    target = copy.deepcopy(student) if cfg.consistency.target_decay > 0 else None
    schedule = pipeline_noise_scheduler(sources.pipeline)
    sampler = consistency_scheduler(schedule, cfg.consistency.solver_steps, cfg.consistency.timestep_scaling)
    return ConsistencyDistillation(
        student, teacher, target, schedule, sampler, cfg.consistency, autoencoder, conditioner, cfg.train,
        ema=build_ema(cfg.ema, trained_parameters(student)), samples=cfg.samples,
        samples_dir=cfg.stage_dir / layout.SAMPLE_GRIDS,
        base=base_model(sources) if cfg.lora is not None else None)


def train(cfg: Config) -> TrainedStage:
    """Distil the teacher into the student, then export RUN/pipeline (or RUN/lora)."""
    with begin(cfg):
        if cfg.cache:
            check_cacheable(cfg.data)  # before loading any model
        module = build_module(cfg)
        trainer = fit(cfg, module, build_datamodule(cfg, module))
        lora = cfg.lora is not None
        out = Path(cfg.run_dir) / (layout.LORA if lora else layout.PIPELINE)
        if trainer.is_global_zero:
            (export_lora if lora else export)(module, out)
    return TrainedStage(out, module, trainer)
