"""The latent consistency loss (Luo et al. 2023, "Latent Consistency Models"), as diffusers'
`train_lcm_distill_sd_wds.py` computes it inline; no library class holds it.

One training step, for clean latents x0 and their caption embeddings c:

1. draw a point t_{n+k} of the solver's grid (every k-th training timestep) and noise x0 to it;
2. the student maps x_{t_{n+k}} to its consistency output f(x, t) = c_skip(t) x + c_out(t) x0_pred,
   the boundary condition that makes f(x, 0) = x (LCMScheduler's own scalings);
3. the teacher takes one guided DDIM step from t_{n+k} to t_n (the ODE solver over the k skipped
   timesteps), at a guidance scale w drawn per sample;
4. the target network (an EMA of the student) maps that point to its consistency output, without
   gradients;
5. the loss is the distance between 2 and 4 (pseudo-Huber or squared error): the student learns to
   give the same clean latent from any point of one ODE trajectory, in one step.

The whole-UNet student takes w as an input (its embedding is the UNet's `timestep_cond`); an
LCM-LoRA does not, and learns the guided trajectory averaged over w.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, LCMScheduler, UNet2DConditionModel

from ldm.stages.diffusion.predictions import predicted_noise, predicted_original, signal_and_noise_scales


class SkippingDDIMSolver:
    """DDIM (eta 0) between the timesteps of an evenly skipped grid of the training schedule: the grid
    is LCMScheduler's for `original_inference_steps = steps`, so the student samples where it learnt.

    diffusers' DDIMScheduler.step takes one timestep for the whole batch; here each sample has its own."""

    def __init__(self, scheduler: DDPMScheduler, steps: int):
        self.scheduler = scheduler
        self.skip = scheduler.config.num_train_timesteps // steps  # k
        self.timesteps = torch.arange(1, steps + 1) * self.skip - 1  # LCMScheduler's `lcm_origin_timesteps`

    def draw(self, n: int, device, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_{n+k}, t_n) for n samples: a grid point each and the one a solver step below it (0 below the first)."""
        index = torch.randint(0, len(self.timesteps), (n,), generator=generator, device=device)
        start = self.timesteps.to(device)[index]
        return start, (start - self.skip).clamp(min=0)

    def step(self, output: torch.Tensor, noisy: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """x_{t_n} from x_{t_{n+k}} and the network's (guided) output there."""
        original = predicted_original(self.scheduler, output, noisy, start)
        noise = predicted_noise(self.scheduler, output, noisy, start)
        signal, noise_scale = signal_and_noise_scales(self.scheduler, end, noisy)
        return signal * original + noise_scale * noise


def consistency_output(unet: UNet2DConditionModel, sampler: LCMScheduler, training: DDPMScheduler,
                       noisy: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor,
                       guidance: torch.Tensor | None) -> torch.Tensor:
    """f(x_t, t) = c_skip x_t + c_out x0_pred, with the boundary scalings of the sampler the export
    carries (LCMScheduler's `get_scalings_for_boundary_condition_discrete`), as its `step` denoises."""
    output = unet(noisy, timesteps, encoder_hidden_states=embeddings, timestep_cond=guidance).sample
    c_skip, c_out = sampler.get_scalings_for_boundary_condition_discrete(timesteps.float())
    original = predicted_original(training, output, noisy, timesteps)
    return c_skip.view(-1, 1, 1, 1) * noisy + c_out.view(-1, 1, 1, 1) * original


def guided_output(unet: UNet2DConditionModel, noisy: torch.Tensor, timesteps: torch.Tensor,
                  embeddings: torch.Tensor, empty: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The teacher's classifier-free guided output, one scale per sample, unconditional and
    conditional rows in one call (as the pipeline's GuidedDenoiser, which takes one scale a call)."""
    both = unet(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]),
                encoder_hidden_states=torch.cat([empty.expand_as(embeddings), embeddings])).sample
    uncond, cond = both.chunk(2)
    return uncond + scales.view(-1, 1, 1, 1) * (cond - uncond)


def distance(prediction: torch.Tensor, target: torch.Tensor, kind: str, huber_c: float) -> torch.Tensor:
    """Mean pseudo-Huber (sqrt(d^2 + c^2) - c) or squared error, in fp32."""
    difference = prediction.float() - target.float()
    if kind == "l2":
        return difference.pow(2).mean()
    return (torch.sqrt(difference.pow(2) + huber_c ** 2) - huber_c).mean()
