"""Samplers by name: diffusers schedulers built from the pipeline's own scheduler config.

`from_config` keeps what the model was trained with (the number of training timesteps, the beta
schedule, the prediction type) and changes only how the reverse process is stepped.

    pipe.scheduler = make_sampler("ddim", pipe.scheduler.config)

A zero-terminal-SNR schedule (`rescale_betas_zero_snr` in the config) is followed by every sampler
whose diffusers class has that flag; one without it (Heun's) would sample another schedule than
the model learnt, so it is refused. The guidance rescale the model should be sampled with is kept
in the same config under GUIDANCE_RESCALE (`guidance_rescale_of`).

A pipeline distilled by latent consistency (`ldm train configs/distill/...`) carries `LCMScheduler`:
its default sampler is then "lcm" (`default_sampler`), and "tcd" (`TCDScheduler`, which at eta 0
re-noises each step's clean estimate with the noise it implies instead of fresh noise) is its
deterministic one, for walks. "lcm" also samples the teacher with an LCM-LoRA loaded (`--lora`).
"""

from __future__ import annotations

import inspect

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers import SchedulerMixin

from ldm.core.errors import LdmError

# Images are drawn with the deterministic DPM-Solver++ (2M, good in 20 steps). Its stochastic form
# (DPM-Solver++ 2M SDE, "dpmsolver++-sde", A1111's "DPM++ 2M SDE"), which adds fresh noise at each
# step and so samples the model's own distribution more closely, was measured against it on four
# quickstart pipelines (docs/benchmarks.md, session 14): held-out fidelity +7.0, +7.0 and +2.3
# points on three, and -7.8 on the fourth (colours drawn wrong on black, which the deterministic
# path avoided): not a default that holds on every model. A walk needs a deterministic sampler in
# any case: its frames must match their neighbours and a resume.
DEFAULT_SAMPLER = "dpmsolver++"
DETERMINISTIC_SAMPLER = "dpmsolver++"  # what a walk takes when none is named
# name -> (scheduler class, settings that make it that sampler)
SAMPLERS = {
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "lcm": (LCMScheduler, {}),
    "tcd": (TCDScheduler, {}),
}
# Samplers whose steps draw fresh noise: their images depend on the generator at every step.
STOCHASTIC = ("dpmsolver++-sde", "euler-ancestral", "ddpm", "lcm")
# The samplers of a latent consistency model: its own (multistep consistency sampling) and the
# deterministic one a walk takes.
CONSISTENCY_SAMPLER, CONSISTENCY_WALK_SAMPLER = "lcm", "tcd"
# diffusers' pipelines take guidance_rescale as a call argument, and no scheduler has it; kept in the
# scheduler config as a private key (diffusers keeps "_" keys through from_config and save_pretrained
# without its "not expected and will be ignored" warning), so the sampler of an export carries it.
GUIDANCE_RESCALE = "_guidance_rescale"
ZERO_SNR = "rescale_betas_zero_snr"


def check_sampler(name: str) -> str:
    """The name, or an LdmError listing the valid ones."""
    if name not in SAMPLERS:
        raise LdmError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return name


def check_sampler_follows(name: str, config) -> str:
    """The name, or an LdmError when its class cannot follow the config's zero-terminal-SNR schedule."""
    scheduler_class, _ = SAMPLERS[check_sampler(name)]
    if config.get(ZERO_SNR) and ZERO_SNR not in inspect.signature(scheduler_class.__init__).parameters:
        followers = [other for other, (cls, _) in SAMPLERS.items()
                     if ZERO_SNR in inspect.signature(cls.__init__).parameters]
        raise LdmError(f"sampler {name!r} cannot follow this model's zero-terminal-SNR schedule "
                       f"({ZERO_SNR}); choose one of: {', '.join(followers)}")
    return name


def is_consistency_model(config) -> bool:
    """Whether a pipeline's scheduler config is a latent consistency model's (its export carries LCMScheduler)."""
    return config.get("_class_name") == LCMScheduler.__name__


def default_sampler(config, deterministic: bool = False) -> str:
    """The sampler a pipeline is sampled with when none is named: its own for a distilled pipeline
    ("tcd" where every step must be deterministic, as a walk's), DEFAULT_SAMPLER for any other
    (DETERMINISTIC_SAMPLER for a walk)."""
    if is_consistency_model(config):
        return CONSISTENCY_WALK_SAMPLER if deterministic else CONSISTENCY_SAMPLER
    return DETERMINISTIC_SAMPLER if deterministic else DEFAULT_SAMPLER


def make_sampler(name: str, config) -> SchedulerMixin:
    """The sampler `name`, built from a scheduler config (e.g. `pipe.scheduler.config`)."""
    scheduler_class, settings = SAMPLERS[check_sampler_follows(name, config)]
    return scheduler_class.from_config(config, **settings)


def guidance_rescale_of(config) -> float:
    """The guidance rescale a scheduler config says its model samples with (0: plain guidance)."""
    return float(config.get(GUIDANCE_RESCALE, 0.0))


def inference_scheduler(training_scheduler) -> SchedulerMixin:
    """The sampler an exported pipeline carries and the validation grids draw with: DEFAULT_SAMPLER
    (DPM-Solver++, good in 20 steps) on the training schedule (same betas, same prediction type),
    so that plain diffusers samples an export as `ldm generate` does."""
    return make_sampler(DEFAULT_SAMPLER, training_scheduler.config)


def consistency_scheduler(training_scheduler, original_steps: int, timestep_scaling: float) -> LCMScheduler:
    """The sampler a distilled pipeline carries: LCMScheduler on its teacher's training schedule,
    stepping on the grid of `original_steps` timesteps that the student learnt (its solver's), with
    the student's boundary-condition time scale. The settings of another sampler that a pipeline's
    schedule carries (a DPM-Solver++ export's `solver_order`, ...) are left out, not warned about."""
    accepted = inspect.signature(LCMScheduler.__init__).parameters
    config = {key: value for key, value in training_scheduler.config.items()
              if key in accepted or key.startswith("_")}
    return LCMScheduler.from_config(config, original_inference_steps=original_steps,
                                    timestep_scaling=timestep_scaling)
