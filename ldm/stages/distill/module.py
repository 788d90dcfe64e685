"""The distillation engine: the diffusion stage's engine (`LatentDiffusion`: data from the latent
cache, optimizer, export EMA, checkpoints, validation grids) with a teacher, a target network and
the latent consistency loss instead of the denoising loss.

    student   UNet2DConditionModel that trains: the teacher's UNet with a guidance-scale input
              (`time_cond_proj_dim`), or the teacher's UNet with LoRA adapters      (`lora:`)
    teacher   the teacher pipeline's UNet, frozen: the guided DDIM solver step
    target    an EMA of the student (`consistency.target_decay`), frozen: the consistency target;
              None at decay 0, where the student itself (without gradients) is the target
    sampler   the LCMScheduler the export carries: the boundary scalings, and the validation grids

The teacher and the target are child modules, so they follow the module to its device. Frozen
weights are not written into checkpoints (the diffusion engine puts them back from the models it
holds); the target's are, as it changes while training, so a resumed run goes on exactly.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, LCMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.sampling.guidance import embeds_guidance, guidance_embedding
from ldm.sampling.lora import BaseModel
from ldm.stages.diffusion.config import SamplesConfig
from ldm.stages.diffusion.module import LatentDiffusion
from ldm.stages.distill.config import ConsistencyConfig
from ldm.stages.distill.consistency import SkippingDDIMSolver, consistency_output, distance, guided_output
from ldm.stages.run_config import TrainConfig

TARGET = "target"  # the target network's name as a child module


class ConsistencyDistillation(LatentDiffusion):
    def __init__(self, student: UNet2DConditionModel, teacher: UNet2DConditionModel,
                 target: UNet2DConditionModel | None, noise_scheduler: DDPMScheduler, sampler: LCMScheduler,
                 consistency: ConsistencyConfig, autoencoder: FrozenAutoencoder, conditioner: TextConditioner,
                 train_cfg: TrainConfig, ema: EMAModel | None = None, samples: SamplesConfig | None = None,
                 samples_dir=None, base: BaseModel | None = None):
        super().__init__(student, noise_scheduler, None, autoencoder, conditioner, train_cfg, ema=ema,
                         samples=samples, samples_dir=samples_dir, base=base)
        # Frozen, in training mode as the student (a UNet has no dropout or batch statistics by
        # default, so the mode changes nothing; Lightning warns of children it finds in eval mode).
        self.teacher = teacher.requires_grad_(False).train()
        self.target = target.requires_grad_(False).train() if target is not None else None
        self.sampler, self.consistency = sampler, consistency
        self.solver = SkippingDDIMSolver(noise_scheduler, consistency.solver_steps)
        trained = [name for name, parameter in student.named_parameters() if parameter.requires_grad]
        self.tracked_names = {f"{TARGET}.{name}" for name in trained}  # the target's weights that move
        self.target_parameters = ([dict(target.named_parameters())[name] for name in trained]
                                  if target is not None else [])

    # ---- the loss ---------------------------------------------------------------------------------

    def guidance_input(self, scales: torch.Tensor) -> torch.Tensor | None:
        """The scales as the student's input (whole UNet), or None (an LCM-LoRA takes none)."""
        if not embeds_guidance(self.unet):
            return None
        return guidance_embedding(scales, self.unet.config.time_cond_proj_dim).to(self.device, self.dtype)

    def consistency_loss(self, latents: torch.Tensor, embeddings: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        cfg, n = self.consistency, latents.shape[0]
        start, end = self.solver.draw(n, latents.device, generator)
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, start)
        unit = torch.rand((n,), generator=generator, device=latents.device)
        scales = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * unit
        guidance = self.guidance_input(scales)
        online = consistency_output(self.unet, self.sampler, self.noise_scheduler, noisy, start, embeddings, guidance)
        with torch.no_grad():
            empty = self.conditioner.empty_embedding().to(embeddings)
            teacher_output = guided_output(self.teacher, noisy, start, embeddings, empty, scales)
            previous = self.solver.step(teacher_output, noisy, start, end)
            target_net = self.target if self.target is not None else self.unet
            target = consistency_output(target_net, self.sampler, self.noise_scheduler, previous.to(latents.dtype),
                                        end, embeddings, guidance)
        return distance(online, target, cfg.loss, cfg.huber_c)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        latents, embeddings = self.latents_and_embeddings(batch)  # no caption dropout: the teacher guides
        loss = self.consistency_loss(latents, embeddings)
        self.log("train/loss", loss, prog_bar=True, batch_size=latents.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # The same draws at every validation, so the curve shows the model, not the dice.
        generator = torch.Generator(self.device).manual_seed(batch_idx)
        latents, embeddings = self.latents_and_embeddings(batch)
        self.log("val/loss", self.consistency_loss(latents, embeddings, generator), sync_dist=True,
                 batch_size=latents.shape[0])

    # ---- the target network follows the student -----------------------------------------------------

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)  # the student's step, and the export EMA's
        if self.target is None:
            return
        # An EMA kept in a whole UNet, since the target must run forward (diffusers' EMAModel keeps
        # its average as loose tensors): target <- decay * target + (1 - decay) * student.
        with torch.no_grad():
            for target, online in zip(self.target_parameters, self.trained_parameters()):
                target.lerp_(online, 1 - self.consistency.target_decay)

    def frozen_names(self) -> set[str]:
        """Frozen, and so left out of checkpoints: everything that does not train, except the
        target's weights that follow the student."""
        return super().frozen_names() - self.tracked_names

    # ---- sampling: the LCM sampler --------------------------------------------------------------------

    def sampling_scheduler(self):
        return self.sampler
