"""Stage 1: a KL or VQ autoencoder (diffusers' AutoencoderKL / VQModel), trained the taming way.

    ldm train configs/autoencoder/kl_f4_shapes.yaml [section.key=value ...] [--resume]

One LightningModule trains both kinds (`model.kind: kl | vq`). Each batch takes two optimizer
steps under manual optimization: the autoencoder on the losses of `autoencoder_losses.py`, then
the PatchGAN discriminator on its hinge loss (from `loss.disc_start` on). For VQ, `codebook.py`
counts code usage and revives dead codes.

Validation logs PSNR and SSIM (and codebook usage and perplexity for VQ) on the held-out split
and writes a grid of originals over reconstructions to RUN/autoencoder/reconstructions/.

Export, on global rank 0 after training (RUN = run_dir):
    RUN/vae/    save_pretrained in safetensors, with `scaling_factor` (and `shift_factor`, for KL
                with `latent_scale.shift`) measured on the data: 1 / std of the latents, as latent
                diffusion's `scale_by_std` does, so the diffusion stage sees unit-variance latents.
It loads with AutoencoderKL / VQModel.from_pretrained and with `ldm.components.autoencoder.load_vae`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
import torch
from diffusers import AutoencoderKL, VQModel
from lightning.pytorch.loggers import TensorBoardLogger

from ldm.components import autoencoder as vae_lib
from ldm.core.atomic import atomic_folder
from ldm.core.config import require_divides
from ldm.core.errors import LdmError
from ldm.core.images import save_grid
from ldm.data.datamodule import ImageCaptionDataModule, require_divisible
from ldm.metrics.image_quality import psnr, ssim
from ldm.stages.autoencoder.codebook import CodebookCare, perplexity, usage
from ldm.stages.autoencoder.losses import AutoencoderLoss
from ldm.stages.trainer import RunConfig, fit, lr_scheduler

VAE = "vae"  # RUN/vae: the export the later stages read
GRID_IMAGES = 8  # columns of the validation grid
GRID_UPSCALE = 4  # 32 px images are too small to judge at their own size


@dataclass
class ModelConfig:
    kind: Literal["kl", "vq"] = "kl"
    # f: each latent cell covers f x f pixels. One encoder level per entry of `channels`, each but
    # the last halving the resolution, so len(channels) must be log2(f) + 1.
    downsampling_factor: int = 4
    channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    latent_channels: int = 4  # for VQ, also the codebook vectors' size
    norm_num_groups: int = 32  # must divide every entry of `channels`
    mid_block_attention: bool = False  # self-attention at the lowest resolution (slow on CPU)
    num_codes: int = 512  # VQ codebook size

    def __post_init__(self):
        f = self.downsampling_factor
        if f < 1 or f & (f - 1):
            raise ValueError(f"model.downsampling_factor must be a power of 2, got {f}")
        if len(self.channels) != int(math.log2(f)) + 1:
            raise ValueError(f"model.channels must have log2(f) + 1 = {int(math.log2(f)) + 1} entries for "
                             f"downsampling_factor={f}, got {len(self.channels)}: {self.channels}")
        require_divides(self.norm_num_groups, self.channels, "model.norm_num_groups", "model.channels")


@dataclass
class LossConfig:
    """Each term's weight; 0 turns it off."""

    l1: float = 1.0
    l2: float = 0.0
    # Perceptual loss: LPIPS (VGG16) when `lpips_weights` names a local file (see
    # scripts/make_lpips_weights.py), otherwise 1 - SSIM, which needs no pretrained weights.
    perceptual: float = 0.0
    lpips_weights: str | None = None
    # KL term per pixel (the KL summed over a latent, divided by the image's pixel count), so
    # 1e-6 weighs it against the reconstruction as latent-diffusion's kl_weight does.
    kl: float = 1e-6
    codebook: float = 1.0  # pulls the chosen codes towards the encoder outputs (VQ)
    commitment: float = 0.25  # pulls the encoder outputs towards their codes (VQ's beta)
    disc: float = 0.5  # GAN term, times taming's adaptive weight; 0: no discriminator at all
    disc_start: int = 50001  # step from which the discriminator trains and the GAN term counts
    disc_layers: int = 3
    disc_channels: int = 64
    disc_lr: float | None = None  # null: train.lr
    # Adam's betas for both optimizers; taming's GAN setting (0.5, 0.9) by default.
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])

    def __post_init__(self):
        weights = {k: getattr(self, k) for k in ("l1", "l2", "perceptual", "kl", "codebook", "commitment", "disc")}
        negative = [k for k, v in weights.items() if v < 0]
        if negative:
            raise ValueError(f"loss.{negative[0]} must not be negative")
        if self.l1 == self.l2 == self.perceptual == 0:
            raise ValueError("loss: at least one of l1, l2, perceptual must be positive")
        if len(self.betas) != 2:
            raise ValueError(f"loss.betas must be two numbers, got {self.betas}")
        if self.lpips_weights and not Path(self.lpips_weights).is_file():
            raise ValueError(f"loss.lpips_weights: file not found: {self.lpips_weights} (make it with "
                             "scripts/make_lpips_weights.py, or leave it unset for the SSIM loss)")


