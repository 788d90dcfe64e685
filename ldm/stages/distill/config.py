"""The distillation stage's config: the teacher pipeline, the consistency distillation's settings
(`consistency:`), and the parts it shares with the diffusion stage (`lora:`, `ema:`, `samples:`,
whose classes it reuses).

    stage: distill
    run_dir: runs/shapes
    teacher: runs/shapes/pipeline       # an ldm export or a Stable Diffusion 1.x/2.x folder
    lora: null                          # null: a whole student UNet; {rank: 64}: an LCM-LoRA
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, Fraction, Positive
from ldm.core.layout import LORA, PIPELINE
from ldm.stages.diffusion.config import EmaConfig, Guidance, LoraConfig, SamplesConfig
from ldm.stages.run_config import RunConfig


@dataclass(config=SECTION)
class ConsistencyConfig:
    """Latent consistency distillation (Luo et al. 2023), with the defaults of diffusers'
    `train_lcm_distill_sd_wds.py`."""

    # The teacher's ODE solver (DDIM) steps through this many evenly skipped timesteps of the training
    # schedule: each consistency step jumps num_train_timesteps / solver_steps of them (k = 20 of
    # 1000). The export's LCMScheduler samples on the same grid (its `original_inference_steps`).
    solver_steps: Annotated[int, Field(ge=2, le=1000)] = 50
    # The classifier-free guidance scale the teacher's solver uses is drawn per sample from
    # [guidance_min, guidance_max] (as `ldm generate --guidance` counts it: 1 is no guidance). The
    # whole-UNet student learns it as an input; an LCM-LoRA learns their average.
    guidance_min: Guidance = 2.0
    guidance_max: Guidance = 8.0
    # Width of the guidance scale's sinusoidal embedding, added to the timestep embedding through
    # the UNet's `time_cond_proj_dim` projection (whole-UNet students only).
    guidance_embedding_dim: Annotated[int, Field(ge=2, le=4096)] = 256
    # The boundary condition's time scale: c_skip, c_out of a timestep t are those of 10 t (LCM's
    # `timestep_scaling`); the export's LCMScheduler carries it.
    timestep_scaling: Positive = 10.0
    # The distance between the student's and the target's outputs: pseudo-Huber with constant
    # huber_c (less weight on outliers), or the squared error.
    loss: Literal["huber", "l2"] = "huber"
    huber_c: Positive = 0.001
    # The target network is an exponential moving average of the student at this decay (LCM's
    # "EMA target"); 0 makes it the student itself, held without gradients (the LCM-LoRA script's).
    target_decay: Fraction = 0.95

    def __post_init__(self):
        if self.guidance_max < self.guidance_min:
            raise ValueError(f"consistency.guidance_max ({self.guidance_max:g}) must be at least "
                             f"consistency.guidance_min ({self.guidance_min:g})")


def _same_place(a: Path, b: Path) -> bool:
    """Whether two paths name one place (False where either cannot be resolved: a later check names it)."""
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # an unknown ~user, a NUL byte
        return False


def _lcm_samples() -> SamplesConfig:
    return SamplesConfig(steps=4)


@dataclass(config=SECTION, kw_only=True)
class Config(RunConfig):
    STAGE: ClassVar[str] = "distill"

    stage: str = "distill"
    # The pipeline to distil: RUN/pipeline of the diffusion stage, or a Stable Diffusion 1.x/2.x
    # folder (a hub id when online). Its autoencoder and text encoder make the latent cache.
    teacher: str
    cache: bool = True  # false: encode images and captions at every step (streamed data)
    cache_shared_filesystem: bool | Literal["auto"] = "auto"  # as the diffusion stage's
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    # null: the student is the whole UNet, with the guidance scale as an input, exported as RUN/pipeline
    # (LCMScheduler); given: an LCM-LoRA on the teacher's UNet, exported as RUN/lora.
    lora: LoraConfig | None = None
    # An average of the student's weights for the export, as the diffusion stage's (the target
    # network is another, faster one: consistency.target_decay). Off by default: LCM exports the student.
    ema: EmaConfig = field(default_factory=lambda: EmaConfig(enabled=False))
    samples: SamplesConfig = field(default_factory=_lcm_samples)  # drawn with the LCM sampler

    def __post_init__(self):
        super().__post_init__()
        if self.samples.steps > self.consistency.solver_steps:
            raise ValueError(f"samples.steps ({self.samples.steps}) cannot exceed consistency.solver_steps "
                             f"({self.consistency.solver_steps}): the LCM sampler steps on the solver's grid")
        export = Path(self.run_dir) / (LORA if self.lora is not None else PIPELINE)
        if _same_place(export, Path(self.teacher)):
            raise ValueError(f"run_dir: the student's export {export} would replace the teacher {self.teacher}: "
                             "give the distillation its own run_dir")
        if self.lora is not None and self.lora.train_text_encoder:
            raise ValueError("lora.train_text_encoder: an LCM-LoRA adapts the UNet only (the teacher's text "
                             "encoder makes the cache and conditions both)")
