"""Samplers by name: diffusers schedulers built from the pipeline's own scheduler config.

`from_config` keeps what the model was trained with (the number of training timesteps, the beta
schedule, the prediction type) and changes only how the reverse process is stepped.

    pipe.scheduler = make_sampler("ddim", pipe.scheduler.config)
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers import SchedulerMixin

from ldm.core.errors import LdmError

DEFAULT_SAMPLER = "dpmsolver++"
# name -> (scheduler class, settings that make it that sampler)
SAMPLERS = {
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
}
# Samplers whose steps draw fresh noise: their images depend on the generator at every step.
STOCHASTIC = ("euler-ancestral", "ddpm")


def check_sampler(name: str) -> str:
    """The name, or an LdmError listing the valid ones."""
    if name not in SAMPLERS:
        raise LdmError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return name


def make_sampler(name: str, config) -> SchedulerMixin:
    """The sampler `name`, built from a scheduler config (e.g. `pipe.scheduler.config`)."""
    scheduler_class, settings = SAMPLERS[check_sampler(name)]
    return scheduler_class.from_config(config, **settings)


def inference_scheduler(training_scheduler) -> SchedulerMixin:
    """The sampler an exported pipeline carries and the validation grids draw with: DEFAULT_SAMPLER
    (DPM-Solver++, good in 20 steps) on the training schedule (same betas, same prediction type)."""
    return make_sampler(DEFAULT_SAMPLER, training_scheduler.config)