@dataclass
class CodebookConfig:
    """VQ only: how dead codes are revived (see ldm/stages/autoencoder/codebook.py)."""

    revive_every: int = 100  # steps between checks; 0 never revives
    recent_vectors: int = 4096  # encoder outputs kept to draw new codes from


@dataclass
class LatentScaleConfig:
    samples: int = 512  # training images encoded to measure the latents' std
    shift: bool = False  # KL only: also centre the latents (shift_factor = their mean)


@dataclass
class Config(RunConfig):
    STAGE: ClassVar[str] = "autoencoder"

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    latent_scale: LatentScaleConfig = field(default_factory=LatentScaleConfig)

    def __post_init__(self):
        super().__post_init__()
        require_divisible(self.data.resolution, self.model.downsampling_factor, "model.downsampling_factor")
        if self.latent_scale.shift and self.model.kind == "vq":
            raise ValueError("latent_scale.shift is for KL only: VQModel's config has no shift_factor")


def build_autoencoder(model: ModelConfig, resolution: int) -> vae_lib.Autoencoder:
    levels = len(model.channels)
    common = dict(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(model.channels), layers_per_block=model.layers_per_block,
        latent_channels=model.latent_channels, norm_num_groups=model.norm_num_groups,
        sample_size=resolution, mid_block_add_attention=model.mid_block_attention,
        scaling_factor=1.0,  # measured after training
    )
    if model.kind == "kl":
        return AutoencoderKL(**common)
    return VQModel(num_vq_embeddings=model.num_codes, vq_embed_dim=model.latent_channels, **common)


