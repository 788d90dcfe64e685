"""The autoencoder LightningModule: one module trains both kinds (`model.kind: kl | vq`).

Each batch takes two optimizer steps under manual optimization: the autoencoder on the losses of
`losses.py`, then the PatchGAN discriminator on its hinge loss (from `loss.disc_start` on). For VQ,
`codebook.py` counts code usage and revives dead codes.

Validation logs PSNR and SSIM (and codebook usage and perplexity for VQ) on the held-out split
and writes a grid of originals over reconstructions to RUN/autoencoder/reconstructions/.

The autoencoder is new (sized by `model:`) or loaded (`model.pretrained`); with
`train.decoder_only` its encoder side (encoder, quant_conv, a VQ codebook) is frozen and only the
decoder trains, so the latents it makes stay exactly what they were."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from diffusers import AutoencoderKL, VQModel
from lightning.pytorch.loggers import TensorBoardLogger

from ldm.components import autoencoder as vae_lib
from ldm.components.pretrained import local_folder, model_folder
from ldm.core.errors import LdmError
from ldm.core.images import image_grid, write_png
from ldm.core.layout import RECONSTRUCTION_GRIDS, VAE
from ldm.data.datamodule import require_divisible
from ldm.metrics.image_quality import psnr, ssim
from ldm.stages.autoencoder.codebook import CodebookCare, perplexity, usage
from ldm.stages.autoencoder.config import Config, ModelConfig
from ldm.stages.autoencoder.losses import AutoencoderLoss
from ldm.stages.optimizers import build_optimizer
from ldm.stages.time_budget import run_share
from ldm.stages.trainer import lr_scheduler

GRID_IMAGES = 8  # columns of the validation grid
GRID_UPSCALE = 4  # 32 px images are too small to judge at their own size


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


def load_autoencoder(model: ModelConfig, resolution: int) -> vae_lib.Autoencoder:
    """`model.pretrained` loaded for training, else a new autoencoder sized by `model:`."""
    if model.pretrained is None:
        return build_autoencoder(model, resolution)
    vae = vae_lib.load_vae(model_folder(local_folder(model.pretrained), VAE))
    require_divisible(resolution, vae_lib.downsampling_factor(vae), "the pretrained autoencoder's factor")
    return vae.requires_grad_(True).train()  # loaded frozen, in eval mode, for later stages' use


def encoder_side(vae: vae_lib.Autoencoder) -> list[torch.nn.Module]:
    """What makes the latents: frozen by `train.decoder_only` so that they stay the same."""
    parts = [vae.encoder, vae.quant_conv]  # quant_conv is None in a KL model without it
    if isinstance(vae, VQModel):
        parts.append(vae.quantize)  # the codebook: decoding reads the latents through it
    return [part for part in parts if part is not None]


class AutoencoderModule(L.LightningModule):
    def __init__(self, cfg: Config):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.vae = load_autoencoder(cfg.model, cfg.data.resolution)
        if cfg.train.decoder_only:
            for part in encoder_side(self.vae):
                part.requires_grad_(False)
        if cfg.train.gradient_checkpointing:
            if not self.vae._supports_gradient_checkpointing:
                raise LdmError(f"train.gradient_checkpointing: diffusers' {type(self.vae).__name__} does not "
                               "support it (AutoencoderKL does)")
            self.vae.enable_gradient_checkpointing()
        loss = cfg.loss
        terms = ("l1", "l2", "perceptual", "edge", "kl", "codebook", "commitment", "disc")
        weights = {k: getattr(loss, k) for k in terms}
        self.loss = AutoencoderLoss(weights, loss.lpips_weights, loss.disc_layers, loss.disc_channels)
        self.codebook = None
        if self.is_vq:
            self.codebook = CodebookCare(self.num_codes, self.vae.config.vq_embed_dim,
                                         cfg.codebook.recent_vectors)
        self.val_counts: torch.Tensor | None = None
        self.val_grid: list[torch.Tensor] = []

    @property
    def is_vq(self) -> bool:
        return isinstance(self.vae, VQModel)

    @property
    def num_codes(self) -> int:
        return self.vae.config.num_vq_embeddings

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
        trained = [p for p in self.vae.parameters() if p.requires_grad]  # decoder_only: the decoder's
        ae = build_optimizer(trained, train.optimizer, lr=train.lr, weight_decay=train.weight_decay,
                             betas=betas)
        if not self.has_gan:
            return [ae], [lr_scheduler(ae, train)]
        # No weight decay: before disc_start the discriminator steps on zero gradients (see
        # `discriminator_step`), which must leave it untouched. Plain Adam whatever train.optimizer
        # says: the discriminator is small, and Adam is what leaves it still on zero gradients.
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
            edges = run_share(sched_ae, self.step) >= self.cfg.loss.edge_start
            terms = self.loss.generator(pixels, reconstructions, regularizers, last_layer, edges)
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
        if not every or (self.step + 1) % every or self.cfg.train.decoder_only:  # a frozen codebook stays
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
            self.val_counts = torch.zeros(self.num_codes, dtype=torch.long, device=self.device)

    def validation_step(self, batch, batch_idx):
        pixels = batch["pixel_values"]
        reconstructions, indices = vae_lib.reconstruct(self.vae, pixels)
        if indices is not None:
            self.val_counts += torch.bincount(indices, minlength=self.num_codes)
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
        path = self.cfg.stage_dir / RECONSTRUCTION_GRIDS / f"step{self.step:08d}.png"
        grid = image_grid(self.val_grid, upscale=GRID_UPSCALE)
        write_png(path, grid, {"rows": "originals, reconstructions", "training_step": str(self.step)})
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstructions", np.asarray(grid), self.step, dataformats="HWC")


# ---- after training: latent scale and export ---------------------------------------------------