class AutoencoderModule(L.LightningModule):
    def __init__(self, cfg: Config):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.vae = build_autoencoder(cfg.model, cfg.data.resolution)
        loss = cfg.loss
        weights = {k: getattr(loss, k) for k in ("l1", "l2", "perceptual", "kl", "codebook", "commitment", "disc")}
        self.loss = AutoencoderLoss(weights, loss.lpips_weights, loss.disc_layers, loss.disc_channels)
        self.codebook = None
        if self.is_vq:
            self.codebook = CodebookCare(cfg.model.num_codes, cfg.model.latent_channels,
                                         cfg.codebook.recent_vectors)
        self.val_counts: torch.Tensor | None = None
        self.val_grid: list[torch.Tensor] = []

    @property
    def is_vq(self) -> bool:
        return self.cfg.model.kind == "vq"

    @property
    def has_gan(self) -> bool:
        return self.loss.discriminator is not None

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Lightning's global_step counts optimizer steps: with a GAN, the autoencoder's and the
        discriminator's make two per batch, and ldm.stages.trainer scales max_steps and checkpoint
        intervals to match."""
        return 2 if self.has_gan else 1

    @property
    def step(self) -> int:
        """Training batches done (global_step counts both optimizers' steps)."""
        return self.global_step // self.optimizer_steps_per_batch

    # ---- optimizers -----------------------------------------------------------------------
    def configure_optimizers(self):
        train, loss = self.cfg.train, self.cfg.loss
        betas = tuple(loss.betas)
        ae = torch.optim.AdamW(self.vae.parameters(), lr=train.lr, betas=betas, weight_decay=train.weight_decay)
        if not self.has_gan:
            return [ae], [lr_scheduler(ae, train)]
        # No weight decay: before disc_start the discriminator steps on zero gradients (see
        # `discriminator_step`), which must leave it untouched.
        disc = torch.optim.Adam(self.loss.discriminator.parameters(), lr=loss.disc_lr or train.lr, betas=betas)
        return [ae, disc], [lr_scheduler(ae, train), lr_scheduler(disc, train)]

    # ---- the forward pass used for training ---------------------------------------------------
    def reconstruct_for_training(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(reconstructions, regularizer losses), through the same diffusers calls as vae(x)."""
        if not self.is_vq:
            posterior = self.vae.encode(pixels).latent_dist
            z = posterior.sample()
            kl = posterior.kl().mean() / pixels[0].numel()
            return self.vae.decode(z).sample, {"kl": kl}
        # diffusers' quantizer returns one loss, codebook + 0.25 * commitment with its beta on the
        # wrong term (legacy=True, kept for old checkpoints), so the two terms are computed here
        # from the codes it chose, each with its own weight from the config.
        h = self.vae.encode(pixels).latents
        quantized, _, (_, _, indices) = self.vae.quantize(h)  # straight-through: h + (q - h).detach()
        codes = self.vae.quantize.embedding(indices.flatten()).view_as(h.permute(0, 2, 3, 1))
        h_cells = h.permute(0, 2, 3, 1).float()
        regularizers = {
            "codebook": torch.mean((codes.float() - h_cells.detach()) ** 2),
            "commitment": torch.mean((codes.float().detach() - h_cells) ** 2),
        }
        self.codebook.observe(h_cells.detach().reshape(-1, h.shape[1]), indices)
        return self.vae.decode(quantized, force_not_quantize=True).sample, regularizers

    # ---- training ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        pixels = batch["pixel_values"]
        optimizers, schedulers = self.optimizers(), self.lr_schedulers()
        opt_ae, sched_ae = (optimizers[0], schedulers[0]) if self.has_gan else (optimizers, schedulers)
        gan_on = self.has_gan and self.step >= self.cfg.loss.disc_start

        with self.toggled_optimizer(opt_ae):
            reconstructions, regularizers = self.reconstruct_for_training(pixels)
            last_layer = self.vae.decoder.conv_out.weight if gan_on else None
            terms = self.loss.generator(pixels, reconstructions, regularizers, last_layer)
            opt_ae.zero_grad()
            self.manual_backward(terms["loss"])
            self.clip(opt_ae)
            opt_ae.step()
        sched_ae.step()

        disc_terms = {}
        if self.has_gan:
            disc_terms = self.discriminator_step(optimizers[1], pixels, reconstructions, gan_on)
            schedulers[1].step()

        if self.is_vq:
            self.maybe_revive_codes()
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=len(pixels))
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=len(pixels))
        self.log_dict({f"train/disc_{k}": v for k, v in disc_terms.items()}, batch_size=len(pixels))

    def clip(self, optimizer) -> None:
        """train.gradient_clip, by norm (manual optimization clips here, not in the Trainer)."""
        if self.cfg.train.gradient_clip:
            self.clip_gradients(optimizer, self.cfg.train.gradient_clip, "norm")

    def discriminator_step(self, opt_disc, pixels, reconstructions, gan_on: bool) -> dict:
        opt_disc.zero_grad()
        if not gan_on:
            # The discriminator waits for disc_start, but its optimizer steps on zero gradients
            # (Adam moves nothing) so that every batch counts two optimizer steps in global_step.
            for p in self.loss.discriminator.parameters():
                p.grad = torch.zeros_like(p)
            opt_disc.step()
            return {}
        with self.toggled_optimizer(opt_disc):
            terms = self.loss.discriminator_loss(pixels, reconstructions)
            self.manual_backward(terms["loss"])
            self.clip(opt_disc)
            opt_disc.step()
        return terms

    def maybe_revive_codes(self) -> None:
        every = self.cfg.codebook.revive_every
        if not every or (self.step + 1) % every:
            return
        counts = self.trainer.strategy.reduce(self.codebook.counts.clone(), reduce_op="sum")
        self.log("train/codebook_usage", usage(counts))
        self.log("train/codebook_perplexity", perplexity(counts))
        dead = self.codebook.dead_codes(counts)
        if len(dead):
            # Every process must install the same vectors: rank 0 draws them for all.
            vectors = self.trainer.strategy.broadcast(self.codebook.replacements(len(dead)), src=0)
            with torch.no_grad():
                self.vae.quantize.embedding.weight[dead] = vectors.to(self.vae.quantize.embedding.weight)
        self.log("train/codebook_revived", float(len(dead)))
        self.codebook.reset_counts()

    # ---- validation --------------------------------------------------------------------------
    def on_validation_epoch_start(self):
        self.val_grid = []
        if self.is_vq:
            self.val_counts = torch.zeros(self.cfg.model.num_codes, dtype=torch.long, device=self.device)

    def validation_step(self, batch, batch_idx):
        pixels = batch["pixel_values"]
        if self.is_vq:  # the export's own path: vae(x) = decode(encode(x)), quantizing in decode
            h = self.vae.encode(pixels).latents
            _, _, (_, _, indices) = self.vae.quantize(h)
            self.val_counts += torch.bincount(indices.flatten(), minlength=self.cfg.model.num_codes)
            reconstructions = self.vae.decode(h).sample
        else:
            reconstructions = self.vae(pixels).sample  # the posterior's mode
        n = len(pixels)
        self.log("val/psnr", psnr(reconstructions, pixels).mean(), batch_size=n, sync_dist=True, prog_bar=True)
        self.log("val/ssim", ssim(reconstructions, pixels).mean(), batch_size=n, sync_dist=True)
        self.log("val/l1_loss", (reconstructions.float() - pixels).abs().mean(), batch_size=n, sync_dist=True)
        if batch_idx == 0:
            self.val_grid = [pixels[:GRID_IMAGES].cpu(), reconstructions[:GRID_IMAGES].float().cpu()]

    def on_validation_epoch_end(self):
        if self.is_vq:
            counts = self.trainer.strategy.reduce(self.val_counts, reduce_op="sum")
            self.log("val/codebook_usage", usage(counts))
            self.log("val/codebook_perplexity", perplexity(counts))
        if self.trainer.is_global_zero and self.val_grid and not self.trainer.sanity_checking:
            self.write_grid()

    def write_grid(self) -> None:
        """Originals over reconstructions, as a PNG and in TensorBoard."""
        path = self.cfg.stage_dir / "reconstructions" / f"step{self.step:08d}.png"
        grid = save_grid(self.val_grid, path, upscale=GRID_UPSCALE)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstructions", grid, self.step, dataformats="HWC")


# ---- after training: latent scale and export ---------------------------------------------------
@torch.no_grad()
def measure_latent_scale(vae: vae_lib.Autoencoder, loader, samples: int, shift: bool) -> tuple[float, float]:
    """(scaling_factor, shift_factor) so that (z - shift) * scale has unit std over the data."""
    latents, seen = [], 0
    for batch in loader:
        pixels = batch["pixel_values"][: samples - seen].to(vae.device, vae.dtype)
        latents.append(vae_lib.encode_unscaled(vae, pixels).float().cpu())
        seen += len(pixels)
        if seen >= samples:
            break
    if not latents:
        raise LdmError("no training images to measure the latent scale on")
    z = torch.cat(latents)
    mean = z.mean().item() if shift else 0.0
    return 1.0 / (z - mean).std().item(), mean


def export_vae(vae: vae_lib.Autoencoder, out_dir: str | Path, scaling_factor: float,
               shift_factor: float | None) -> Path:
    """Write RUN/vae with save_pretrained (safetensors), whole or not at all."""
    vae.register_to_config(scaling_factor=scaling_factor)
    if isinstance(vae, AutoencoderKL):
        vae.register_to_config(shift_factor=shift_factor)
    with atomic_folder(out_dir) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    return Path(out_dir)


def finish(module: AutoencoderModule, datamodule: ImageCaptionDataModule) -> Path:
    """Measure the latent scale on training images and export RUN/vae."""
    cfg = module.cfg
    vae = module.vae.eval()
    scale, mean = measure_latent_scale(vae, datamodule.train_dataloader(), cfg.latent_scale.samples,
                                       cfg.latent_scale.shift)
    out = export_vae(vae, Path(cfg.run_dir) / VAE, scale, mean if cfg.latent_scale.shift else None)
    print(f"autoencoder: scaling_factor={scale:.4f}" + (f" shift_factor={mean:.4f}" if cfg.latent_scale.shift else "")
          + f", exported to {out}")
    return out


def train(cfg: Config) -> Path | None:
    module = AutoencoderModule(cfg)
    datamodule = ImageCaptionDataModule(cfg.data)
    trainer = fit(cfg, module, datamodule)
    if not trainer.is_global_zero:
        return None
    return finish(module, datamodule)
